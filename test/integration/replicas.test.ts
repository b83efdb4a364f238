// Three bus replicas on one Redis: keys, leases, fencing and the rate cap hold across them, and nothing is left
// without a TTL. Uses the machine's Redis on 127.0.0.1:6379 with a unique prefix.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { type BusProcess, LAB_SERVER, startBus, tempDir } from '../helpers/bus-process.js';
import { readLabLog } from '../helpers/lab.js';
import { AgentClient, busErrorStrict, post } from '../helpers/mcp-http.js';
import { waitFor } from '../helpers/wait.js';

const dir = tempDir();
const labLog = join(dir, 'lab.log');
const prefix = `tb-test-${process.pid}-${Date.now()}:`;
const REDIS_URL = 'redis://127.0.0.1:6379/0';

const yaml = `
store: { kind: redis, url: "${REDIS_URL}", prefix: "${prefix}" }
idempotency: { claimTtlMs: 1500, joinTimeoutMs: 3000 }
leases: { ttlMs: 1500, lockDelayMs: 200 }
logging: { level: warn }
agents: [{ id: a, token: "replica-token-1" }, { id: b, token: "replica-token-2" }]
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    env: { LAB_LOG: ${labLog}, LAB_STATE: ${join(dir, 'counters.json')} }
    maxConcurrency: 32
    leaseWaitMs: 20000
    timeoutMs: 30000
    tools:
      counter_incr: { kind: write, idempotency: optional, lease: ["c:{/entity}"] }
      counter_get: { kind: read }
      slow: { kind: write, lease: ["s:{/tag}"] }
      get_meta: { kind: write, idempotency: off, lease: ["meta"] }
      echo: { kind: read }
`;

const rateYaml = yaml.replace('maxConcurrency: 32', 'maxConcurrency: 32\n    rateLimit: { perSecond: 20, burst: 5 }');

const labEntries = () => readLabLog(labLog);

let redisUp = true;
let replicas: BusProcess[] = [];

describe('three replicas on one Redis', () => {
  before(async () => {
    const probe = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: 1000 });
    try {
      await probe.connect();
      await probe.ping();
    } catch {
      redisUp = false;
    } finally {
      probe.disconnect();
    }
    if (!redisUp) {
      if (process.env.CI) throw new Error('Redis on 127.0.0.1:6379 is not reachable, and CI requires it');
      console.warn('\n*** SKIPPING replica tests: no Redis on 127.0.0.1:6379 ***\n');
      return;
    }
    replicas = await Promise.all([0, 1, 2].map(() => startBus(yaml, { cwd: dir })));
  });
  after(async () => {
    await Promise.all(replicas.map((r) => r.stop()));
    if (!redisUp) return;
    const redis = new Redis(REDIS_URL);
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });

  it('one upstream write for one key sent 30 times to each replica at once', async (t) => {
    if (!redisUp) return t.skip('no redis');
    const args = { entity: 'once', idempotency_key: 'replica-key-0001' };
    const calls = replicas.flatMap((r) =>
      Array.from({ length: 30 }, () => new AgentClient(r.url, 'replica-token-1').call('lab__counter_incr', args)),
    );
    const results = await Promise.all(calls);
    for (const r of results) assert.notEqual(r.isError, true, JSON.stringify(r));
    assert.equal(new Set(results.map((r) => JSON.stringify(r.structuredContent))).size, 1);
    const writes = labEntries().filter(
      (e) => e.tool === 'counter_incr' && e.phase === 'start' && e.args?.entity === 'once',
    );
    assert.equal(writes.length, 1);
  });

  it('a read-modify-write entity incremented through all replicas ends exact; fencing tokens are monotonic', async (t) => {
    if (!redisUp) return t.skip('no redis');
    await Promise.all(
      replicas.flatMap((r) =>
        Array.from({ length: 3 }, async () => {
          const a = new AgentClient(r.url, 'replica-token-1');
          for (let i = 0; i < 10; i++) {
            const res = await a.call('lab__counter_incr', { entity: 'shared', delay_ms: 3 });
            assert.notEqual(res.isError, true, JSON.stringify(res));
          }
        }),
      ),
    );
    const got = await new AgentClient(replicas[0]!.url, 'replica-token-1').call('lab__counter_get', {
      entity: 'shared',
    });
    assert.equal((got.structuredContent as { value: number }).value, 90);
    const tokens: number[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await new AgentClient(replicas[i % 3]!.url, 'replica-token-1').call('lab__get_meta', {});
      const m = /"toolbus\/fencing-token":(\d+)/.exec(JSON.stringify(r));
      assert.ok(m, JSON.stringify(r));
      tokens.push(Number(m[1]));
    }
    for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i]! > tokens[i - 1]!, tokens.join(','));
  });

  it('stateless requests work on any replica; a stateful session belongs to its replica', async (t) => {
    if (!redisUp) return t.skip('no redis');
    for (const r of replicas) {
      const res = await new AgentClient(r.url, 'replica-token-2').call('lab__echo', { text: 'any replica' });
      assert.equal(res.content?.[0]?.text, 'any replica');
    }
    const a = new AgentClient(replicas[0]!.url, 'replica-token-2');
    await a.initialize();
    const moved = await post(
      replicas[1]!.url,
      'replica-token-2',
      { jsonrpc: '2.0', id: 1, method: 'tools/list' },
      a.headers(),
    );
    assert.equal(
      moved.status,
      404,
      'another replica does not know the session: the client re-initializes (see docs/deploy.md)',
    );
  });

  it('a replica killed while holding a lease blocks the entity only until the lease TTL; its key becomes unknown', async (t) => {
    if (!redisUp) return t.skip('no redis');
    const victim = replicas[2]!;
    void new AgentClient(victim.url, 'replica-token-1')
      .call('lab__slow', { ms: 20000, tag: 'dead', idempotency_key: 'dead-key-0001' })
      .catch(() => {});
    await waitFor(
      () => labEntries().some((e) => e.tool === 'slow' && e.phase === 'start' && e.args?.tag === 'dead'),
      5000,
      'slow write started',
    );
    await victim.kill('SIGKILL');
    const killedAt = Date.now();
    const b = new AgentClient(replicas[0]!.url, 'replica-token-1');
    const next = await b.call('lab__slow', { ms: 10, tag: 'dead', idempotency_key: 'dead-key-0002' });
    assert.notEqual(next.isError, true, JSON.stringify(next));
    const waited = Date.now() - killedAt;
    assert.ok(waited < 6000, `entity blocked for ${waited} ms`);
    await waitFor(
      async () => {
        const r = await b.call('lab__slow', { ms: 20000, tag: 'dead', idempotency_key: 'dead-key-0001' });
        return r.isError === true && busErrorStrict(r).category === 'outcome_unknown';
      },
      8000,
      'dead owner key becomes unknown',
    );
    replicas[2] = await startBus(yaml, { cwd: dir });
  });

  it('every key under the prefix carries a TTL', async (t) => {
    if (!redisUp) return t.skip('no redis');
    const redis = new Redis(REDIS_URL);
    try {
      const keys = await redis.keys(`${prefix}*`);
      assert.ok(keys.length > 0);
      const ttls = await Promise.all(keys.map((k) => redis.pttl(k)));
      const forever = keys.filter((_, i) => ttls[i] === -1);
      assert.deepEqual(forever, [], 'keys without TTL');
    } finally {
      redis.disconnect();
    }
  });
});

describe('one rate cap shared by three replicas', () => {
  let rate: BusProcess[] = [];
  const ratePrefix = `${prefix}rate:`;
  before(async () => {
    if (!redisUp) return;
    rate = await Promise.all([0, 1, 2].map(() => startBus(rateYaml.replace(prefix, ratePrefix), { cwd: dir })));
  });
  after(async () => {
    await Promise.all(rate.map((r) => r.stop()));
  });

  it('the upstreams together see at most burst + perSecond*T in any window, and ≥ 95% while saturated', async (t) => {
    if (!redisUp) return t.skip('no redis');
    const from = Date.now();
    const stopAt = from + 3000;
    await Promise.all(
      rate.flatMap((r) =>
        Array.from({ length: 4 }, async (_, i) => {
          const a = new AgentClient(r.url, 'replica-token-1');
          while (Date.now() < stopAt) await a.call('lab__echo', { text: `r${i}` });
        }),
      ),
    );
    const times = labEntries()
      .filter((e) => e.tool === 'echo' && e.phase === 'start' && e.t >= from)
      .map((e) => e.t)
      .sort((x, y) => x - y);
    // Any window of length T holds at most burst + perSecond*T starts (small slack for clock reads across processes).
    for (let i = 0; i < times.length; i++) {
      for (let j = i; j < times.length; j++) {
        const T = (times[j]! - times[i]!) / 1000;
        // Widened by 60 ms for the stdio hop, which may bunch calls admitted on time (see rate.test.ts).
        assert.ok(j - i + 1 <= 5 + 20 * (T + 0.06) + 1, `window ${T}s had ${j - i + 1} calls`);
      }
    }
    const span = (times.at(-1)! - times[0]!) / 1000;
    assert.ok(times.length >= 0.95 * 20 * span, `${times.length} calls in ${span}s`);
  });
});
