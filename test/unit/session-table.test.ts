// The agent session table on an injected clock: the per-agent cap closes the least recently used idle session (and
// refuses when none is idle), another agent's sessions are never touched, and idle sessions are swept exactly when
// their time is up.
import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { it } from 'node:test';
import { SessionTable } from '../../src/agents/session-table.js';
import type { AgentIdentity } from '../../src/pipeline/context.js';

const agent = (id: string): AgentIdentity => ({ id, tenant: 't', weight: 1, allows: () => true });

it('caps sessions per agent: the least recently used idle one goes, busy ones stay, other agents are untouched', () => {
  let now = 1000;
  const ended: string[] = [];
  const table = new SessionTable({ maxPerAgent: 2, idleMs: 60_000, now: () => now, onEnd: (s) => ended.push(s.id) });
  const a = agent('a');
  const b = agent('b');
  const a1 = table.open(a)!;
  now += 10;
  const a2 = table.open(a)!;
  const b1 = table.open(b)!;
  now += 10;
  table.lookup(a1.id, a); // a1 is now the most recently used
  const a3 = table.open(a)!;
  assert.deepEqual(ended, [a2.id]);
  assert.equal(table.countFor('a'), 2);
  assert.ok(table.lookup(b1.id, b));
  // Both of a's sessions busy: a new one is refused rather than cutting a call.
  a1.inflight.set(1, new AbortController());
  a3.streams.add({ end() {} } as unknown as ServerResponse);
  assert.equal(table.open(a), null);
  assert.equal(table.lookup(a1.id, b), undefined, "another agent's token cannot use the session");
});

it('sweeps a session exactly when it has been idle for idleMs, and never one with a call or a stream', () => {
  let now = 0;
  const table = new SessionTable({ maxPerAgent: 10, idleMs: 1000, now: () => now });
  const a = agent('a');
  const idle = table.open(a)!;
  const busy = table.open(a)!;
  busy.inflight.set(7, new AbortController());
  now = 999;
  assert.equal(table.sweep(), 0);
  now = 1001;
  assert.equal(table.sweep(), 1);
  assert.equal(table.lookup(idle.id, a), undefined);
  assert.ok(table.lookup(busy.id, a));
});
