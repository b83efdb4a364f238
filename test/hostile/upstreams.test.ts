// Hostile and faulty upstreams against the real bus process: an upstream that leaks its credential in every place
// and encoding, ships a catastrophic pattern and a self-referencing schema, answers with an oversized result, floods
// list_changed, or crashes right after its handshake. Each case checks that the bus stays alive, another agent is
// served, nothing leaks and nothing runs twice. DESIGN.md section 16, upstream side.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type BusProcess, CLI, HOSTILE_SERVER, LAB_SERVER, startBus, tempDir } from '../helpers/bus-process.js';
import { AgentClient, busErrorStrict, post } from '../helpers/mcp-http.js';
import { waitFor } from '../helpers/wait.js';

const SECRET = `hostile-Secret/${Math.random().toString(36).slice(2)}+"q"`;
const dir = tempDir();
const labLog = join(dir, 'lab.log');
const hostileLog = join(dir, 'hostile.log');
const crashLog = join(dir, 'crash.log');

function forms(secret: string): string[] {
  return [
    secret,
    JSON.stringify(secret).slice(1, -1),
    encodeURIComponent(secret),
    Buffer.from(secret).toString('base64').replace(/=+$/, ''),
    // the part of base64("user:" + secret) that depends only on the secret
    Buffer.from(`user:${secret}`).toString('base64').slice(8, 24),
  ];
}

function assertNoSecret(text: string, where: string): void {
  for (const f of forms(SECRET)) assert.ok(!text.includes(f), `${where} contains the secret in the form ${f}`);
}

const yaml = `
store: { kind: sqlite, path: ${join(dir, 'state.db')} }
logging: { level: debug }
limits: { maxUpstreamMessageBytes: 300000, catalogRefreshPerSecond: 4 }
agents:
  - { id: alice, token: "alice-token-123", tools: ["*"] }
  - { id: bob, token: "bob-token-12345", tools: ["*"] }
upstreams:
  hostile:
    command: ${process.execPath}
    args: [${HOSTILE_SERVER}]
    env: { HOSTILE_SECRET: "\${env:HOSTILE_SECRET}", HOSTILE_LOG: ${hostileLog} }
    maxConcurrency: 32
    tools:
      echo: { kind: read }
      leak: { kind: read }
      leak_error: { kind: read }
      evil_pattern: { kind: read }
      lookaround: { kind: read }
      big: { kind: read }
      storm: { kind: read }
      count_lists: { kind: read }
      slow_write: { kind: write, lease: ["w:{/id}"] }
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    env: { LAB_LOG: ${labLog} }
    tools:
      echo: { kind: read }
  crashy:
    command: ${process.execPath}
    args: [${HOSTILE_SERVER}]
    env: { HOSTILE_CRASH_AFTER_INIT: "1", HOSTILE_LOG: ${crashLog} }
    restart: { initialDelayMs: 200, maxDelayMs: 5000 }
  listcrash:
    command: ${process.execPath}
    args: [${HOSTILE_SERVER}]
    env: { HOSTILE_CRASH_ON_METHOD: resources/list }
    restart: { initialDelayMs: 100, maxDelayMs: 300 }
  absent:
    command: ${join(dir, 'no-such-command')}
    restart: { initialDelayMs: 5000, maxDelayMs: 10000 }
`;

let bus: BusProcess;
const alice = () => new AgentClient(bus.url, 'alice-token-123');
const bob = () => new AgentClient(bus.url, 'bob-token-12345');

/** An upstream's state as /readyz reports it. */
async function upstreamState(name: string): Promise<string | undefined> {
  const res = await fetch(bus.url.replace('/mcp', '/readyz'));
  return ((await res.json()) as { upstreams?: Record<string, string> }).upstreams?.[name];
}

async function otherAgentServed(): Promise<void> {
  const started = Date.now();
  const r = await bob().call('lab__echo', { text: 'bob here' });
  assert.equal(r.content?.[0]?.text, 'bob here', JSON.stringify(r));
  assert.ok(Date.now() - started < 2000, `bob waited ${Date.now() - started} ms`);
  assert.equal(bus.child.exitCode, null, 'the bus process is alive');
}

describe('hostile upstreams', () => {
  before(async () => {
    bus = await startBus(yaml, { cwd: dir, env: { HOSTILE_SECRET: SECRET } });
  });
  after(async () => {
    await bus?.stop();
  });

  it('a leaked credential never reaches an agent, in any form, in any place', async () => {
    const a = alice();
    await a.initialize();
    const seen: string[] = [];
    seen.push(JSON.stringify(await a.listTools()));
    // Results, structured content and progress notifications (over SSE, where progress is relayed).
    const sse = await fetch(bus.url, {
      method: 'POST',
      headers: {
        authorization: 'Bearer alice-token-123',
        'content-type': 'application/json',
        accept: 'text/event-stream, application/json',
        'mcp-session-id': a.sessionId!,
      },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'tools/call',
        params: { name: 'hostile__leak', arguments: {}, _meta: { progressToken: 'p1' } },
      }),
    });
    const sseText = await sse.text();
    assert.match(sseText, /notifications\/progress/);
    assert.match(sseText, /\[redacted\]/);
    seen.push(sseText);
    seen.push(JSON.stringify(await a.call('hostile__leak')));
    const err = await a.call('hostile__leak_error');
    assert.equal(busErrorStrict(err).category, 'upstream_error');
    seen.push(JSON.stringify(err));
    const resources = await a.request('resources/list');
    seen.push(JSON.stringify(resources));
    const uri = (resources.resources as { uri: string }[]).find((r) => r.uri.includes('mem://leak'))!.uri;
    seen.push(JSON.stringify(await a.request('resources/read', { uri })));
    seen.push(JSON.stringify(await a.request('prompts/list')));
    seen.push(JSON.stringify(await a.request('prompts/get', { name: 'hostile__leak' })));
    seen.push(
      JSON.stringify(
        await a.request('initialize', {
          protocolVersion: '2025-11-25',
          capabilities: {},
          clientInfo: { name: 't', version: '1' },
        }),
      ),
    );
    for (const [i, text] of seen.entries()) assertNoSecret(text, `reply ${i}`);
    assert.ok(seen.join('').includes('[redacted]'));
    // Nor in the bus's own log (debug level logs upstream stderr and errors).
    assertNoSecret(bus.stderr(), 'the bus log');
    await otherAgentServed();
  });

  it('a catastrophic pattern runs in linear time: the call is refused at once and nobody waits', async () => {
    const started = Date.now();
    const e = busErrorStrict(await alice().call('hostile__evil_pattern', { s: `${'a'.repeat(40)}!` }));
    assert.equal(e.category, 'validation');
    assert.match(e.message, /pattern/);
    assert.ok(Date.now() - started < 1000, `validation took ${Date.now() - started} ms`);
    const ok = await alice().call('hostile__evil_pattern', { s: 'a'.repeat(40) });
    assert.equal(ok.isError, undefined);
    await otherAgentServed();
  });

  it('a pattern RE2 cannot run is not enforced (and check warns); a self-referencing schema hides the tool', async () => {
    const ok = await alice().call('hostile__lookaround', { s: 'anything' });
    assert.equal(ok.isError, undefined, 'the lookahead pattern was dropped, not run');
    const names = (await alice().listTools()).map((t) => t.name);
    assert.ok(!names.includes('hostile__ref_loop'));
    const e = busErrorStrict(await alice().call('hostile__ref_loop', {}));
    assert.equal(e.category, 'not_found');
    await otherAgentServed();
    // `toolbus check` says why, for the operator.
    const file = join(dir, 'check.yaml');
    writeFileSync(
      file,
      `store: { kind: memory }\nupstreams:\n  hostile:\n    command: ${process.execPath}\n    args: [${HOSTILE_SERVER}]\n`,
    );
    const check = spawnSync(process.execPath, [CLI, 'check', '--config', file], { encoding: 'utf8', timeout: 30_000 });
    assert.match(check.stdout + check.stderr, /cannot run in linear time/);
    assert.match(check.stdout + check.stderr, /recurses without end/);
  });

  it('an oversized result fails that call alone; the shared connection and a write in flight are untouched', async () => {
    const pidBefore = readFileSync(hostileLog, 'utf8')
      .split('\n')
      .filter((l) => l.includes('"start"')).length;
    const write = alice().call('hostile__slow_write', {
      id: 'beside-big',
      ms: 800,
      idempotency_key: 'beside-big-0001',
    });
    await waitFor(() => readFileSync(hostileLog, 'utf8').includes('beside-big'), 5000);
    const big = busErrorStrict(await bob().call('hostile__big', { kb: 600 }));
    assert.equal(big.category, 'upstream_error');
    assert.equal(big.code, 'result_too_large');
    const w = await write;
    assert.equal(w.isError, undefined, JSON.stringify(w));
    assert.equal(w.content?.[0]?.text, 'wrote beside-big');
    const starts = readFileSync(hostileLog, 'utf8')
      .split('\n')
      .filter((l) => l.includes('"start"')).length;
    assert.equal(starts, pidBefore, 'the upstream process was not restarted');
    const small = await bob().call('hostile__big', { kb: 10 });
    assert.equal(small.isError, undefined);
    await otherAgentServed();
  });

  it('a storm of 20,000 list_changed notifications costs a handful of tools/list requests', async () => {
    const before = Number((await alice().call('hostile__count_lists')).structuredContent?.lists);
    const r = await alice().call('hostile__storm', { n: 20_000 });
    assert.equal(r.isError, undefined);
    await otherAgentServed();
    await new Promise((res) => setTimeout(res, 1500));
    const afterCount = Number((await alice().call('hostile__count_lists')).structuredContent?.lists);
    const refreshes = afterCount - before;
    assert.ok(refreshes >= 1, 'the catalog was refreshed');
    assert.ok(refreshes <= 10, `${refreshes} tools/list requests for 20,000 notifications`);
  });

  it('an upstream that crashes right after its handshake backs off instead of restarting every few hundred ms', async () => {
    await waitFor(
      () =>
        readFileSync(crashLog, 'utf8')
          .split('\n')
          .filter((l) => l.includes('"start"')).length >= 5,
      20_000,
      'five starts',
    );
    const starts = readFileSync(crashLog, 'utf8')
      .split('\n')
      .filter((l) => l.includes('"start"'))
      .map((l) => (JSON.parse(l) as { t: number }).t);
    const gaps = starts.slice(1).map((t, i) => t - starts[i]!);
    // 200 ms doubling: the fourth gap is well over a second (a reset backoff would keep it near 200-300 ms).
    assert.ok(gaps[3]! > 1000, `gaps between starts: ${gaps.join(', ')} ms`);
    await otherAgentServed();
  });

  it('an upstream that dies while answering a listing hides only its own entries, never fails the listing', async () => {
    // listcrash exits on resources/list with the request sent: the bus loses the connection under it (crashy, which
    // dies 20 ms after each handshake, could do the same by chance). The others' resources are still listed.
    for (let i = 0; i < 3; i++) {
      await waitFor(async () => (await upstreamState('listcrash')) === 'ready', 10_000, 'listcrash up again');
      const list = await alice().request('resources/list');
      const uris = (list.resources as { uri: string }[]).map((r) => r.uri);
      assert.ok(
        uris.some((u) => u.includes('hostile') && u.includes('mem://leak')),
        JSON.stringify(uris),
      );
      assert.ok(!uris.some((u) => u.includes('listcrash')), 'the dead upstream listed nothing');
    }
    // A read relayed to an upstream that is down is -32000 with when to retry, not an internal error.
    await assert.rejects(alice().request('resources/read', { uri: 'toolbus://absent/mem://x' }), (err: unknown) => {
      const rpc = (err as { rpc?: { code: number; data?: { retryAfterMs?: number } } }).rpc;
      assert.equal(rpc?.code, -32000, JSON.stringify(rpc));
      assert.ok((rpc?.data?.retryAfterMs ?? 0) > 0, JSON.stringify(rpc));
      return true;
    });
    await otherAgentServed();
  });

  it('tools of an upstream that is down are upstream_unavailable (retryable), not not_found', async () => {
    const e = busErrorStrict(await alice().call('absent__anything', {}));
    assert.equal(e.category, 'upstream_unavailable');
    assert.equal(e.retryable, true);
    assert.ok((e.retryAfterMs ?? 0) > 0);
    const unknown = busErrorStrict(await alice().call('nosuchupstream__x', {}));
    assert.equal(unknown.category, 'not_found');
  });

  it('an agent cancelling its call is not logged as an internal error', async () => {
    // The first write holds the lease on `to-cancel` for 2 s.
    const holder = post(bus.url, 'alice-token-123', {
      jsonrpc: '2.0',
      id: 99,
      method: 'tools/call',
      params: {
        name: 'hostile__slow_write',
        arguments: { id: 'to-cancel', ms: 2000, idempotency_key: 'cancel-me-0001' },
      },
    });
    await waitFor(() => readFileSync(hostileLog, 'utf8').includes('to-cancel'), 5000);
    const ctl = new AbortController();
    const pending = fetch(bus.url, {
      method: 'POST',
      headers: {
        authorization: 'Bearer alice-token-123',
        'content-type': 'application/json',
        accept: 'application/json',
      },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 100,
        method: 'tools/call',
        // Queued behind the lease held above, then the agent goes away.
        params: {
          name: 'hostile__slow_write',
          arguments: { id: 'to-cancel', ms: 10, idempotency_key: 'cancel-me-0002' },
        },
      }),
      signal: ctl.signal,
    }).catch(() => null);
    await new Promise((r) => setTimeout(r, 300));
    ctl.abort();
    await pending;
    const held = await holder;
    assert.equal((held.body as { result: Record<string, unknown> }).result.isError, undefined);
    assert.ok(!/internal error in a call/.test(bus.stderr()), 'no internal error logged');
    const metrics = await (await fetch(new URL('/metrics', bus.url))).text();
    assert.match(metrics, /toolbus_calls_total\{tool="hostile__slow_write",outcome="timeout"\} 1/);
  });
});
