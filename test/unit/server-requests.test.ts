// What the HTTP upstream's response streams say about whose call a message belongs to: the sniffer that reads the
// SSE bytes before the SDK does, and the log origins that match the SDK's parsed copy back to its stream.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { LogOrigins, type SniffedMessage, sniffStream } from '../../src/upstreams/server-requests.js';

const events = [
  { jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'é started' } },
  { jsonrpc: '2.0', id: 7, method: 'elicitation/create', params: { message: 'name?' } },
  { jsonrpc: '2.0', id: 1, result: { content: [] } },
  { jsonrpc: '2.0', id: 'x', method: 'ping' },
];
const sse = (eol: string) => events.map((e) => `event: message${eol}data: ${JSON.stringify(e)}${eol}${eol}`).join('');

function sniffAll(chunks: Uint8Array[]): SniffedMessage[] {
  const seen: SniffedMessage[] = [];
  const sniff = sniffStream((m) => seen.push(m));
  for (const c of chunks) sniff(c);
  return seen;
}

describe('sniffStream', () => {
  const expected: SniffedMessage[] = [
    { method: 'notifications/message', params: { level: 'info', data: 'é started' } },
    { method: 'elicitation/create', id: '7', params: { message: 'name?' } },
    { method: 'ping', id: 'x' },
  ];

  it('reports requests and notifications, not responses, however the bytes are split (LF or CRLF)', () => {
    fc.assert(
      fc.property(fc.constantFrom('\n', '\r\n'), fc.array(fc.nat(), { maxLength: 12 }), (eol, cuts) => {
        const bytes = new TextEncoder().encode(sse(eol));
        const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
        const chunks: Uint8Array[] = [];
        let from = 0;
        for (const to of [...at, bytes.length]) {
          chunks.push(bytes.subarray(from, to));
          from = to;
        }
        assert.deepEqual(sniffAll(chunks), expected);
      }),
    );
  });

  it('skips an event whose data is not JSON', () => {
    const bytes = new TextEncoder().encode('data: {"method": oops\n\ndata: {"method":"ping","id":2}\n\n');
    assert.deepEqual(sniffAll([bytes]), [{ method: 'ping', id: '2' }]);
  });
});

describe('LogOrigins', () => {
  it('matches a parsed message to its stream by content, whatever the key order, first in first out', () => {
    const origins = new LogOrigins();
    origins.seen({ level: 'info', data: { a: 1, b: [2, 3] } }, 10);
    origins.seen({ level: 'info', data: { a: 1, b: [2, 3] } }, 11);
    origins.seen({ level: 'info', logger: 'db', data: 'x' }, 12);
    assert.equal(origins.take({ data: 'x', logger: 'db', level: 'info' }), 12);
    assert.equal(origins.take({ data: { b: [2, 3], a: 1 }, level: 'info' }), 10);
    assert.equal(origins.take({ level: 'info', data: { a: 1, b: [2, 3] } }), 11);
    assert.equal(origins.take({ level: 'info', data: { a: 1, b: [2, 3] } }), undefined, 'each sighting taken once');
    assert.equal(origins.take({ level: 'warning', data: 'x', logger: 'db' }), undefined, 'the level is content');
    assert.equal(origins.size, 0);
  });

  it('forgets the oldest sightings past its cap, so undelivered messages cannot grow it', () => {
    const origins = new LogOrigins(3);
    for (let i = 0; i < 5; i++) origins.seen({ level: 'info', data: `m${i}` }, i);
    assert.equal(origins.size, 3);
    assert.equal(origins.take({ level: 'info', data: 'm0' }), undefined);
    assert.equal(origins.take({ level: 'info', data: 'm1' }), undefined);
    assert.equal(origins.take({ level: 'info', data: 'm4' }), 4);
  });
});
