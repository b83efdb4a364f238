// What the bus reads from an HTTP upstream's response stream before the SDK does: the upstream's requests, noted by
// id; its log messages, taken out and given to the call whose stream carried them; and everything else handed on as
// the same SSE events, however the bytes were cut.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import fc from 'fast-check';
import { watchSseStream } from '../../src/upstreams/server-requests.js';

const log = { jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'é started' } };
const elicit = { jsonrpc: '2.0', id: 7, method: 'elicitation/create', params: { message: 'name?' } };
const progress = { jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: 't', progress: 1 } };
const result = { jsonrpc: '2.0', id: 1, result: { content: [{ type: 'text', text: 'line 1\nline 2' }] } };
const stream = (eol: string) =>
  [
    `: keep-alive${eol}${eol}`,
    `retry: 500${eol}${eol}`,
    `id: e1${eol}event: message${eol}data: ${JSON.stringify(log)}${eol}${eol}`,
    `event: message${eol}data: ${JSON.stringify(elicit)}${eol}${eol}`,
    `data: ${JSON.stringify(progress)}${eol}${eol}`,
    // A log event of another type, and one that is not JSON-RPC 2.0: not the SDK's to deliver, nor ours to take.
    `event: other${eol}data: ${JSON.stringify(log)}${eol}${eol}`,
    `data: ${JSON.stringify({ ...log, jsonrpc: '1.0' })}${eol}${eol}`,
    `id: e2${eol}data: {"jsonrpc":"2.0",${eol}data: "id":1,"result":{}}${eol}${eol}`,
    `data: ${JSON.stringify(result)}${eol}${eol}`,
    // After a final CR nobody can tell yet whether LF follows: a comment ends the stream here, so every event is whole.
    `: end${eol}${eol}`,
  ].join('');

function cut(bytes: Uint8Array, at: number[]): Uint8Array[] {
  const points = [...new Set(at.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let from = 0;
  for (const to of [...points, bytes.length]) {
    chunks.push(bytes.subarray(from, to));
    from = to;
  }
  return chunks;
}

/** Feeds the chunks through the watcher; returns what it noted and took, and the events the SDK would parse. */
function run(chunks: Uint8Array[], takeLogs: boolean) {
  const requests: string[] = [];
  const logs: Record<string, unknown>[] = [];
  const watch = watchSseStream({
    onRequest: (id) => requests.push(id),
    onLog: (params) => {
      logs.push(params);
      return takeLogs;
    },
  });
  const events: EventSourceMessage[] = [];
  const retries: number[] = [];
  const sdk = createParser({ onEvent: (e) => events.push(e), onRetry: (ms) => retries.push(ms) });
  const decoder = new TextDecoder();
  for (const c of chunks) {
    const rest = watch(c);
    if (rest) sdk.feed(decoder.decode(rest, { stream: true }));
  }
  return { requests, logs, events, retries };
}

/** The messages the SDK would deliver: events with data (it records an id-only event's id and skips it). */
const data = (events: EventSourceMessage[]) =>
  events.filter((e) => e.data !== '').map((e) => JSON.parse(e.data) as Record<string, unknown>);

describe('watchSseStream', () => {
  it('takes the log messages, notes requests by id, and hands every other event on intact, however cut', () => {
    fc.assert(
      fc.property(fc.constantFrom('\n', '\r\n', '\r'), fc.array(fc.nat(), { maxLength: 12 }), (eol, at) => {
        const { requests, logs, events, retries } = run(cut(new TextEncoder().encode(stream(eol)), at), true);
        assert.deepEqual(requests, ['7']);
        assert.deepEqual(logs, [log.params]);
        assert.deepEqual(data(events), [
          elicit,
          progress,
          log,
          { ...log, jsonrpc: '1.0' },
          { jsonrpc: '2.0', id: 1, result: {} },
          result,
        ]);
        assert.deepEqual(
          events.map((e) => [e.id, e.event]),
          [
            ['e1', undefined], // the taken log message's id, kept for resumption
            [undefined, 'message'],
            [undefined, undefined],
            [undefined, 'other'],
            [undefined, undefined],
            ['e2', undefined],
            [undefined, undefined],
          ],
        );
        assert.deepEqual(retries, [500]);
      }),
    );
  });

  it('leaves a log message in the stream when nobody took it (its call had settled)', () => {
    const { logs, events } = run([new TextEncoder().encode(stream('\n'))], false);
    assert.equal(logs.length, 1);
    assert.deepEqual(data(events)[0], log);
    assert.equal(events[0]!.id, 'e1');
  });

  it('hands on an event whose data is not JSON as it came', () => {
    const { events, requests } = run([new TextEncoder().encode('data: {"method": oops\n\n')], true);
    assert.deepEqual(
      events.map((e) => e.data),
      ['{"method": oops'],
    );
    assert.deepEqual(requests, []);
  });
});
