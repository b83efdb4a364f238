// The wire format of an error, unit by unit. That every category of the table is produced by some real call is
// checked on every full run by scripts/run-tests.mjs, from the errors the integration tests actually received.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { BusError, ERROR_TABLE, errorResult } from '../../src/errors.js';

it('the wire format carries the same object in _meta and text', () => {
  const r = errorResult(new BusError('rate_limited', 'queue_full', 'full', { retryAfterMs: 12.3 }));
  assert.equal(r.isError, true);
  const meta = r._meta['toolbus/error'] as Record<string, unknown>;
  assert.deepEqual(JSON.parse(r.content[0]!.text)['toolbus/error'], meta);
  assert.equal(meta.retryAfterMs, 13);
  assert.equal(meta.retryable, true);
  assert.equal(typeof meta.hint, 'string');
});

it('every category has a hint and a retry rule, and BusError takes them from the table', () => {
  for (const [category, rule] of Object.entries(ERROR_TABLE)) {
    const e = new BusError(category as keyof typeof ERROR_TABLE, 'x', 'y');
    assert.equal(e.retryable, rule.retryable);
    assert.equal(e.hint, rule.hint);
    assert.ok(rule.hint.length > 20);
  }
});
