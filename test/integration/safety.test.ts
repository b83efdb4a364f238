// Safe concurrent writes, end to end: validation before anything, exactly one write per key, leases that serialize
// one entity and leave the rest parallel, honest lease timeouts and fencing tokens. Real bus, real lab upstream.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type BusProcess, LAB_SERVER, startBus, TICKETS_SERVER, tempDir } from '../helpers/bus-process.js';
import { readLabLog } from '../helpers/lab.js';
import { AgentClient, busErrorStrict, type ToolCallResult } from '../helpers/mcp-http.js';
import { waitFor } from '../helpers/wait.js';

const dir = tempDir();
const labLog = join(dir, 'lab.log');
const labState = join(dir, 'counters.json');

const yaml = `
store: { kind: sqlite, path: ${join(dir, 'state.db')} }
idempotency: { joinTimeoutMs: 300 }
leases: { ttlMs: 5000, lockDelayMs: 400 }
agents:
  - { id: a1, token: "token-a1-xxxx", tenant: t }
  - { id: a2, token: "token-a2-xxxx", tenant: t }
upstreams:
  tickets:
    command: ${process.execPath}
    args: [${TICKETS_SERVER}]
    env: { TICKETS_API_TOKEN: "tok", TICKETS_DB: ${join(dir, 'tickets.db')} }
    maxConcurrency: 64
    tools:
      create_ticket:
        kind: write
        lease: []
        schema: { properties: { title: { maxLength: 40 } }, additionalProperties: false }
      list_tickets: { kind: read }
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    env: { LAB_LOG: ${labLog}, LAB_STATE: ${labState} }
    maxConcurrency: 64
    leaseWaitMs: 600
    tools:
      counter_incr: { kind: write, idempotency: optional, lease: ["counter:{/entity}"] }
      counter_get: { kind: read }
      echo_args: { kind: write, idempotency: optional, lease: [] }
      get_meta: { kind: write, idempotency: off, lease: ["meta"] }
      slow: { kind: write, idempotency: required, lease: ["slow:{/tag}"] }
      hang: { kind: write, idempotency: required, lease: ["hang"], timeoutMs: 500 }
`;

// The same counter tool exposed twice: once leased, once explicitly without a lease, to prove what the lease does.
const unleasedYaml = (d: string) => `
store: { kind: memory }
agents: [{ id: a1, token: "token-a1-xxxx" }]
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    env: { LAB_STATE: ${join(d, 'counters.json')} }
    maxConcurrency: 64
    tools:
      counter_incr: { kind: write, idempotency: off, lease: [] }
      counter_get: { kind: read }
`;

let bus: BusProcess;
const agent = (n = 1) => new AgentClient(bus.url, `token-a${n}-xxxx`);
const labCalls = (tool: string) => readLabLog(labLog).filter((e) => e.tool === tool);

async function incrementMany(client: () => AgentClient, tool: string, entity: string, agents: number, each: number) {
  await Promise.all(
    Array.from({ length: agents }, async () => {
      const a = client();
      for (let i = 0; i < each; i++) {
        const r = await a.call(tool, { entity, delay_ms: 3 });
        assert.notEqual(r.isError, true, JSON.stringify(r));
      }
    }),
  );
}

describe('safety pipeline', () => {
  before(async () => {
    bus = await startBus(yaml, { cwd: dir });
  });
  after(async () => {
    await bus?.stop();
  });

  it('validates before anything: names field and rule, the upstream sees nothing, no key is claimed', async () => {
    const a = agent();
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ title: 7, priority: 'low', idempotency_key: 'val-key-0001' }, /title: must be string \(rule: type\)/],
      [{ priority: 'low', idempotency_key: 'val-key-0001' }, /title: is required \(rule: required\)/],
      [
        { title: 'x', priority: 'whenever', idempotency_key: 'val-key-0001' },
        /priority: must be one of .* \(rule: enum\)/,
      ],
      [
        { title: 'x'.repeat(41), priority: 'low', idempotency_key: 'val-key-0001' },
        /title: .*40.* \(rule: maxLength\)/,
      ],
      [
        { title: 'x', priority: 'low', colour: 'red', idempotency_key: 'val-key-0001' },
        /colour: is not allowed \(rule: additionalProperties: false\)/,
      ],
      [{ title: 'x', priority: 'low' }, /idempotency_key: is required/],
      [{ title: 'x', priority: 'low', idempotency_key: 'short' }, /idempotency_key: must be 8-255/],
    ];
    for (const [args, re] of cases) {
      const err = busErrorStrict(await a.call('tickets__create_ticket', args));
      assert.equal(err.category, 'validation');
      assert.equal(err.retryable, false);
      assert.match(err.message, re);
    }
    // The corrected call may reuse the key: validation claimed nothing.
    const ok = await a.call('tickets__create_ticket', {
      title: 'valid now',
      priority: 'low',
      idempotency_key: 'val-key-0001',
    });
    assert.notEqual(ok.isError, true, JSON.stringify(ok));
    assert.equal(ok._meta?.['toolbus/replayed'], undefined);
    const list = await a.call('tickets__list_tickets', {});
    const titles = JSON.stringify(list);
    assert.ok(titles.includes('valid now'));
    assert.ok(!titles.includes('"x"'));
  });

  it('writes exactly once per key under 50 concurrent identical calls', async () => {
    const args = {
      title: 'Fifty at once',
      priority: 'high',
      source_issue: 'RACE-50',
      idempotency_key: 'race-key-50-0001',
    };
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => agent((i % 2) + 1).call('tickets__create_ticket', args)),
    );
    for (const r of results) assert.notEqual(r.isError, true, JSON.stringify(r));
    const ids = new Set(results.map((r) => (r.structuredContent as { id: number }).id));
    assert.equal(ids.size, 1);
    const fresh = results.filter((r) => r._meta?.['toolbus/replayed'] !== true);
    assert.equal(fresh.length, 1, 'exactly one result is the original; 49 are replayed or joined');
    const listed = await agent().call('tickets__list_tickets', { source_issue: 'RACE-50' });
    const matches = JSON.stringify(listed).match(/Fifty at once/g) ?? [];
    assert.ok(matches.length >= 1);
    const rows = (listed.structuredContent as { tickets?: unknown[] } | undefined)?.tickets;
    if (rows) assert.equal(rows.length, 1);
  });

  it('refuses the same key with other arguments and runs nothing', async () => {
    const a = agent();
    const first = await a.call('tickets__create_ticket', {
      title: 'one',
      priority: 'low',
      idempotency_key: 'mismatch-key-1',
    });
    assert.notEqual(first.isError, true);
    const err = busErrorStrict(
      await a.call('tickets__create_ticket', { title: 'two', priority: 'low', idempotency_key: 'mismatch-key-1' }),
    );
    assert.equal(err.category, 'idempotency_mismatch');
    assert.equal(err.retryable, false);
    assert.ok(!JSON.stringify(await a.call('tickets__list_tickets', {})).includes('"two"'));
    const replay = await a.call('tickets__create_ticket', {
      title: 'one',
      priority: 'low',
      idempotency_key: 'mismatch-key-1',
    });
    assert.equal(replay._meta?.['toolbus/replayed'], true);
    assert.deepEqual(replay.structuredContent, first.structuredContent);
  });

  it('serializes writes to one entity: 8 agents x 25 read-modify-write increments end at exactly 200', async () => {
    await incrementMany(() => agent(), 'lab__counter_incr', 'hot', 8, 25);
    const got = await agent().call('lab__counter_get', { entity: 'hot' });
    assert.equal((got.structuredContent as { value: number }).value, 200);
  });

  it('without a lease the same run loses updates (so the lease is what protects)', async () => {
    const d = tempDir();
    const other = await startBus(unleasedYaml(d), { cwd: d });
    try {
      const client = () => new AgentClient(other.url, 'token-a1-xxxx');
      await incrementMany(client, 'lab__counter_incr', 'hot', 8, 25);
      const got = await client().call('lab__counter_get', { entity: 'hot' });
      assert.ok((got.structuredContent as { value: number }).value < 200, 'expected lost updates without a lease');
    } finally {
      await other.stop();
    }
  });

  it('runs writes to different entities in parallel, and reads never wait for a lease', async () => {
    const a = agent();
    const started = Date.now();
    const slowOne = a.call('lab__counter_incr', { entity: 'e0', delay_ms: 800 });
    await waitFor(
      () => labCalls('counter_incr').some((c) => c.phase === 'start' && JSON.stringify(c).includes('"e0"')),
      3000,
    );
    const readStarted = Date.now();
    const read = await a.call('lab__counter_get', { entity: 'e0' });
    assert.notEqual(read.isError, true);
    assert.ok(Date.now() - readStarted < 600, 'a read waited behind a writer');
    const rest = await Promise.all(
      Array.from({ length: 7 }, (_, i) => a.call('lab__counter_incr', { entity: `e${i + 1}`, delay_ms: 800 })),
    );
    await slowOne;
    for (const r of rest) assert.notEqual(r.isError, true);
    // Eight 800 ms writes on eight entities: serial would take 6.4 s.
    assert.ok(Date.now() - started < 3500, `took ${Date.now() - started} ms`);
  });

  it('forwards monotonically increasing fencing tokens in _meta', async () => {
    const a = agent();
    const tokens: number[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await a.call('lab__get_meta', {});
      const meta = (r.structuredContent ?? JSON.parse(r.content?.[0]?.text ?? '{}')) as Record<string, unknown>;
      const flat = JSON.stringify(meta);
      const m = /"toolbus\/fencing-token":(\d+)/.exec(flat);
      assert.ok(m, flat);
      tokens.push(Number(m[1]));
    }
    for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i]! > tokens[i - 1]!, tokens.join(','));
  });

  it('strips idempotency_key before forwarding', async () => {
    const r = await agent().call('lab__echo_args', { hello: 'world', idempotency_key: 'strip-key-0001' });
    assert.ok(!JSON.stringify(r.structuredContent ?? r.content).includes('strip-key-0001'));
    assert.ok(JSON.stringify(r).includes('world'));
  });

  it('joins a running call with the same key, then says in_progress past joinTimeoutMs', async () => {
    const a = agent();
    const args = { ms: 1200, tag: 'join', idempotency_key: 'join-key-0001' };
    const first = a.call('lab__slow', args);
    await waitFor(() => labCalls('slow').some((c) => c.phase === 'start'), 3000);
    const err = busErrorStrict(await agent(2).call('lab__slow', args));
    assert.equal(err.category, 'in_progress');
    assert.equal(err.retryable, true);
    assert.ok((err.retryAfterMs ?? 0) > 0);
    const done = await first;
    assert.notEqual(done.isError, true);
    const again = await agent(2).call('lab__slow', args);
    assert.equal(again._meta?.['toolbus/replayed'], true);
    assert.equal(labCalls('slow').filter((c) => c.phase === 'start').length, 1);
  });

  it('times out a hanging holder: cancels upstream, key becomes unknown, next writer waits the lock-delay; waiters get conflict', async () => {
    const a = agent();
    const held = busErrorStrict(await a.call('lab__hang', { idempotency_key: 'hang-key-0001' }));
    const released = Date.now();
    assert.equal(held.category, 'outcome_unknown');
    await waitFor(() => labCalls('hang').some((c) => c.phase === 'cancelled'), 3000, 'cancellation at the upstream');
    // The retry of the same key is not run again: its outcome is unknown.
    const retry = busErrorStrict(await a.call('lab__hang', { idempotency_key: 'hang-key-0001' }));
    assert.equal(retry.category, 'outcome_unknown');
    assert.equal(retry.retryable, false);
    // The next writer gets the scope only after the lock-delay (400 ms); a third one, queued behind it past its own
    // deadline (500 ms), gets conflict with a retryAfterMs.
    const next = a.call('lab__hang', { idempotency_key: 'hang-key-0002' });
    const waiter = busErrorStrict(await agent(2).call('lab__hang', { idempotency_key: 'hang-key-0003' }));
    assert.equal(waiter.category, 'conflict');
    assert.equal(waiter.retryable, true);
    assert.ok((waiter.retryAfterMs ?? 0) > 0);
    busErrorStrict(await next);
    const starts = labCalls('hang').filter((c) => c.phase === 'start');
    assert.equal(starts.length, 2, 'the third writer never reached the upstream');
    assert.ok(starts[1]!.t - released >= 300, `second holder started ${starts[1]!.t - released} ms after the release`);
  });
});

export type { ToolCallResult };
