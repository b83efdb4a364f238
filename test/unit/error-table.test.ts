// Every category of the error table must be triggered for real by some integration test, and every category must
// have a row (retryable, hint) the compiler keeps complete. This test reads the integration suites as text.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { it } from 'node:test';
import { BusError, ERROR_TABLE, errorResult } from '../../src/errors.js';

const dir = join(import.meta.dirname, '../integration');
const sources = readdirSync(dir)
  .filter((f) => f.endsWith('.test.ts'))
  .map((f) => readFileSync(join(dir, f), 'utf8'))
  .join('\n');

it('every error category is asserted by an integration test', () => {
  for (const category of Object.keys(ERROR_TABLE)) {
    assert.ok(sources.includes(`category, '${category}'`), `no integration test asserts category ${category}`);
  }
});

it('the wire format carries the same object in _meta and text', () => {
  const r = errorResult(new BusError('rate_limited', 'queue_full', 'full', { retryAfterMs: 12.3 }));
  assert.equal(r.isError, true);
  const meta = r._meta['toolbus/error'] as Record<string, unknown>;
  assert.deepEqual(JSON.parse(r.content[0]!.text)['toolbus/error'], meta);
  assert.equal(meta.retryAfterMs, 13);
  assert.equal(meta.retryable, true);
  assert.equal(typeof meta.hint, 'string');
});
