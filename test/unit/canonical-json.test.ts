// The fingerprint of a call's arguments is stored beside its idempotency key, so a retry after an upgrade must get the
// same one: these vectors pin its bytes. And it is canonical: the same value, keys in any order, one fingerprint.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { canonicalJson, fingerprint } from '../../src/pipeline/canonical-json.js';

describe('canonical JSON and the arguments fingerprint', () => {
  it('keeps the fingerprints earlier versions stored', () => {
    const vectors: [unknown, string][] = [
      [{}, '44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a'],
      [
        { b: 1, a: [3, 'x', null, true, { z: 0.5, y: -0 }] },
        '0f42b7b8199186b849dd2be9ffead2f402235364c8247a5b3e2932cde4172748',
      ],
      [
        { é: 'ü\u2028\n"\\', n: 1e21, m: 1.5e-7, nested: { deep: [[[]]], empty: {} } },
        '9dbcbfbee99fb1a236cd3ea044457c61d8264f6db9cd84f7b1c597469a5610fa',
      ],
      [['a', { k: 'v' }], '3e94eabf1ce46138d089c80975c58eb86212f25cdb2a99f73833310b2e3c08f2'],
      ['plain', '945603a8f587786b463c3f94fce115c0fae88fac2728cc96ddf5981cf7f61741'],
      [null, '74234e98afe7498fb5daf1f36ac2d78acc339464f950703b8c019892f982b90b'],
    ];
    for (const [value, expected] of vectors) assert.equal(fingerprint(value), expected, JSON.stringify(value));
  });

  it('is the same for any key order, and reads back as the value', () => {
    const reversed = (v: unknown): unknown => {
      if (Array.isArray(v)) return v.map(reversed);
      if (v === null || typeof v !== 'object') return v;
      return Object.fromEntries(
        Object.entries(v)
          .reverse()
          .map(([k, x]) => [k, reversed(x)]),
      );
    };
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const text = canonicalJson(value);
        assert.equal(canonicalJson(reversed(value)), text);
        assert.deepEqual(JSON.parse(text), JSON.parse(JSON.stringify(value)));
      }),
    );
  });
});
