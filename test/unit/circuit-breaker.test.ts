// The circuit breaker's states on a clock the test moves by hand: closed → open after N consecutive transport
// failures → half-open after openMs with one probe at a time → closed on success, open again on failure.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type BreakerState, CircuitBreaker } from '../../src/upstreams/circuit-breaker.js';

function breakerAt(opts: { failures: number; openMs: number; probeTimeoutMs?: number }) {
  let t = 1_000_000;
  const changes: string[] = [];
  const breaker = new CircuitBreaker({
    ...opts,
    now: () => t,
    onChange: (state: BreakerState, previous: BreakerState) => changes.push(`${previous}->${state}`),
  });
  return {
    breaker,
    changes,
    advance: (ms: number) => {
      t += ms;
    },
  };
}

describe('CircuitBreaker', () => {
  it('stays closed below N consecutive failures; a success resets the count', () => {
    const { breaker } = breakerAt({ failures: 3, openMs: 1000 });
    breaker.failure();
    breaker.failure();
    breaker.success();
    breaker.failure();
    breaker.failure();
    assert.equal(breaker.state, 'closed');
    assert.deepEqual(breaker.check(), { ok: true });
  });

  it('opens after N consecutive failures and fails fast with the time left', () => {
    const { breaker, advance, changes } = breakerAt({ failures: 3, openMs: 1000 });
    for (let i = 0; i < 3; i++) breaker.failure();
    assert.equal(breaker.state, 'open');
    assert.deepEqual(breaker.check(), { ok: false, retryAfterMs: 1000 });
    advance(400);
    assert.deepEqual(breaker.check(), { ok: false, retryAfterMs: 600 });
    // Late failures of calls sent before it opened do not extend the pause.
    breaker.failure();
    assert.deepEqual(breaker.check(), { ok: false, retryAfterMs: 600 });
    assert.deepEqual(changes, ['closed->open']);
  });

  it('lets exactly one probe through when half-open, and closes when it succeeds', () => {
    const { breaker, advance, changes } = breakerAt({ failures: 2, openMs: 500 });
    breaker.failure();
    breaker.failure();
    advance(500);
    assert.equal(breaker.state, 'half-open');
    assert.deepEqual(breaker.check(), { ok: true }); // the probe
    for (let i = 0; i < 5; i++) {
      const refused = breaker.check();
      assert.equal(refused.ok, false);
      assert.ok(!refused.ok && refused.retryAfterMs > 0 && refused.retryAfterMs <= 500);
    }
    breaker.success();
    assert.equal(breaker.state, 'closed');
    assert.deepEqual(breaker.check(), { ok: true });
    assert.deepEqual(changes, ['closed->open', 'open->half-open', 'half-open->closed']);
    // Closed again means counting from zero.
    breaker.failure();
    assert.equal(breaker.state, 'closed');
  });

  it('opens again for openMs when the probe fails', () => {
    const { breaker, advance, changes } = breakerAt({ failures: 1, openMs: 300 });
    breaker.failure();
    advance(300);
    assert.deepEqual(breaker.check(), { ok: true });
    breaker.failure();
    assert.equal(breaker.state, 'open');
    assert.deepEqual(breaker.check(), { ok: false, retryAfterMs: 300 });
    advance(300);
    assert.deepEqual(breaker.check(), { ok: true });
    assert.deepEqual(changes, ['closed->open', 'open->half-open', 'half-open->open', 'open->half-open']);
  });

  it('a success from an older call does not close an open circuit; only the probe decides', () => {
    const { breaker, advance } = breakerAt({ failures: 1, openMs: 300 });
    breaker.failure();
    breaker.success();
    assert.equal(breaker.state, 'open');
    advance(300);
    breaker.success(); // half-open, but no probe was granted yet
    assert.equal(breaker.state, 'half-open');
  });

  it('allows a new probe when the previous one never reported', () => {
    const { breaker, advance } = breakerAt({ failures: 1, openMs: 300, probeTimeoutMs: 2000 });
    breaker.failure();
    advance(300);
    assert.deepEqual(breaker.check(), { ok: true });
    advance(1999);
    assert.equal(breaker.check().ok, false);
    advance(1);
    assert.deepEqual(breaker.check(), { ok: true });
    assert.equal(breaker.check().ok, false);
  });
});
