// The compiled-validator cache: bounded however many distinct schemas upstreams send, and still right after the
// engines that compiled the early validators were replaced.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compileValidator, MAX_VALIDATORS, validatorsKept } from '../../src/catalog/schema-tools.js';

const schemaN = (n: number) => ({
  type: 'object',
  properties: { [`f${n}`]: { type: 'string', pattern: `^v${n}-[a-z]+$` } },
  required: [`f${n}`],
  additionalProperties: false,
});

describe('compileValidator', () => {
  it('keeps at most MAX_VALIDATORS and validates correctly across engine generations', () => {
    const first = compileValidator(schemaN(0));
    assert.equal(compileValidator(schemaN(0)), first, 'a schema seen again is not compiled again');
    const total = MAX_VALIDATORS * 2 + 10;
    for (let n = 1; n < total; n++) {
      const { validate } = compileValidator(schemaN(n));
      assert.equal(validate({ [`f${n}`]: `v${n}-ok` }), true, `schema ${n} accepts its own value`);
      assert.equal(validate({ [`f${n}`]: `v${n + 1}-ok` }), false, `schema ${n} refuses another pattern's value`);
    }
    assert.ok(validatorsKept() <= MAX_VALIDATORS, `kept ${validatorsKept()}`);
    // A validator the catalog still holds after the cache forgot it (and removed it from its engine) still works.
    assert.equal(first.validate({ f0: 'v0-x' }), true);
    assert.equal(first.validate({ f0: 'v1-x' }), false);
    // The first schema was forgotten long ago and its engines replaced; compiled again, it is still right.
    const again = compileValidator(schemaN(0));
    assert.notEqual(again, first);
    assert.equal(again.validate({ f0: 'v0-x' }), true);
    assert.equal(again.validate({ f0: 'v1-x' }), false);
  });

  it('reports a pattern RE2 cannot run as dropped, on a fresh engine pair too', () => {
    const lookahead = { type: 'string', pattern: '^(?=a)a+$' };
    assert.deepEqual(compileValidator(lookahead).droppedPatterns, ['^(?=a)a+$']);
    for (let n = 0; n < MAX_VALIDATORS + 1; n++) compileValidator({ type: 'string', const: `c${n}` });
    assert.deepEqual(compileValidator({ ...lookahead, minLength: 1 }).droppedPatterns, ['^(?=a)a+$']);
  });
});
