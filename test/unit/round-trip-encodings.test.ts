// Properties of two encodings toolbus relies on for 2026-07-28 agents: an Mcp-Param header value reads back as the
// value it was written from (whatever the string), and a sealed requestState opens only for its own binding and only
// when not one byte of it changed.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { RequestStateSeal, type SealBinding } from '../../src/agents/request-state.js';
import { decodeParamValue, encodeParamValue } from '../../src/catalog/mcp-param-headers.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 500);

describe('Mcp-Param header values', () => {
  it('decode(encode(v)) is v for any string, and the encoded form is a legal header value', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 64 }), (v) => {
        const encoded = encodeParamValue(v);
        assert.match(encoded, /^[\x20-\x7e]*$/);
        assert.equal(encoded.trim(), encoded, 'no surrounding spaces, which HTTP would strip');
        assert.equal(decodeParamValue(encoded), v);
      }),
      { numRuns: RUNS },
    );
  });

  it('a sentinel whose payload is not canonical Base64 does not decode', () => {
    for (const bad of ['=?base64?SGVsbG8?=', '=?base64?SGVs!!!bG8=?=', '=?base64?A?='])
      assert.equal(decodeParamValue(bad), undefined);
    assert.equal(decodeParamValue('SGVsbG8='), 'SGVsbG8=', 'without the sentinel a value is literal');
  });
});

describe('sealed requestState', () => {
  const binding = (over: Partial<SealBinding> = {}): SealBinding => ({
    agentId: 'alice',
    endpoint: 'ref',
    method: 'tools/call',
    params: { name: 'tool', arguments: { idempotency_key: 'k-12345678' } },
    ...over,
  });

  it('opens for its binding to the inner state, and never once a character changed', () => {
    const seal = new RequestStateSeal();
    fc.assert(
      fc.property(fc.jsonValue(), fc.nat(), fc.integer({ min: 33, max: 126 }), (inner, at, code) => {
        const sealed = seal.seal(binding(), inner);
        assert.deepEqual(seal.open(binding(), sealed)?.inner, JSON.parse(JSON.stringify(inner)));
        const i = at % sealed.length;
        const changed = sealed.slice(0, i) + String.fromCharCode(code) + sealed.slice(i + 1);
        if (changed !== sealed) assert.equal(seal.open(binding(), changed), undefined);
      }),
      { numRuns: RUNS },
    );
  });

  it('refuses every change of its last character (Base64 spare bits included)', () => {
    const seal = new RequestStateSeal();
    const sealed = seal.seal(binding(), { s: 1 });
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    for (const c of alphabet) {
      const changed = sealed.slice(0, -1) + c;
      if (changed !== sealed) assert.equal(seal.open(binding(), changed), undefined, c);
    }
  });

  it('does not open for another agent, endpoint, tool or key, nor under another process key', () => {
    const seal = new RequestStateSeal();
    const sealed = seal.seal(binding(), { s: 1 });
    for (const other of [
      binding({ agentId: 'bob' }),
      binding({ endpoint: undefined }),
      binding({ params: { name: 'other', arguments: { idempotency_key: 'k-12345678' } } }),
      binding({ params: { name: 'tool', arguments: { idempotency_key: 'k-87654321' } } }),
    ])
      assert.equal(seal.open(other, sealed), undefined);
    assert.equal(new RequestStateSeal().open(binding(), sealed), undefined);
  });
});
