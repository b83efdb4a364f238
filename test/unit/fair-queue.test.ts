// The per-upstream admission queue: fast path, rate pacing, concurrency cap, weighted DRR fairness, turning calls away
// (queue full, wait too long, deadline), abort, pause, and whether retryAfterMs can be trusted.
// Waits, deadlines, pauses and the fallback bucket run on a fake clock the test moves (test/helpers/fake-clock.ts),
// so they are checked to the millisecond. Two tests stay on real time on purpose: rate pacing under 24 concurrent
// callers and the trustworthiness of retryAfterMs, which are about the dispatch loop's behaviour under real timers.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { BusError } from '../../src/errors.js';
import { AdmissionQueue, type AdmissionQueueOptions, type Permit } from '../../src/pipeline/fair-queue.js';
import type { RateStore, TakeTokenResult } from '../../src/store/contract.js';
import { type BucketState, pauseBucketState, takeFromBucket } from '../../src/store/gcra.js';
import { FakeClock, settle } from '../helpers/fake-clock.js';

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

  constructor(
    private readonly latencyMs = 0,
    private readonly now: () => number = Date.now,
  ) {}

  async takeToken(bucket: string, perSecond: number, burst: number): Promise<TakeTokenResult> {
    this.calls++;
    this.inCall++;
    this.maxInCall = Math.max(this.maxInCall, this.inCall);
    try {
      if (this.latencyMs > 0) await sleep(this.latencyMs);
      // The stores' own rule (gcra.ts), not a copy of it.
      const { result, next } = takeFromBucket(this.buckets.get(bucket), this.now(), perSecond, burst);
      if (next) this.buckets.set(bucket, next);
      return result;
    } finally {
      this.inCall--;
    }
  }

  async pauseBucket(bucket: string, ms: number): Promise<void> {
    this.pauses.push(ms);
    this.buckets.set(bucket, pauseBucketState(this.buckets.get(bucket), this.now(), ms));
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

/** A queue on a fake clock, with a rate store on the same clock. */
function queueOnClock(over: Partial<AdmissionQueueOptions> = {}): { q: AdmissionQueue; clock: FakeClock } {
  const clock = new FakeClock();
  const store = new TestGcraRateStore(0, () => clock.now());
  return { q: makeQueue({ store, clock, ...over }), clock };
}

/** Settles `p` into a box the test can look at without awaiting it. */
function watch<T>(p: Promise<T>): { done: boolean; value?: T; error?: unknown } {
  const box: { done: boolean; value?: T; error?: unknown } = { done: false };
  p.then(
    (value) => Object.assign(box, { done: true, value }),
    (error: unknown) => Object.assign(box, { done: true, error }),
  );
  return box;
}

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

  it('turns a call away when it waited queueWaitMs, not a millisecond sooner', async () => {
    const { q, clock } = queueOnClock({ maxConcurrency: 1, queueWaitMs: 80 });
    const deadline = clock.now() + 60_000;
    const hold = await q.admit({ agentId: 'holder', weight: 1, deadline });
    const waiting = watch(q.admit({ agentId: 'a', weight: 1, deadline }));
    await clock.advance(79);
    assert.equal(waiting.done, false, 'still in line at 79 ms');
    assert.equal(q.snapshot().queued, 1);
    await clock.advance(1);
    const err = assertRateLimited(waiting.error, 'queue_wait_exceeded');
    assert.match(err.message, /Waited 80 ms/);
    assert.equal(q.snapshot().queued, 0);
    hold.release();
  });

  it('turns a call away at once when its estimated wait already exceeds queueWaitMs', async () => {
    const { q, clock } = queueOnClock({ rate: { perSecond: 20, burst: 1 }, queueWaitMs: 180 });
    const deadline = clock.now() + 60_000;
    (await q.admit({ agentId: 'a', weight: 1, deadline })).release(); // the burst
    // Refused by the bucket, this one waits; the refusal tells the queue the next token is 50 ms away.
    const queued = [q.admit({ agentId: 'a', weight: 1, deadline })];
    await settle();
    queued.push(q.admit({ agentId: 'a', weight: 1, deadline }), q.admit({ agentId: 'a', weight: 1, deadline }));
    // 50 ms to the next token, then three ahead at 50 ms each: 200 ms, past 180, so refused with no time passing.
    const refused = watch(q.admit({ agentId: 'a', weight: 1, deadline }));
    await settle();
    const err = assertRateLimited(refused.error, 'queue_wait_exceeded');
    assert.equal(err.retryAfterMs, 200);
    // The three in line go at 50, 100 and 150 ms.
    const admittedAt: number[] = [];
    for (const p of queued) void p.then((permit) => admittedAt.push(clock.now()) && permit.release());
    await clock.advance(150);
    assert.deepEqual(
      admittedAt.map((t) => t - (clock.now() - 150)),
      [50, 100, 150],
    );
  });

  it('never waits past the call deadline', async () => {
    const { q, clock } = queueOnClock({ maxConcurrency: 1, queueWaitMs: 10_000 });
    const hold = await q.admit({ agentId: 'holder', weight: 1, deadline: clock.now() + 60_000 });
    const waiting = watch(q.admit({ agentId: 'a', weight: 1, deadline: clock.now() + 60 }));
    await clock.advance(59);
    assert.equal(waiting.done, false, 'still in line at 59 ms');
    await clock.advance(1);
    assertRateLimited(waiting.error, 'queue_wait_exceeded');
    // Already past its deadline and unable to go at once: refused without queuing.
    assertRateLimited(
      await rejection(q.admit({ agentId: 'a', weight: 1, deadline: clock.now() - 1 })),
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
    const clock = new FakeClock();
    const store = new TestGcraRateStore(0, () => clock.now());
    const q = makeQueue({ store, clock, rate: { perSecond: 1000, burst: 50 } });
    q.pause(120);
    assert.deepEqual(store.pauses, [120]);
    const admitted = watch(q.admit({ agentId: 'a', weight: 1, deadline: clock.now() + 60_000 }));
    await clock.advance(119);
    assert.equal(admitted.done, false, 'held at 119 ms');
    await clock.advance(1);
    assert.ok(admitted.value, 'admitted at 120 ms');
    admitted.value.release();

    // A pause longer than the call may wait is refused up front, as rate_paused.
    const short = queueOnClock({ queueWaitMs: 50 }).q;
    short.pause(1000);
    const err = assertRateLimited(
      await rejection(short.admit({ agentId: 'a', weight: 1, deadline: Date.now() + 60_000 })),
      'rate_paused',
    );
    assert.equal(err.retryAfterMs, 1000);
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
    const clock = new FakeClock();
    const q = makeQueue({
      store: broken,
      clock,
      rate: { perSecond: 100, burst: 2 },
      onStoreError: (e) => errors.push(e),
    });
    const started = clock.now();
    const times: number[] = [];
    for (let i = 0; i < 8; i++) {
      void q.admit({ agentId: 'a', weight: 1, deadline: started + 60_000 }).then((p) => {
        times.push(clock.now() - started);
        p.release();
      });
    }
    await clock.advance(100);
    // The burst of 2 at once, then one every 10 ms, as the store's own rule (gcra.ts) would pace them.
    assert.deepEqual(times, [0, 0, 10, 20, 30, 40, 50, 60]);
    assert.ok(errors.length >= 8);
    q.pause(10); // a failing pauseBucket is reported, not thrown
    await settle();
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
