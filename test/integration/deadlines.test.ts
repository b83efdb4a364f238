// Deadlines and cancellation: progress extends a deadline up to its hard cap; an agent's cancellation frees the
// queue slot or lease it waited for and settles its key by the idempotency rules (before dispatch the claim is
// deleted, after dispatch the outcome is unknown).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type BusProcess, LAB_SERVER, startBus, tempDir } from '../helpers/bus-process.js';
import { labStarts } from '../helpers/lab.js';
import { AgentClient, busErrorStrict, post } from '../helpers/mcp-http.js';
import { waitFor } from '../helpers/wait.js';

const dir = tempDir();
const labLog = join(dir, 'lab.log');
const yaml = `
store: { kind: sqlite, path: ${join(dir, 'state.db')} }
logging: { level: warn }
agents: [{ id: a, token: "deadline-token-1" }, { id: b, token: "deadline-token-2" }]
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    env: { LAB_LOG: ${labLog} }
    timeoutMs: 400
    progressExtendsUpTo: 3
    tools:
      progress: { kind: read }
      slow: { kind: write, lease: ["s:{/tag}"], timeoutMs: 10000 }
`;

const starts = (tag: string) => labStarts(labLog, 'slow', tag).length;

/** Starts a tools/call in a session and returns a function that cancels it with notifications/cancelled. */
async function cancellableCall(client: AgentClient, id: number, args: Record<string, unknown>) {
  const pending = client.request('tools/call', { name: 'lab__slow', arguments: args }, id).catch((e: unknown) => e);
  const cancel = () =>
    post(
      client.url,
      client.token,
      { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: id, reason: 'test' } },
      client.headers(),
    );
  return { pending, cancel };
}

describe('deadlines and cancellation', () => {
  let bus: BusProcess;
  before(async () => {
    bus = await startBus(yaml, { cwd: dir });
  });
  after(async () => {
    await bus?.stop();
  });

  it('progress extends a deadline, but never past the hard cap', async () => {
    const a = new AgentClient(bus.url, 'deadline-token-1');
    // 6 steps of 150 ms = 900 ms: past the 400 ms timeout, within the 1200 ms cap, progress every 150 ms.
    const ok = await a.call('lab__progress', { steps: 6, interval_ms: 150 }, { progressToken: 'p' });
    assert.notEqual(ok.isError, true, JSON.stringify(ok));
    // 10 steps of 150 ms = 1500 ms: past the cap.
    const err = busErrorStrict(await a.call('lab__progress', { steps: 10, interval_ms: 150 }, { progressToken: 'q' }));
    assert.equal(err.category, 'timeout');
  });

  it('a write cancelled while waiting for its lease never ran: the claim is deleted and the same key runs later', async () => {
    const a = new AgentClient(bus.url, 'deadline-token-1');
    const b = new AgentClient(bus.url, 'deadline-token-2');
    await b.initialize();
    const holder = a.call('lab__slow', { ms: 800, tag: 'held', idempotency_key: 'holder-key-0001' });
    await waitFor(() => starts('held') === 1, 3000, 'holder started');
    const waiter = await cancellableCall(b, 9001, { ms: 10, tag: 'held', idempotency_key: 'waiter-key-0001' });
    await new Promise((r) => setTimeout(r, 100));
    await waiter.cancel();
    await waiter.pending;
    await holder;
    assert.equal(starts('held'), 1, 'the cancelled waiter never reached the upstream');
    const retry = await b.call('lab__slow', { ms: 10, tag: 'held', idempotency_key: 'waiter-key-0001' });
    assert.notEqual(retry.isError, true, JSON.stringify(retry));
    assert.equal(retry._meta?.['toolbus/replayed'], undefined, 'it ran, it was not replayed');
    assert.equal(starts('held'), 2);
  });

  it('a write cancelled after it was sent is cancelled upstream, and its key becomes unknown', async () => {
    const b = new AgentClient(bus.url, 'deadline-token-2');
    await b.initialize();
    const call = await cancellableCall(b, 9002, { ms: 3000, tag: 'sent', idempotency_key: 'sent-key-0001' });
    await waitFor(() => starts('sent') === 1, 3000, 'write started');
    await call.cancel();
    await call.pending;
    await waitFor(
      () => readFileSync(labLog, 'utf8').includes('"phase":"cancelled"'),
      3000,
      'cancel reached the upstream',
    );
    const retry = busErrorStrict(
      await b.call('lab__slow', { ms: 3000, tag: 'sent', idempotency_key: 'sent-key-0001' }),
    );
    assert.equal(retry.category, 'outcome_unknown');
    // The lease was released: another write to the same entity goes at once.
    const next = await b.call('lab__slow', { ms: 10, tag: 'sent', idempotency_key: 'sent-key-0002' });
    assert.notEqual(next.isError, true);
  });
});
