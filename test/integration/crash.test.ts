// Idempotency records survive a bus killed with SIGKILL: a completed key is replayed after restart, a key that was in
// flight becomes outcome_unknown (or re-runs for a tool configured onUnknown: retry), never a silent second write.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { LAB_SERVER, startBusWithConfig, tempDir } from '../helpers/bus-process.js';
import { labStarts } from '../helpers/lab.js';
import { AgentClient, busErrorStrict } from '../helpers/mcp-http.js';
import { waitFor } from '../helpers/wait.js';

const dir = tempDir();
const labLog = join(dir, 'lab.log');
const config = join(dir, 'toolbus.yaml');
writeFileSync(
  config,
  `
store: { kind: sqlite, path: ${join(dir, 'state.db')} }
agents: [{ id: a, token: "crash-token-1" }]
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    env: { LAB_LOG: ${labLog}, LAB_STATE: ${join(dir, 'counters.json')} }
    tools:
      counter_incr: { kind: write, lease: ["c:{/entity}"] }
      slow: { kind: write, lease: ["s:{/tag}"] }
      counter_get: { kind: read }
  labretry:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    env: { LAB_LOG: ${labLog} }
    tools:
      slow: { kind: write, lease: ["s:{/tag}"], onUnknown: retry }
`,
);

const starts = (tool: string, tag: string) => labStarts(labLog, tool, tag).length;

describe('crash safety (SQLite store, SIGKILL)', () => {
  it('replays a completed key after the bus is killed and restarted', async () => {
    let bus = await startBusWithConfig(config, { cwd: dir });
    try {
      const a = new AgentClient(bus.url, 'crash-token-1');
      const first = await a.call('lab__counter_incr', { entity: 'k1', idempotency_key: 'crash-done-0001' });
      assert.notEqual(first.isError, true, JSON.stringify(first));
      await bus.kill('SIGKILL');
      bus = await startBusWithConfig(config, { cwd: dir });
      const b = new AgentClient(bus.url, 'crash-token-1');
      const again = await b.call('lab__counter_incr', { entity: 'k1', idempotency_key: 'crash-done-0001' });
      assert.equal(again._meta?.['toolbus/replayed'], true);
      assert.deepEqual(again.structuredContent, first.structuredContent);
      const value = (await b.call('lab__counter_get', { entity: 'k1' })).structuredContent as { value: number };
      assert.equal(value.value, 1, 'the write ran once');
    } finally {
      await bus.stop();
    }
  });

  it('answers outcome_unknown for a key that was in flight when the bus died; onUnknown: retry re-runs it', async () => {
    let bus = await startBusWithConfig(config, { cwd: dir });
    try {
      const a = new AgentClient(bus.url, 'crash-token-1');
      void a.call('lab__slow', { ms: 4000, tag: 'inflight-a', idempotency_key: 'crash-fly-0001' }).catch(() => {});
      void a.call('labretry__slow', { ms: 4000, tag: 'inflight-b', idempotency_key: 'crash-fly-0002' }).catch(() => {});
      await waitFor(
        () => starts('slow', 'inflight-a') === 1 && starts('slow', 'inflight-b') === 1,
        5000,
        'both writes reached the upstream',
      );
      await bus.kill('SIGKILL');
      bus = await startBusWithConfig(config, { cwd: dir });
      const b = new AgentClient(bus.url, 'crash-token-1');
      const err = busErrorStrict(
        await b.call('lab__slow', { ms: 4000, tag: 'inflight-a', idempotency_key: 'crash-fly-0001' }),
      );
      assert.equal(err.category, 'outcome_unknown');
      assert.equal(err.retryable, false);
      assert.equal(starts('slow', 'inflight-a'), 1, 'never a silent second write');
      const rerun = await b.call('labretry__slow', { ms: 50, tag: 'inflight-b', idempotency_key: 'crash-fly-0002' });
      // Other arguments (ms) would be a mismatch; the retry must use the same ones.
      assert.equal(busErrorStrict(rerun).category, 'idempotency_mismatch');
      const same = await b.call('labretry__slow', { ms: 4000, tag: 'inflight-b', idempotency_key: 'crash-fly-0002' });
      assert.notEqual(same.isError, true, JSON.stringify(same));
      assert.equal(starts('slow', 'inflight-b'), 2, 'onUnknown: retry runs the write again');
    } finally {
      await bus.stop();
    }
  });

  it('internal: a stored record the bus cannot read becomes a retryable internal error, and nothing runs', async () => {
    let bus = await startBusWithConfig(config, { cwd: dir });
    try {
      const a = new AgentClient(bus.url, 'crash-token-1');
      const first = await a.call('lab__counter_incr', { entity: 'corrupt', idempotency_key: 'corrupt-key-0001' });
      assert.notEqual(first.isError, true);
      await bus.stop();
      // Damage the stored result the way a bad disk or a hand edit would.
      const db = new Database(join(dir, 'state.db'));
      const changed = db
        .prepare("UPDATE keys_v2 SET result = '{not json' WHERE scope LIKE '%corrupt-key-0001'")
        .run().changes;
      db.close();
      assert.equal(changed, 1);
      bus = await startBusWithConfig(config, { cwd: dir });
      const b = new AgentClient(bus.url, 'crash-token-1');
      const err = busErrorStrict(
        await b.call('lab__counter_incr', { entity: 'corrupt', idempotency_key: 'corrupt-key-0001' }),
      );
      assert.equal(err.category, 'internal');
      assert.equal(err.retryable, true);
      assert.ok(!err.message.includes('not json'), 'the local fault does not leak');
      const value = (await b.call('lab__counter_get', { entity: 'corrupt' })).structuredContent as { value: number };
      assert.equal(value.value, 1);
    } finally {
      await bus.stop();
    }
  });
});
