// The contract suite against the Redis store (real Redis at 127.0.0.1:6379, a unique key prefix per run, deleted at
// the end), plus what only a shared store promises: two stores on one prefix behave as two replicas of one bus.
// Without Redis the file is skipped with a loud warning, except in CI (CI set), where that is a failure.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { type LeaseGrant, StoreUnavailable } from '../../src/store/contract.js';
import { createStore } from '../../src/store/index.js';
import { openRedisStore } from '../../src/store/redis.js';
import { storeContract, uniqueScope } from './store-contract.js';

const URL = 'redis://127.0.0.1:6379/0';
const prefix = `tb-test:${randomUUID().slice(0, 8)}:`;
const T = { timeout: 15_000 };

async function redisUp(): Promise<boolean> {
  const probe = new Redis(URL, {
    lazyConnect: true,
    enableOfflineQueue: false,
    connectTimeout: 1000,
    retryStrategy: () => null,
  });
  probe.on('error', () => {});
  try {
    await probe.connect();
    await probe.ping();
    return true;
  } catch {
    return false;
  } finally {
    probe.disconnect();
  }
}

async function prefixKeys(redis: Redis): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    keys.push(...batch);
    cursor = next;
  } while (cursor !== '0');
  return keys;
}

const up = await redisUp();
const replica = () => openRedisStore({ url: URL, prefix, replicaId: randomUUID().slice(0, 8) });

if (!up && process.env.CI) {
  it('Redis at 127.0.0.1:6379 is reachable (required in CI)', () => assert.fail('Redis is not reachable'));
} else if (!up) {
  console.warn('\n!!! SKIPPING the Redis store contract tests: no Redis at 127.0.0.1:6379 !!!\n');
  describe('redis store', { skip: 'no Redis at 127.0.0.1:6379' }, () => {
    it('contract', () => {});
  });
} else {
  after(async () => {
    const redis = new Redis(URL);
    try {
      const keys = await prefixKeys(redis);
      if (keys.length > 0) await redis.del(...keys);
    } finally {
      redis.disconnect();
    }
  });

  storeContract('redis', () =>
    createStore({ kind: 'redis', url: URL, prefix }, { replicaId: randomUUID().slice(0, 8) }),
  );

  describe('redis store: replicas sharing one prefix', () => {
    it("sees the other replica's claim and is woken by its completion through pub/sub", T, async () => {
      const [a, b] = await Promise.all([replica(), replica()]);
      try {
        const scope = uniqueScope('cross');
        const req = { scope, fingerprint: 'fp', claimTtlMs: 10_000, retryUnknown: false };
        assert.deepEqual(await a.claimKey({ ...req, owner: 'a:1' }), { kind: 'claimed', fence: 1, tookOver: false });
        const seen = await b.claimKey({ ...req, owner: 'b:1' });
        assert.equal(seen.kind === 'existing' && seen.record.owner, 'a:1');
        await a.markDispatched(scope, 'a:1', 1, 10_000);
        const began = Date.now();
        const joined = b.waitForKey(scope, 5000);
        await sleep(300);
        assert.equal(await a.completeKey(scope, 'a:1', 1, '{"from":"a"}', 10_000), true);
        const rec = await joined;
        const ms = Date.now() - began;
        assert.equal(rec?.result, '{"from":"a"}');
        // The safety poll comes after 1 s; an earlier wake-up is the pub/sub message.
        assert.ok(ms < 800, `woke after ${ms} ms`);
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
    });

    it('hands a lease across replicas in FIFO order with growing tokens', T, async () => {
      const [a, b, c] = await Promise.all([replica(), replica(), replica()]);
      try {
        const scope = uniqueScope('cross-lease');
        const opts = { ttlMs: 10_000, waitMs: 5000 };
        const first = await a.acquireLease(scope, 'a', opts);
        const order: string[] = [];
        const track = (p: Promise<LeaseGrant>) =>
          p.then((g) => {
            order.push(g.holder);
            return g;
          });
        const fromB = track(b.acquireLease(scope, 'b', opts));
        await sleep(30);
        const fromC = track(c.acquireLease(scope, 'c', opts));
        await sleep(30);
        assert.equal((await c.listLeases()).find((l) => l.scope === scope)?.waiters, 2);
        const releasedAt = Date.now();
        await a.releaseLease(first);
        const second = await fromB;
        assert.ok(Date.now() - releasedAt < 800, 'woken by the release, not by the poll');
        await b.releaseLease(second);
        const third = await fromC;
        await c.releaseLease(third);
        assert.deepEqual(order, ['b', 'c']);
        assert.ok(first.token < second.token && second.token < third.token);
      } finally {
        await Promise.all([a.close(), b.close(), c.close()]);
      }
    });

    it("skips a dead replica's waiter once its heartbeat lapses", T, async () => {
      const a = await replica();
      const redis = new Redis(URL);
      try {
        const scope = uniqueScope('ghost');
        const g = await a.acquireLease(scope, 'a', { ttlMs: 10_000, waitMs: 0 });
        const [sec, us] = await redis.time();
        const redisNow = Number(sec) * 1000 + Math.floor(Number(us) / 1000);
        // A waiter that arrived first, on a replica that has since died: its heartbeat ends in 300 ms.
        await redis.zadd(`${prefix}lease-q:${scope}`, 0, 'dead-replica:w1');
        await redis.zadd(`${prefix}lease-hb:${scope}`, redisNow + 300, 'dead-replica:w1');
        await redis.pexpire(`${prefix}lease-q:${scope}`, 10_000);
        await redis.pexpire(`${prefix}lease-hb:${scope}`, 10_000);
        const waiting = a.acquireLease(scope, 'b', { ttlMs: 10_000, waitMs: 5000 });
        await a.releaseLease(g);
        const began = Date.now();
        const next = await waiting;
        const ms = Date.now() - began;
        assert.equal(next.holder, 'b');
        assert.ok(
          ms >= 250 && ms < 2500,
          `granted after ${ms} ms: the dead waiter was ahead until its heartbeat lapsed`,
        );
        await a.releaseLease(next);
      } finally {
        await a.close();
        redis.disconnect();
      }
    });

    it('keeps fencing tokens growing across replicas, even if the counter is lost', T, async () => {
      const [a, b] = await Promise.all([replica(), replica()]);
      const redis = new Redis(URL);
      try {
        const scope = uniqueScope('tokens');
        let last = 0;
        for (let i = 0; i < 10; i++) {
          const s = i % 2 === 0 ? a : b;
          const g = await s.acquireLease(scope, `h${i}`, { ttlMs: 10_000, waitMs: 1000 });
          assert.ok(g.token > last);
          last = g.token;
          await s.releaseLease(g);
          if (i === 5) await redis.del(`${prefix}lease-seq`);
        }
      } finally {
        await Promise.all([a.close(), b.close()]);
        redis.disconnect();
      }
    });

    it('rejects fast with StoreUnavailable when Redis cannot be reached', T, async () => {
      const store = await openRedisStore({ url: 'redis://127.0.0.1:1/0', prefix, replicaId: 'nowhere' });
      try {
        const began = Date.now();
        await assert.rejects(store.ping(), StoreUnavailable);
        await assert.rejects(
          store.claimKey({ scope: 'k', fingerprint: 'f', owner: 'o', claimTtlMs: 1000, retryUnknown: false }),
          StoreUnavailable,
        );
        await assert.rejects(store.acquireLease('s', 'h', { ttlMs: 1000, waitMs: 1000 }), StoreUnavailable);
        await assert.rejects(store.waitForKey('k', 1000), StoreUnavailable);
        assert.ok(Date.now() - began < 1500, `took ${Date.now() - began} ms`);
      } finally {
        await store.close();
      }
    });

    it('leaves no key without a TTL', T, async () => {
      const redis = new Redis(URL);
      try {
        const keys = await prefixKeys(redis);
        assert.ok(keys.length > 5, `the suite left keys to check (${keys.length})`);
        const ttls = await Promise.all(keys.map((k) => redis.pttl(k)));
        const forever = keys.filter((_, i) => ttls[i] === -1);
        assert.deepEqual(forever, []);
      } finally {
        redis.disconnect();
      }
    });
  });
}
