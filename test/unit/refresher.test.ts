// The catalog refresher under a storm, on mocked timers: however many requests arrive, one refresh runs at a time,
// at most one more is pending, and starts are spaced by 1/perSecond.
import assert from 'node:assert/strict';
import { it, mock } from 'node:test';
import { CoalescedRefresh } from '../../src/catalog/refresher.js';

it('merges a storm of requests into a few spaced refreshes', async () => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 0 });
  try {
    const starts: number[] = [];
    let finish: (() => void) | undefined;
    const r = new CoalescedRefresh(
      () =>
        new Promise<void>((resolve) => {
          starts.push(Date.now());
          finish = resolve;
        }),
      { perSecond: 4 },
    );
    for (let i = 0; i < 10_000; i++) r.request();
    assert.equal(starts.length, 1, 'one refresh in flight');
    finish!();
    await Promise.resolve();
    await Promise.resolve();
    for (let i = 0; i < 10_000; i++) r.request();
    mock.timers.tick(100);
    assert.equal(starts.length, 1, 'the next one waits for its turn (250 ms apart)');
    mock.timers.tick(200);
    assert.equal(starts.length, 2, 'one pending refresh ran');
    assert.ok(starts[1]! - starts[0]! >= 250);
    finish!();
    await Promise.resolve();
    await Promise.resolve();
    mock.timers.tick(1000);
    assert.equal(starts.length, 2, 'nothing more was asked for, nothing more ran');
    r.stop();
  } finally {
    mock.timers.reset();
  }
});
