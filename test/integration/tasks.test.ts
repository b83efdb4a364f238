// Tasks (2025-11-25) through the real bus, against a stdio upstream built on the official v1 SDK's task support: a
// task-required tool runs as a task when the agent asks for one (the `task` parameter is forwarded); a keyed write
// that became a task replays the same task handle under its key, never a second task; tasks/get, tasks/result and
// tasks/list are relayed, with ids namespaced on /mcp and the upstream's own on /mcp/{upstream}; another agent cannot
// read the task.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type BusProcess, ROOT, startBus } from '../helpers/bus-process.js';
import { AgentClient, busErrorStrict, type ToolCallResult } from '../helpers/mcp-http.js';
import { waitFor } from '../helpers/wait.js';

const TASK_SERVER = join(ROOT, 'dist/test/fixtures/task-server.js');
let bus: BusProcess;

type Task = { taskId: string; status: string };

describe('tasks through the bus', () => {
  before(async () => {
    bus = await startBus(`
store: { kind: memory }
agents:
  - { id: alice, token: "alice-token-1" }
  - { id: bob, token: "bob-token-123" }
upstreams:
  jobs:
    command: ${process.execPath}
    args: [${TASK_SERVER}]
    tools:
      slow_compute: { lease: [] }
      created: { kind: read }
`);
  });
  after(async () => {
    await bus?.stop();
  });

  it('a keyed write that became a task replays the same task handle; its result is relayed on /mcp', async () => {
    const alice = new AgentClient(bus.url, 'alice-token-1');
    const bob = new AgentClient(bus.url, 'bob-token-123');
    const start = () =>
      alice.request('tools/call', {
        name: 'jobs__slow_compute',
        arguments: { ms: 300, label: 'first', idempotency_key: 'task-write-0001' },
        task: { ttl: 60_000 },
      });
    const first = await start();
    const task = first.task as Task;
    assert.match(task.taskId, /^jobs__/);
    const again = await start();
    assert.equal((again.task as Task).taskId, task.taskId);
    assert.equal((again._meta as Record<string, unknown>)['toolbus/replayed'], true);
    const created = (await alice.call('jobs__created')).content?.[0]?.text;
    assert.equal(created, '1', 'one task upstream, whatever the retries');

    await assert.rejects(bob.request('tasks/get', { taskId: task.taskId }), (e: { rpc?: { code: number } }) => {
      assert.equal(e.rpc?.code, -32602);
      return true;
    });
    await waitFor(
      async () => ((await alice.request('tasks/get', { taskId: task.taskId })) as Task).status === 'completed',
      5000,
    );
    const result = await alice.request('tasks/result', { taskId: task.taskId });
    assert.equal((result.content as { text: string }[])[0]!.text, 'computed first');
    const listed = (await alice.request('tasks/list')).tasks as Task[];
    assert.ok(listed.some((t) => t.taskId === task.taskId));
    const bobs = (await bob.request('tasks/list')).tasks as Task[];
    assert.ok(!bobs.some((t) => t.taskId === task.taskId), 'another agent does not see it listed');
  });

  it('a task-required tool called without params.task is a validation error, and its key stays unused', async () => {
    const alice = new AgentClient(bus.url, 'alice-token-1');
    const args = { ms: 0, label: 'late', idempotency_key: 'task-write-0003' };
    const refused = (await alice.request('tools/call', {
      name: 'jobs__slow_compute',
      arguments: args,
    })) as ToolCallResult;
    const err = busErrorStrict(refused);
    assert.equal(err.category, 'validation');
    assert.equal(err.code, 'task_required');
    const r = await alice.request('tools/call', { name: 'jobs__slow_compute', arguments: args, task: { ttl: 60_000 } });
    assert.match((r.task as Task).taskId, /^jobs__/, 'the same key now starts the task');
  });

  it("on /mcp/{upstream} task ids are the upstream's own", async () => {
    const alice = new AgentClient(`${bus.url}/jobs`, 'alice-token-1');
    const r = await alice.request('tools/call', {
      name: 'slow_compute',
      arguments: { ms: 0, label: 'own', idempotency_key: 'task-write-0002' },
      task: { ttl: 60_000 },
    });
    const task = r.task as Task;
    assert.doesNotMatch(task.taskId, /__/);
    await waitFor(
      async () => ((await alice.request('tasks/get', { taskId: task.taskId })) as Task).status === 'completed',
      5000,
    );
    const result = await alice.request('tasks/result', { taskId: task.taskId });
    assert.equal((result.content as { text: string }[])[0]!.text, 'computed own');
  });
});
