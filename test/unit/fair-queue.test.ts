// The per-upstream admission queue: fast path, rate pacing, concurrency cap, weighted DRR fairness, turning calls away
// (queue full, wait too long, deadline), abort, pause, and whether retryAfterMs can be trusted.
// Timing tests use real time with short runs and generous bounds; fairness is also checked deterministically.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { BusError } from '../../src/errors.js';
import { AdmissionQueue, type AdmissionQueueOptions, type Permit } from '../../src/pipeline/fair-queue.js';
import type { RateStore, TakeTokenResult } from '../../src/store/contract.js';
import { type BucketState, pauseBucketState, takeFromBucket } from '../../src/store/gcra.js';

/**
 * TEST-ONLY rate store: the stores' GCRA (gcra.ts) on Date.now(), with an optional delay per call to act
 * like a remote store. It counts calls so tests can see the dispatcher neither spins nor runs twice at once.
 */
class TestGcraRateStore implements RateStore {
  calls = 0;
  pauses: number[] = [];
  private inCall = 0;
  maxInCall = 0;
  private readonly buckets = new Map<string, BucketState>();

  constructor(private readonly latencyMs = 0) {}

  async takeToken(bucket: string, perSecond: number, burst: number): Promise<TakeTokenResult> {
    this.calls++;
    this.inCall++;
    this.maxInCall = Math.max(this.maxInCall, this.inCall);
    try {
      if (this.latencyMs > 0) await sleep(this.latencyMs);
      // The stores' own rule (gcra.ts), not a copy of it.
      const { result, next } = takeFromBucket(this.buckets.get(bucket), Date.now(), perSecond, burst);
      if (next) this.buckets.set(bucket, next);
      return result;
    } finally {
      this.inCall--;
    }
  }

  async pauseBucket(bucket: string, ms: number): Promise<void> {
    this.pauses.push(ms);
    this.buckets.set(bucket, pauseBucketState(this.buckets.get(bucket), Date.now(), ms));
  }
}

function makeQueue(over: Partial<AdmissionQueueOptions> = {}): AdmissionQueue {
  return new AdmissionQueue({
    upstream: 'up',
    maxConcurrency: 16,
    queueWaitMs: 5000,
    maxQueuePerAgent: 1000,
    store: new TestGcraRateStore(),
    bucket: 'rate:up',
    ...over,
  });
}

const far = () => Date.now() + 60_000;

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  assert.fail('expected the admission to be refused');
}

function assertRateLimited(err: unknown, code: string): BusError {
  assert.ok(err instanceof BusError, `expected a BusError, got ${String(err)}`);
  assert.equal(err.category, 'rate_limited');
  assert.equal(err.code, code);
  assert.ok(err.retryAfterMs !== undefined && err.retryAfterMs > 0, 'retryAfterMs must be positive');
  return err;
}

/** Jain's fairness index: 1 when every x is equal, 1/n when one takes everything. */
function jain(xs: number[]): number {
  const sum = xs.reduce((a, b) => a + b, 0);
  const squares = xs.reduce((a, b) => a + b * b, 0);
  return (sum * sum) / (xs.length * squares);
}

describe('AdmissionQueue', () => {
  it('admits at once on the fast path, with one store call per admission', async () => {
    const store = new TestGcraRateStore();
    const waits: number[] = [];
    const q = makeQueue({ store, rate: { perSecond: 1000, burst: 10 }, onWait: (_a, ms) => waits.push(ms) });
    const started = Date.now();
    const permits: Permit[] = [];
    for (let i = 0; i < 5; i++) permits.push(await q.admit({ agentId: 'a', weight: 1, deadline: far() }));
    assert.ok(Date.now() - started < 50);
    assert.equal(store.calls, 5);
    assert.deepEqual(waits, [0, 0, 0, 0, 0]);
    assert.equal(q.snapshot().inFlight, 5);
    for (const p of permits) {
      p.release();
      p.release(); // idempotent
    }
    assert.deepEqual(q.snapshot(), { inFlight: 0, queued: 0, perAgent: { a: { queued: 0, admitted: 5 } } });

    const unlimited = makeQueue({ store });
    (await unlimited.admit({ agentId: 'b', weight: 1, deadline: far() })).release();
    assert.equal(store.calls, 5, 'no rate configured: no store call');
  });

  it('lets the burst through, then paces at perSecond; never more than burst + perSecond·T in any window', async () => {
    const perSecond = 50;
    const burst = 10;
    const store = new TestGcraRateStore(1); // a little latency, like a remote store
    const q = makeQueue({ store, rate: { perSecond, burst }, maxConcurrency: 64 });
    const started = Date.now();
    const times: number[] = [];
    const total = 50;
    await Promise.all(
      Array.from({ length: total }, (_, i) =>
        q.admit({ agentId: `a${i % 3}`, weight: 1, deadline: far() }).then((p) => {
          times.push(Date.now() - started);
          p.release();
        }),
      ),
    );
    times.sort((a, b) => a - b);
    for (let i = 0; i < times.length; i++) {
      for (let j = i; j < times.length; j++) {
        const allowed = burst + (perSecond * (times[j]! - times[i]!)) / 1000 + 1; // +1: timer and clock granularity
        assert.ok(j - i + 1 <= allowed, `${j - i + 1} admissions in ${times[j]! - times[i]!} ms`);
      }
    }
    const last = times.at(-1)!;
    const paced = ((total - burst) / perSecond) * 1000;
    assert.ok(last >= paced * 0.9, `finished too early: ${last} ms`);
    assert.ok(last <= paced * 1.5, `paced too slowly: ${last} ms for ${paced} ms of budget`);
    // No spinning: each refusal puts the dispatcher to sleep until a token is due.
    assert.ok(store.calls <= 3 * total, `${store.calls} store calls for ${total} admissions`);
    assert.ok(store.maxInCall <= 64);
  });

  it('never has more than maxConcurrency calls in flight', async () => {
    const store = new TestGcraRateStore(1);
    const q = makeQueue({ store, rate: { perSecond: 5000, burst: 5 }, maxConcurrency: 3 });
    let inFlight = 0;
    let peak = 0;
    await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        const p = await q.admit({ agentId: `a${i % 4}`, weight: 1 + (i % 2), deadline: far() });
        inFlight++;
        peak = Math.max(peak, inFlight);
        assert.ok(q.snapshot().inFlight <= 3);
        await sleep(1 + (i % 4));
        inFlight--;
        p.release();
      }),
    );
    assert.equal(peak, 3);
    assert.deepEqual({ inFlight: q.snapshot().inFlight, queued: q.snapshot().queued }, { inFlight: 0, queued: 0 });
  });

  /**
   * Backlogs every agent behind one held slot (or a tight rate), then counts the first `count` admissions, while all
   * are still backlogged. The flooding agent queues first and ten times as much.
   */
  async function fairness(
    q: AdmissionQueue,
    hold: Permit | undefined,
    agents: { id: string; weight: number; calls: number }[],
    count: number,
  ): Promise<Map<string, number>> {
    const admitted = new Map<string, number>();
    let seen = 0;
    const stop = new AbortController();
    const all: Promise<void>[] = [];
    for (const agent of agents) {
      for (let i = 0; i < agent.calls; i++) {
        const call = q.admit({ agentId: agent.id, weight: agent.weight, deadline: far(), signal: stop.signal });
        all.push(
          call.then(
            (permit) => {
              if (seen++ < count) admitted.set(agent.id, (admitted.get(agent.id) ?? 0) + 1);
              if (seen === count) stop.abort(new Error('counted enough'));
              permit.release();
            },
            () => {},
          ),
        );
      }
    }
    hold?.release();
    await Promise.all(all);
    return admitted;
  }

  const eight = [
    { id: 'flood', weight: 1, calls: 300 },
    ...Array.from({ length: 7 }, (_, i) => ({ id: `a${i}`, weight: 1, calls: 30 })),
  ];

  it('shares fairly by DRR: one agent sending 10x more gets no more than the others (slot-bound)', async () => {
    const q = makeQueue({ maxConcurrency: 1 });
    const hold = await q.admit({ agentId: 'holder', weight: 1, deadline: far() });
    const admitted = await fairness(q, hold, eight, 200);
    const shares = eight.map((a) => (admitted.get(a.id) ?? 0) / a.weight);
    assert.ok(jain(shares) >= 0.95, `Jain ${jain(shares)} for ${shares}`);
    assert.ok((admitted.get('flood') ?? 0) <= 26, `flooder got ${admitted.get('flood')}`);
    assert.equal(q.snapshot().queued, 0);
  });

  it('shares fairly by DRR under a rate cap too', async () => {
    const q = makeQueue({ rate: { perSecond: 1000, burst: 1 }, maxConcurrency: 64 });
    // Take the burst so every call below has to queue.
    (await q.admit({ agentId: 'holder', weight: 1, deadline: far() })).release();
    const admitted = await fairness(q, undefined, eight, 160);
    const shares = eight.map((a) => (admitted.get(a.id) ?? 0) / a.weight);
    assert.ok(jain(shares) >= 0.95, `Jain ${jain(shares)} for ${shares}`);
  });

  it('gives an agent of weight 2 about twice the share', async () => {
    const q = makeQueue({ maxConcurrency: 1 });
    const hold = await q.admit({ agentId: 'holder', weight: 1, deadline: far() });
    const agents = [
      { id: 'one', weight: 1, calls: 100 },
      { id: 'heavy', weight: 2, calls: 100 },
      { id: 'other', weight: 1, calls: 100 },
    ];
    const admitted = await fairness(q, hold, agents, 120);
    const ratio = (admitted.get('heavy') ?? 0) / (((admitted.get('one') ?? 0) + (admitted.get('other') ?? 0)) / 2);
    assert.ok(ratio >= 1.6 && ratio <= 2.4, `weight-2 agent got ${ratio}x (${[...admitted]})`);
    const shares = agents.map((a) => (admitted.get(a.id) ?? 0) / a.weight);
    assert.ok(jain(shares) >= 0.95);
  });

  it('serves fractional weights without idling', async () => {
    const q = makeQueue({ maxConcurrency: 1 });
    const hold = await q.admit({ agentId: 'holder', weight: 1, deadline: far() });
    const agents = [
      { id: 'tenth', weight: 0.1, calls: 50 },
      { id: 'fifth', weight: 0.2, calls: 50 },
    ];
    const admitted = await fairness(q, hold, agents, 30);
    assert.ok(Math.abs((admitted.get('fifth') ?? 0) - 20) <= 1, `${[...admitted]}`);
  });

  it('turns a call away with queue_full when its agent already has maxQueuePerAgent waiting', async () => {
    const q = makeQueue({ maxConcurrency: 1, maxQueuePerAgent: 2 });
    const hold = await q.admit({ agentId: 'holder', weight: 1, deadline: far() });
    const waiting = [1, 2].map(() => q.admit({ agentId: 'a', weight: 1, deadline: far() }));
    assertRateLimited(await rejection(q.admit({ agentId: 'a', weight: 1, deadline: far() })), 'queue_full');
    const other = q.admit({ agentId: 'b', weight: 1, deadline: far() }); // another agent still gets in line
    assert.equal(q.snapshot().queued, 3);
    const done = [...waiting, other].map((p) => p.then((permit) => permit.release()));
    hold.release();
    await Promise.all(done);
    assert.deepEqual(q.snapshot().perAgent.a, { queued: 0, admitted: 2 });
  });

  it('turns a call away when it waited queueWaitMs', async () => {
    const q = makeQueue({ maxConcurrency: 1, queueWaitMs: 80 });
    const hold = await q.admit({ agentId: 'holder', weight: 1, deadline: far() });
    const started = Date.now();
    const err = assertRateLimited(
      await rejection(q.admit({ agentId: 'a', weight: 1, deadline: far() })),
      'queue_wait_exceeded',
    );
    const waited = Date.now() - started;
    assert.ok(waited >= 75 && waited < 500, `waited ${waited} ms`);
    assert.ok(err.retryAfterMs! >= 1);
    assert.equal(q.snapshot().queued, 0);
    hold.release();
  });

  it('turns a call away at once when its estimated wait already exceeds queueWaitMs', async () => {
    const q = makeQueue({ rate: { perSecond: 20, burst: 1 }, queueWaitMs: 180 });
    (await q.admit({ agentId: 'a', weight: 1, deadline: far() })).release(); // the burst
    const queued = [q.admit({ agentId: 'a', weight: 1, deadline: far() })];
    await sleep(5); // the refused token tells the queue when the bucket refills
    queued.push(
      q.admit({ agentId: 'a', weight: 1, deadline: far() }),
      q.admit({ agentId: 'a', weight: 1, deadline: far() }),
    );
    const started = Date.now();
    // Three ahead at 50 ms each, plus the time until the next token: past 180 ms.
    const err = assertRateLimited(
      await rejection(q.admit({ agentId: 'a', weight: 1, deadline: far() })),
      'queue_wait_exceeded',
    );
    assert.ok(Date.now() - started < 30, 'refused up front, not after waiting');
    assert.ok(err.retryAfterMs! >= 150 && err.retryAfterMs! <= 300, `retryAfterMs ${err.retryAfterMs}`);
    for (const p of queued) (await p).release();
  });

  it('never waits past the call deadline', async () => {
    const q = makeQueue({ maxConcurrency: 1, queueWaitMs: 10_000 });
    const hold = await q.admit({ agentId: 'holder', weight: 1, deadline: far() });
    const started = Date.now();
    assertRateLimited(
      await rejection(q.admit({ agentId: 'a', weight: 1, deadline: started + 60 })),
      'queue_wait_exceeded',
    );
    const waited = Date.now() - started;
    assert.ok(waited >= 55 && waited < 400, `waited ${waited} ms`);
    // Already past its deadline and unable to go at once: refused without queuing.
    assertRateLimited(
      await rejection(q.admit({ agentId: 'a', weight: 1, deadline: Date.now() - 1 })),
      'queue_wait_exceeded',
    );
    assert.equal(q.snapshot().queued, 0);
    hold.release();
  });

  it('removes an aborted waiter and rejects it with the signal reason', async () => {
    const q = makeQueue({ maxConcurrency: 1 });
    const hold = await q.admit({ agentId: 'holder', weight: 1, deadline: far() });
    const ac = new AbortController();
    const cancelled = q.admit({ agentId: 'a', weight: 1, deadline: far(), signal: ac.signal });
    const next = q.admit({ agentId: 'b', weight: 1, deadline: far() });
    assert.equal(q.snapshot().queued, 2);
    const reason = new Error('agent cancelled');
    ac.abort(reason);
    assert.equal(await rejection(cancelled), reason);
    assert.equal(q.snapshot().queued, 1);
    hold.release();
    (await next).release();
    assert.deepEqual(q.snapshot().perAgent.a, { queued: 0, admitted: 0 });
    // An already-aborted signal is refused without queuing.
    assert.equal(await rejection(q.admit({ agentId: 'a', weight: 1, deadline: far(), signal: ac.signal })), reason);
  });

  it('holds admissions while paused, here and in the store', async () => {
    const store = new TestGcraRateStore();
    const q = makeQueue({ store, rate: { perSecond: 1000, burst: 50 } });
    q.pause(120);
    assert.deepEqual(store.pauses, [120]);
    const started = Date.now();
    (await q.admit({ agentId: 'a', weight: 1, deadline: far() })).release();
    const waited = Date.now() - started;
    assert.ok(waited >= 110 && waited < 500, `admitted after ${waited} ms`);

    // A pause longer than the call may wait is refused up front, as rate_paused.
    const short = makeQueue({ queueWaitMs: 50 });
    short.pause(1000);
    const err = assertRateLimited(
      await rejection(short.admit({ agentId: 'a', weight: 1, deadline: far() })),
      'rate_paused',
    );
    assert.ok(err.retryAfterMs! >= 900, `retryAfterMs ${err.retryAfterMs}`);
  });

  it('gives retryAfterMs a caller can trust: most retries after it are admitted', async () => {
    const q = makeQueue({ rate: { perSecond: 100, burst: 5 }, queueWaitMs: 100, maxConcurrency: 64 });
    let retried = 0;
    let retriedOk = 0;
    const call = async (agentId: string, retry: boolean): Promise<void> => {
      try {
        (await q.admit({ agentId, weight: 1, deadline: far() })).release();
      } catch (err) {
        assert.ok(err instanceof BusError && err.category === 'rate_limited');
        if (!retry) return;
        retried++;
        await sleep(err.retryAfterMs!);
        try {
          (await q.admit({ agentId, weight: 1, deadline: far() })).release();
          retriedOk++;
        } catch {}
      }
    };
    // A burst from two agents far above what fits in 100 ms, while a third keeps a steady 40/s of its own.
    const burst = Array.from({ length: 40 }, (_, i) => call(i % 2 ? 'x' : 'y', true));
    const steady = (async () => {
      for (let i = 0; i < 20; i++) {
        void call('steady', false);
        await sleep(25);
      }
    })();
    await Promise.all([...burst, steady]);
    assert.ok(retried >= 10, `only ${retried} calls were turned away`);
    assert.ok(retriedOk / retried >= 0.8, `${retriedOk} of ${retried} retries admitted`);
  });

  it('paces by an in-process bucket when the store cannot answer', async () => {
    const errors: unknown[] = [];
    const broken: RateStore = {
      takeToken: () => Promise.reject(new Error('store down')),
      pauseBucket: () => Promise.reject(new Error('store down')),
    };
    const q = makeQueue({ store: broken, rate: { perSecond: 100, burst: 2 }, onStoreError: (e) => errors.push(e) });
    const started = Date.now();
    const times: number[] = [];
    await Promise.all(
      Array.from({ length: 8 }, () =>
        q.admit({ agentId: 'a', weight: 1, deadline: far() }).then((p) => {
          times.push(Date.now() - started);
          p.release();
        }),
      ),
    );
    assert.ok(errors.length >= 8);
    assert.ok(times.at(-1)! >= 50, `8 calls at 100/s burst 2 took only ${times.at(-1)} ms`);
    q.pause(10); // a failing pauseBucket is reported, not thrown
    await sleep(1);
  });

  it('close() turns every waiter away', async () => {
    const q = makeQueue({ maxConcurrency: 1 });
    const hold = await q.admit({ agentId: 'holder', weight: 1, deadline: far() });
    const waiting = q.admit({ agentId: 'a', weight: 1, deadline: far() });
    q.close();
    const err = await rejection(waiting);
    assert.ok(err instanceof BusError && err.category === 'upstream_unavailable');
    await rejection(q.admit({ agentId: 'a', weight: 1, deadline: far() }));
    hold.release();
    assert.equal(q.snapshot().inFlight, 0);
  });
});
