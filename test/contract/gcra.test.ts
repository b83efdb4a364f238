// GCRA is written twice on purpose: in TypeScript for the in-process stores and the queue's fallback (gcra.ts), and
// in Lua for Redis (src/store/lua/includes/gcra.lua). This runs both on the same random inputs (bucket state, now,
// rate) on the real Redis, and requires the same decision, the same wait and the same new state.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { takeFromBucket } from '../../src/store/gcra.js';
import { withIncludes } from '../../src/store/redis-scripts.js';

const PROBE = withIncludes(`-- @include gcra
local ok, v = gcraTake(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
return {ok and 1 or 0, string.format('%.6f', v)}
`);

describe('GCRA: the TypeScript rule and the Lua rule agree', () => {
  it('on 300 random bucket states, clocks and rates', { timeout: 30_000 }, async (t) => {
    const redis = new Redis('redis://127.0.0.1:6379/0', { lazyConnect: true, retryStrategy: () => null });
    redis.on('error', () => {});
    try {
      await redis.connect();
    } catch {
      if (process.env.CI) throw new Error('Redis is needed at 127.0.0.1:6379');
      t.skip('no Redis at 127.0.0.1:6379');
      return;
    }
    try {
      const base = 1_700_000_000_000;
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 0, max: 5000 }),
          fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 5000 })),
          fc.integer({ min: 0, max: 5000 }),
          fc.oneof(fc.constant(0), fc.double({ min: 0.1, max: 2000, noNaN: true })),
          fc.integer({ min: 0, max: 50 }),
          async (tatOff, puOff, nowOff, perSecond, burst) => {
            const tat = tatOff === 0 ? 0 : base + tatOff;
            const pausedUntil = puOff === 0 ? 0 : base + puOff;
            const now = base + nowOff;
            const ts = takeFromBucket({ tat, pausedUntil }, now, perSecond, burst);
            const [ok, v] = (await redis.eval(PROBE, 0, tat, pausedUntil, now, perSecond, burst)) as [number, string];
            assert.equal(ok === 1, ts.result.ok, 'same decision');
            if (ts.result.ok) assert.ok(Math.abs(Number(v) - ts.next!.tat) < 1e-3, `tat ${v} vs ${ts.next!.tat}`);
            else assert.equal(Number(v), ts.result.retryAfterMs, 'same wait');
          },
        ),
        { numRuns: 300 },
      );
    } finally {
      redis.disconnect();
    }
  });
});
