// Hostile agents against the real bus process: each case throws one hostile request (or a flood of them) at the
// front and checks that the bus is alive, that another agent is served within a bound, that nothing ran twice or
// reached the upstream when it should not have, and that nothing leaked. DESIGN.md section 16, request side.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type BusProcess, HOSTILE_SERVER, LAB_SERVER, startBus, tempDir } from '../helpers/bus-process.js';
import { AgentClient, busErrorStrict, post } from '../helpers/mcp-http.js';
import { waitFor } from '../helpers/wait.js';

const dir = tempDir();
const labLog = join(dir, 'lab.log');
const hostileLog = join(dir, 'hostile.log');
const ADMIN = 'admin-token-0123456789abcdef';

const yaml = `
store: { kind: sqlite, path: ${join(dir, 'state.db')} }
logging: { level: info }
server: { sessionIdleMs: 1500, adminToken: ${ADMIN} }
limits: { maxSessionsPerAgent: 4, maxResponseBytes: 50000, maxBatch: 16, headersTimeoutMs: 1000, maxArgumentDepth: 16 }
agents:
  - { id: mallory, token: "mallory-token-1", tools: ["lab__*", "hostile__*"] }
  - { id: empty, token: "empty-token-123", tools: [] }
  - { id: victim, token: "victim-token-12", tools: ["*"] }
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    env: { LAB_LOG: ${labLog} }
    maxConcurrency: 64
    circuitBreaker: { failures: 3, openMs: 5000 }
    tools:
      echo: { kind: read }
      echo_args: { kind: read }
      slow: { kind: read }
      counter_incr: { kind: write, lease: ["c:{/entity}"] }
  hostile:
    command: ${process.execPath}
    args: [${HOSTILE_SERVER}]
    env: { HOSTILE_LOG: ${hostileLog} }
    tools:
      numbers: { kind: read }
      echo: { kind: read }
`;

let bus: BusProcess;
const victim = () => new AgentClient(bus.url, 'victim-token-12');
const mallory = () => new AgentClient(bus.url, 'mallory-token-1');

/** The other agent is served, and quickly: the property every hostile case must keep. */
async function victimServed(): Promise<void> {
  const started = Date.now();
  const r = await victim().call('lab__echo', { text: 'still here' });
  assert.equal(r.isError, undefined, JSON.stringify(r));
  assert.equal(r.content?.[0]?.text, 'still here');
  assert.ok(Date.now() - started < 2000, `victim waited ${Date.now() - started} ms`);
  assert.equal(bus.child.exitCode, null, 'the bus process is alive');
}

function rpcErr(body: unknown): { code: number; message: string } {
  return (body as { error: { code: number; message: string } }).error;
}

describe('hostile requests', () => {
  before(async () => {
    bus = await startBus(yaml, { cwd: dir });
  });
  after(async () => {
    await bus?.stop();
  });

  it('an id nested 10,000 deep is refused as an invalid request, even from an agent with an empty allow-list', async () => {
    const id = `${'['.repeat(10_000)}1${']'.repeat(10_000)}`;
    const r = await post(bus.url, 'empty-token-123', `{"jsonrpc":"2.0","id":${id},"method":"tools/list"}`);
    assert.equal(r.status, 400);
    assert.equal(rpcErr(r.body).code, -32600);
    assert.match(rpcErr(r.body).message, /nests deeper/);
    await victimServed();
  });

  it('ids that are objects, floats or 300-character strings get an error with id null; the rest of the batch runs', async () => {
    const batch = [
      { jsonrpc: '2.0', id: { a: 1 }, method: 'ping' },
      { jsonrpc: '2.0', id: 'x'.repeat(300), method: 'ping' },
      { jsonrpc: '2.0', id: 1.5, method: 'ping' },
      { jsonrpc: '2.0', id: 'fine', method: 'ping' },
    ];
    const r = await post(bus.url, 'mallory-token-1', batch);
    assert.equal(r.status, 200);
    const replies = JSON.parse(r.text) as Record<string, unknown>[];
    assert.equal(replies.length, 4);
    for (const bad of replies.slice(0, 3)) {
      assert.equal(bad.id, null);
      assert.equal(rpcErr(bad).code, -32600);
    }
    assert.deepEqual(replies[3], { jsonrpc: '2.0', id: 'fine', result: {} });
    await victimServed();
  });

  it('a 4 MB batch of tools/list is refused whole, and a batch within the cap cannot reply past the response cap', async () => {
    const one = { jsonrpc: '2.0', method: 'tools/list' };
    const huge = `[${Array.from({ length: 60_000 }, (_, i) => JSON.stringify({ ...one, id: i })).join(',')}]`;
    assert.ok(huge.length > 3_000_000);
    const r = await post(bus.url, 'mallory-token-1', huge);
    assert.equal(r.status, 400);
    assert.match(rpcErr(r.body).message, /at most 16 requests/);

    // 16 tools/list replies of several kB each pass a 50 kB cap only partly: the rest are per-request errors.
    const within = Array.from({ length: 16 }, (_, i) => ({ ...one, id: i }));
    const r2 = await post(bus.url, 'victim-token-12', within);
    assert.equal(r2.status, 200);
    assert.ok(r2.text.length <= 50_000 + 16 * 200, `reply is ${r2.text.length} bytes`);
    const replies = JSON.parse(r2.text) as Record<string, unknown>[];
    assert.equal(replies.length, 16);
    assert.ok(replies.some((x) => 'result' in x));
    const capped = replies.filter((x) => 'error' in x);
    assert.ok(capped.length > 0, 'some replies were capped');
    for (const c of capped) assert.equal(rpcErr(c).code, -32000);
    await victimServed();
  });

  it('ten calls with a 10,000-deep argument are validation errors and never open the circuit breaker', async () => {
    const deep = `${'['.repeat(10_000)}1${']'.repeat(10_000)}`;
    const m = mallory();
    for (let i = 0; i < 10; i++) {
      // The body itself is refused before parsing (limits.maxJsonDepth); a shallower one meets the argument cap.
      const r = await post(
        bus.url,
        m.token,
        `{"jsonrpc":"2.0","id":${i},"method":"tools/call","params":{"name":"lab__echo_args","arguments":{"deep":${deep}}}}`,
      );
      assert.equal(r.status, 400);
    }
    let mid: unknown = 1;
    for (let i = 0; i < 40; i++) mid = [mid];
    for (let i = 0; i < 10; i++) {
      const e = busErrorStrict(await m.call('lab__echo_args', { mid }));
      assert.equal(e.category, 'validation');
      assert.match(e.message, /deeper than 16/);
    }
    const ok = await m.call('lab__echo_args', { flat: 1 });
    assert.equal(ok.isError, undefined, 'the breaker stayed closed');
    await victimServed();
  });

  it('-1e400 is a validation error and never reaches the upstream as null', async () => {
    const before = readFileSync(hostileLog, 'utf8')
      .split('\n')
      .filter((l) => l.includes('"numbers"')).length;
    const r = await post(
      bus.url,
      'mallory-token-1',
      '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"hostile__numbers","arguments":{"n":-1e400}}}',
    );
    const result = (r.body as { result: Record<string, unknown> }).result;
    const e = busErrorStrict(result);
    assert.equal(e.category, 'validation');
    assert.match(e.message, /finite/);
    const ok = await mallory().call('hostile__numbers', { n: 5 });
    assert.equal(ok.isError, undefined);
    const calls = readFileSync(hostileLog, 'utf8')
      .split('\n')
      .filter((l) => l.includes('"numbers"'));
    assert.equal(calls.length, before + 1, 'only the valid call reached the upstream');
    assert.ok(!calls.some((l) => l.includes('null')));
  });

  it('50 calls with 3 MB tool names are not_found and are never kept or served by the dashboard', async () => {
    const name = `lab__${'x'.repeat(3 * 1024 * 1024)}`;
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: {} } });
    for (let i = 0; i < 5; i++) {
      const rounds = await Promise.all(Array.from({ length: 10 }, () => post(bus.url, 'mallory-token-1', body)));
      for (const r of rounds) {
        const e = busErrorStrict((r.body as { result: Record<string, unknown> }).result);
        assert.equal(e.category, 'not_found');
        assert.ok(r.text.length < 2000, 'the name is not echoed back');
      }
    }
    const dash = await fetch(new URL('/api/dashboard', bus.url));
    const text = await dash.text();
    assert.equal(dash.status, 200);
    assert.ok(text.length < 100_000, `dashboard JSON is ${text.length} bytes`);
    await victimServed();
  });

  it('sessions are capped per agent (least recently used idle one closed) and idle ones are swept', async () => {
    const clients = [];
    for (let i = 0; i < 12; i++) {
      const c = mallory();
      await c.initialize();
      clients.push(c);
    }
    const metrics = await (await fetch(new URL('/metrics', bus.url))).text();
    const open = Number(/^toolbus_agent_sessions (\d+)/m.exec(metrics)?.[1]);
    assert.ok(open <= 4 + 1, `sessions open: ${open}`);
    // The oldest sessions were closed to make room; the newest still work.
    await assert.rejects(clients[0]!.request('ping'), /HTTP 404/);
    await clients[11]!.request('ping');
    // Idle sessions go after sessionIdleMs (1.5 s) without traffic (watched through /metrics, which touches none).
    const sessionsOpen = async () =>
      Number(/^toolbus_agent_sessions (\d+)/m.exec(await (await fetch(new URL('/metrics', bus.url))).text())?.[1]);
    await waitFor(async () => (await sessionsOpen()) === 0, 6000, 'idle sessions swept');
    await assert.rejects(clients[11]!.request('ping'), /HTTP 404/);
    await victimServed();
  });

  it("a session-less client cannot cancel another client's call with the same id", async () => {
    const id = 777;
    const slow = post(bus.url, 'victim-token-12', {
      jsonrpc: '2.0',
      id,
      method: 'tools/call',
      params: { name: 'lab__slow', arguments: { ms: 600, tag: 'not-cancelled' } },
    });
    await waitFor(() => readFileSync(labLog, 'utf8').includes('not-cancelled'), 5000);
    await post(bus.url, 'victim-token-12', {
      jsonrpc: '2.0',
      method: 'notifications/cancelled',
      params: { requestId: id, reason: 'hostile' },
    });
    const r = await slow;
    const result = (r.body as { result: Record<string, unknown> }).result;
    assert.equal(result.isError, undefined, JSON.stringify(result));
    assert.ok(!readFileSync(labLog, 'utf8').includes('"phase":"cancelled","args":{"ms":600,"tag":"not-cancelled"}'));
  });

  it('/metrics, /readyz and the dashboard refuse a foreign Host; /healthz answers', async () => {
    const get = (path: string, host: string) =>
      new Promise<number>((resolve, reject) => {
        const s: Socket = connect(bus.port, '127.0.0.1', () =>
          s.write(`GET ${path} HTTP/1.1\r\nhost: ${host}\r\nconnection: close\r\n\r\n`),
        );
        let text = '';
        s.on('data', (d) => {
          text += d.toString();
        });
        s.on('end', () => resolve(Number(text.split(' ')[1])));
        s.on('error', reject);
      });
    for (const path of ['/metrics', '/readyz', '/api/dashboard', '/', '/mcp'])
      assert.equal(await get(path, 'evil.example:80'), 403, path);
    assert.equal(await get('/healthz', 'evil.example:80'), 200);
    assert.equal(await get('/metrics', `127.0.0.1:${bus.port}`), 200);
  });

  it('the dashboard shows lease scopes as hashes unless the admin token is presented', async () => {
    const key = 'lease-view-key-1';
    const pending = victim().call('lab__counter_incr', {
      entity: 'card-4111111111111111',
      delay_ms: 1500,
      idempotency_key: key,
    });
    await waitFor(() => readFileSync(labLog, 'utf8').includes('card-4111111111111111'), 5000);
    const anon = await (await fetch(new URL('/api/dashboard', bus.url))).text();
    assert.ok(!anon.includes('4111111111111111'), 'argument value hidden from a non-admin');
    assert.match(anon, /"scope":"lab:#[0-9a-f]{8}"/);
    const admin = await (
      await fetch(new URL('/api/dashboard', bus.url), { headers: { authorization: `Bearer ${ADMIN}` } })
    ).text();
    assert.ok(admin.includes('card-4111111111111111'));
    await pending;
  });

  it('half-open connections are closed after headersTimeoutMs and never crowd out an agent', async () => {
    const sockets: Socket[] = [];
    const closed: Promise<void>[] = [];
    for (let i = 0; i < 50; i++) {
      const s = connect(bus.port, '127.0.0.1');
      sockets.push(s);
      closed.push(new Promise((r) => s.once('close', () => r())));
      s.on('error', () => {});
    }
    await victimServed();
    const started = Date.now();
    await Promise.race([
      Promise.all(closed),
      new Promise((_, reject) => setTimeout(() => reject(new Error('half-open sockets still open')), 8000)),
    ]);
    assert.ok(Date.now() - started < 8000);
    await victimServed();
  });
});
