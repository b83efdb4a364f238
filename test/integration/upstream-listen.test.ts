// A 2026-07-28-only upstream announces list changes only to an open `subscriptions/listen` stream. toolbus's
// connection opens one when the upstream has no 2025 session, so its tools/list_changed still reaches the catalog;
// the stream is not a request in flight. Run against the reference server (official SDK v2) over real HTTP.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { HttpUpstreamSchema } from '../../src/config/schema.js';
import { UpstreamConnection } from '../../src/upstreams/connection.js';
import { startReference } from '../helpers/reference.js';
import { waitFor } from '../helpers/wait.js';

let ref: ChildProcess;
let url: string;

describe('a 2026-07-28-only upstream', () => {
  before(async () => {
    const started = await startReference();
    ref = started.child;
    url = started.url;
  });
  after(() => {
    ref?.kill();
  });

  it('has its list changes heard through subscriptions/listen, which is not a call in flight', async () => {
    const conn = new UpstreamConnection('ref', HttpUpstreamSchema.parse({ url, protocol: '2026-07-28' }));
    const heard: string[] = [];
    conn.on('notification', (method: string) => heard.push(method));
    try {
      await conn.start();
      assert.equal(conn.state, 'ready');
      await waitFor(() => heard.includes('notifications/subscriptions/acknowledged'), 5000, 'the listen stream');
      const r = await conn.request('tools/call', { name: 'test_trigger_tool_change', arguments: {} });
      assert.deepEqual(r.content, [{ type: 'text', text: 'Mutation triggered' }]);
      await waitFor(() => heard.includes('notifications/tools/list_changed'), 5000, 'tools/list_changed');
      assert.equal(conn.inFlight, 0);
    } finally {
      await conn.close();
    }
  });
});
