// Idempotency records survive a bus killed with SIGKILL: a completed key is replayed after restart, a key that was in
// flight becomes outcome_unknown (or re-runs for a tool configured onUnknown: retry), never a silent second write.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { LAB_SERVER, startBusWithConfig, tempDir } from '../helpers/bus-process.js';
import { AgentClient, busErrorStrict } from '../helpers/mcp-http.js';
import { waitFor } from '../helpers/wait.js';
import { writeFileSync } from 'node:fs';

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

const starts = (tool: string, tag: string) =>
  existsSync(labLog)
    ? readFileSync(labLog, 'utf8')
        .split('\n')
        .filter((l) => l.includes(`"tool":"${tool}"`) && l.includes('"phase":"start"') && l.includes(tag)).length
    : 0;

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
      await waitFor(() => starts('slow', 'inflight-a') === 1 && starts('slow', 'inflight-b') === 1, 5000, 'both writes reached the upstream');
      await bus.kill('SIGKILL');
      bus = await startBusWithConfig(config, { cwd: dir });
      const b = new AgentClient(bus.url, 'crash-token-1');
      const err = busErrorStrict(await b.call('lab__slow', { ms: 4000, tag: 'inflight-a', idempotency_key: 'crash-fly-0001' }));
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
});
