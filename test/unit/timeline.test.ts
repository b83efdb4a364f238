// The dashboard's time series with an injected clock: buckets roll over, rates and quantiles are right, old buckets
// fall out of the window, gaps read as zeros, and per-agent totals count outcomes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { quantile, Timeline } from '../../src/observe/timeline.js';

describe('Timeline', () => {
  it('buckets calls by time, with calls/s, p50/p99 and lease waits, and forgets what left the window', () => {
    let now = 1_000_000;
    const tl = new Timeline({ bucketMs: 1000, buckets: 5, now: () => now });
    for (let i = 0; i < 99; i++)
      tl.record({ upstream: 'u', agent: 'a', tool: 'u__t', outcome: 'ok', durationMs: 10, leaseWaitMs: 0 });
    tl.record({ upstream: 'u', agent: 'b', tool: 'u__t', outcome: 'timeout', durationMs: 2000, leaseWaitMs: 40 });
    tl.sampleQueue('u', 7, 3);
    now += 1000;
    const first = tl.series('u');
    assert.equal(first.length, 5);
    const full = first[3]!;
    assert.equal(full.calls, 100);
    assert.equal(full.errors, 1);
    assert.equal(full.rate, 100);
    assert.ok(full.p50! >= 10 && full.p50! < 12.5, `p50 ${full.p50}`);
    assert.ok(full.p99! >= 10 && full.p99! < 12.5, 'p99 of 100 calls with one slow is still the fast bucket');
    assert.equal(full.queued, 7);
    assert.equal(full.inFlight, 3);
    assert.equal(full.leaseWaits, 1);
    assert.deepEqual(first[4], {
      t: now,
      calls: 0,
      errors: 0,
      rate: 0,
      p50: null,
      p99: null,
      queued: 0,
      inFlight: 0,
      leaseWaits: 0,
    });
    now += 10_000;
    assert.ok(
      tl.series('u').every((p) => p.calls === 0),
      'the old bucket left the window',
    );
    const totals = tl.agentTotals();
    assert.equal(totals.a!.calls, 99);
    assert.equal(totals.b!.errors, 1);
    assert.deepEqual(totals.b!.byOutcome, { timeout: 1 });
    assert.equal(tl.lastError('u')?.outcome, 'timeout');
  });

  it('estimates quantiles from the histogram', () => {
    assert.equal(quantile([0, 0, 0], 0.5), null);
    const hist = [0, 10, 0, 0, 90];
    assert.ok(quantile(hist, 0.05)! < quantile(hist, 0.5)!);
  });
});
