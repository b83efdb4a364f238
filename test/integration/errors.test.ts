// The error table, path by path, for the categories not already triggered by the core and safety suites
// (test/unit/error-table.test.ts checks that every category is triggered somewhere).
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { type BusProcess, LAB_SERVER, startBus, tempDir } from '../helpers/bus-process.js';
import { AgentClient, busErrorStrict } from '../helpers/mcp-http.js';
import { freePort } from '../helpers/net.js';
import { waitFor } from '../helpers/wait.js';

const dir = tempDir();
const yaml = `
store: { kind: memory }
agents: [{ id: a, token: "errors-token-1" }]
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    rateLimit: { perSecond: 1, burst: 1 }
    queueWaitMs: 100
    tools:
      echo: { kind: read }
      hang: { kind: read, timeoutMs: 300 }
      fail: { kind: write, idempotency: optional, lease: [] }
`;

describe('error table paths', () => {
  let bus: BusProcess;
  before(async () => {
    bus = await startBus(yaml, { cwd: dir });
  });
  after(async () => {
    await bus?.stop();
  });

  it('rate_limited: the budget is spent and the queue wait would pass queueWaitMs', async () => {
    const a = new AgentClient(bus.url, 'errors-token-1');
    const results = await Promise.all([
      a.call('lab__echo', { text: '1' }),
      a.call('lab__echo', { text: '2' }),
      a.call('lab__echo', { text: '3' }),
    ]);
    const limited = results.filter((r) => r.isError);
    assert.ok(limited.length >= 1);
    const err = busErrorStrict(limited[0]!);
    assert.equal(err.category, 'rate_limited');
    assert.equal(err.retryable, true);
    assert.ok((err.retryAfterMs ?? 0) > 0);
  });

  it('timeout: a read that runs past its deadline is retryable', async () => {
    await new Promise((r) => setTimeout(r, 1100)); // let the bucket refill
    const a = new AgentClient(bus.url, 'errors-token-1');
    const err = busErrorStrict(await a.call('lab__hang', {}));
    assert.equal(err.category, 'timeout');
    assert.equal(err.retryable, true);
  });

  it('upstream_error: the tool reports an error and its own result is passed through', async () => {
    await new Promise((r) => setTimeout(r, 1100));
    const a = new AgentClient(bus.url, 'errors-token-1');
    const r = await a.call('lab__fail', { message: 'disk full on the ticket server' });
    assert.equal(r.isError, true);
    assert.match(JSON.stringify(r.content), /disk full on the ticket server/);
    const meta = r._meta?.['toolbus/error'] as { category: string; retryable: boolean };
    assert.equal(meta.category, 'upstream_error');
    assert.equal(meta.retryable, false);
  });
});

describe('store_unavailable (Redis store, Redis killed and restarted empty)', () => {
  let redis: ChildProcess;
  let bus: BusProcess;
  let strict: BusProcess;
  let port: number;
  const startRedis = () =>
    spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
      stdio: 'ignore',
    });
  const redisUp = () =>
    new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => {
        s.end();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
  const config = (extra: string) => `
store: { kind: redis, url: "redis://127.0.0.1:${port}/0", prefix: "tb-err:" }
logging: { level: warn }
${extra}
agents: [{ id: a, token: "errors-token-1" }]
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    env: { LAB_STATE: ${dir}/redis-counters.json }
    tools:
      echo: { kind: read }
      counter_incr: { kind: write, lease: ["c:{/entity}"] }
      counter_get: { kind: read }
`;
  before(async () => {
    port = await freePort();
    redis = startRedis();
    await waitFor(redisUp, 5000, 'redis up');
    [bus, strict] = await Promise.all([
      startBus(config(''), { cwd: dir }),
      startBus(config('readsWhenStoreDown: deny'), { cwd: dir }),
    ]);
  });
  after(async () => {
    await Promise.all([bus?.stop(), strict?.stop()]);
    redis?.kill('SIGKILL');
  });

  it('refuses writes with store_unavailable while reads keep flowing, and recovers by itself when Redis returns', async () => {
    const a = new AgentClient(bus.url, 'errors-token-1');
    const value = async () =>
      ((await a.call('lab__counter_get', { entity: 'x' })).structuredContent as { value: number }).value;
    assert.notEqual(
      (await a.call('lab__counter_incr', { entity: 'x', idempotency_key: 'store-key-0001' })).isError,
      true,
    );
    redis.kill('SIGKILL');
    await waitFor(async () => !(await redisUp()), 3000, 'redis down');
    const err = busErrorStrict(await a.call('lab__counter_incr', { entity: 'x', idempotency_key: 'store-key-0002' }));
    assert.equal(err.category, 'store_unavailable');
    assert.equal(err.retryable, true);
    const read = await a.call('lab__echo', { text: 'still here' });
    assert.notEqual(read.isError, true, JSON.stringify(read));
    // With readsWhenStoreDown: deny, reads stop too (once the bus has noticed).
    const s = new AgentClient(strict.url, 'errors-token-1');
    await waitFor(
      async () => (await s.call('lab__echo', { text: 'x' })).isError === true,
      3000,
      'strict bus refuses reads',
    );
    assert.equal(busErrorStrict(await s.call('lab__echo', { text: 'x' })).category, 'store_unavailable');
    assert.equal(await value(), 1, 'the refused write did not run');

    redis = startRedis();
    await waitFor(
      async () => !(await a.call('lab__counter_incr', { entity: 'x', idempotency_key: 'store-key-0002' })).isError,
      15_000,
      'recovery',
    );
    assert.equal(await value(), 2);
    // No duplicate write and no stuck lease afterwards.
    const again = await a.call('lab__counter_incr', { entity: 'x', idempotency_key: 'store-key-0002' });
    assert.equal(again._meta?.['toolbus/replayed'], true);
    assert.notEqual(
      (await a.call('lab__counter_incr', { entity: 'x', idempotency_key: 'store-key-0003' })).isError,
      true,
    );
    assert.equal(await value(), 3);
    // Documented (docs/deploy.md): Redis restarted empty forgot store-key-0001, so its retry runs again.
    const forgotten = await a.call('lab__counter_incr', { entity: 'x', idempotency_key: 'store-key-0001' });
    assert.equal(forgotten._meta?.['toolbus/replayed'], undefined);
    assert.equal(await value(), 4);
    await waitFor(async () => !(await s.call('lab__echo', { text: 'x' })).isError, 5000, 'strict bus reads again');
  });
});
