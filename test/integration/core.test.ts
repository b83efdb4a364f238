// The core bus end to end: the real toolbus process, the real example tickets upstream and the lab fixture upstream.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type BusProcess, LAB_SERVER, startBus, TICKETS_SERVER, tempDir } from '../helpers/bus-process.js';
import { AgentClient, busErrorStrict, post } from '../helpers/mcp-http.js';
import { waitFor } from '../helpers/wait.js';

const SECRET = `tickets-secret-${Math.random().toString(36).slice(2)}`;
const dir = tempDir();
const labLog = join(dir, 'lab.log');
writeFileSync(join(dir, 'tickets-token'), `${SECRET}\n`);

const yaml = `
store: { kind: sqlite, path: ${join(dir, 'state.db')} }
agents:
  - { id: alice, token: "alice-token-123", tenant: team-a, tools: ["*"] }
  - { id: reader, token: "reader-token-123", tenant: team-b, tools: ["tickets__get_*", "tickets__list_*"] }
upstreams:
  tickets:
    command: ${process.execPath}
    args: [${TICKETS_SERVER}]
    env: { TICKETS_API_TOKEN: "\${file:${join(dir, 'tickets-token')}}", TICKETS_DB: ${join(dir, 'tickets.db')} }
    trustAnnotations: true
    tools:
      create_ticket:
        lease: ["issue:{/source_issue}"]
        schema: { properties: { title: { maxLength: 50 } } }
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    env: { LAB_LOG: ${labLog} }
    maxConcurrency: 64
    restart: { initialDelayMs: 300, maxDelayMs: 1000 }
    tools:
      echo: { kind: read }
      whoami: { kind: read }
      hang: { kind: read, timeoutMs: 20000 }
      progress: { kind: read }
      crash: { kind: write, idempotency: off }
`;

let bus: BusProcess;
const alice = () => new AgentClient(bus.url, 'alice-token-123');

describe('core bus', () => {
  before(async () => {
    bus = await startBus(yaml, { cwd: dir });
  });
  after(async () => {
    await bus?.stop();
  });

  it('refuses unknown callers with a 401 that says why and nothing else', async () => {
    for (const [token, reason] of [
      [null, 'missing_token'],
      ['wrong-token-xyz', 'invalid_token'],
    ] as const) {
      const r = await post(bus.url, token, { jsonrpc: '2.0', id: 1, method: 'tools/list' });
      assert.equal(r.status, 401);
      assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer/);
      const body = JSON.parse(r.text) as Record<string, unknown>;
      assert.deepEqual(Object.keys(body).sort(), ['error', 'error_description', 'reason']);
      assert.equal(body.reason, reason);
    }
  });

  it('lists namespaced tools, filtered by the allow-list, with tightened schemas', async () => {
    const tools = await alice().listTools();
    const names = tools.map((t) => t.name as string);
    for (const n of ['tickets__create_ticket', 'tickets__get_ticket', 'lab__echo']) assert.ok(names.includes(n), n);
    const create = tools.find((t) => t.name === 'tickets__create_ticket')!;
    const schema = create.inputSchema as { properties: Record<string, Record<string, unknown>>; required: string[] };
    assert.equal(schema.properties.title!.maxLength, 50);
    assert.ok(schema.required.includes('idempotency_key'));
    const readerTools = (await new AgentClient(bus.url, 'reader-token-123').listTools()).map((t) => t.name);
    assert.deepEqual(readerTools.sort(), ['tickets__get_ticket', 'tickets__list_tickets']);
  });

  it('forwards calls and returns the upstream result', async () => {
    const a = alice();
    const created = await a.call('tickets__create_ticket', {
      title: 'Printer on fire',
      priority: 'urgent',
      source_issue: 'ISSUE-1',
      idempotency_key: 'create:ISSUE-1:a',
    });
    assert.notEqual(created.isError, true, JSON.stringify(created));
    const id = (created.structuredContent as { id: number }).id;
    assert.ok(Number.isInteger(id));
    const got = await a.call('tickets__get_ticket', { id });
    assert.equal((got.structuredContent as { title: string }).title, 'Printer on fire');
  });

  it('says auth when an agent calls a tool outside its allow-list', async () => {
    const r = await new AgentClient(bus.url, 'reader-token-123').call('tickets__create_ticket', {
      title: 'x',
      priority: 'low',
      source_issue: 'I',
      idempotency_key: 'abcdefgh',
    });
    const err = busErrorStrict(r);
    assert.equal(err.category, 'auth');
    assert.equal(err.retryable, false);
  });

  it('says not_found for an unknown tool', async () => {
    const err = busErrorStrict(await alice().call('tickets__nope', {}));
    assert.equal(err.category, 'not_found');
  });

  it('keeps one upstream process for 50 concurrent session agents, with no cross-talk', async () => {
    const agents = Array.from({ length: 50 }, () => alice());
    await Promise.all(agents.map((a) => a.initialize()));
    assert.equal(new Set(agents.map((a) => a.sessionId)).size, 50);
    const results = await Promise.all(
      agents.map(async (a, i) => {
        const texts = [];
        for (let k = 0; k < 4; k++) {
          const r = await a.call('lab__echo', { text: `agent-${i}-call-${k}` });
          texts.push(r.content?.[0]?.text);
        }
        return texts;
      }),
    );
    results.forEach((texts, i) => {
      assert.deepEqual(
        texts,
        [0, 1, 2, 3].map((k) => `agent-${i}-call-${k}`),
      );
    });
    const pids = new Set(
      readFileSync(labLog, 'utf8')
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { pid: number }).pid),
    );
    assert.equal(pids.size, 1, `lab processes seen: ${[...pids].join(',')}`);
  });

  it('serves stateless 2026-07-28 requests: server/discover and per-request _meta', async () => {
    const meta = {
      'io.modelcontextprotocol/protocolVersion': '2026-07-28',
      'io.modelcontextprotocol/clientCapabilities': {},
    };
    const d = await post(bus.url, 'alice-token-123', {
      jsonrpc: '2.0',
      id: 1,
      method: 'server/discover',
      params: { _meta: meta },
    });
    const result = (d.body as { result: Record<string, unknown> }).result;
    assert.ok((result.supportedVersions as string[]).includes('2026-07-28'));
    assert.equal(result.resultType, 'complete');
    assert.equal(d.headers.get('mcp-session-id'), null);
    const call = await post(bus.url, 'alice-token-123', {
      jsonrpc: '2.0',
      id: 2,
      method: 'tools/call',
      params: { name: 'lab__echo', arguments: { text: 'modern' }, _meta: meta },
    });
    const r = (call.body as { result: Record<string, unknown> }).result;
    assert.equal(r.resultType, 'complete');
    assert.equal((r.content as { text: string }[])[0]!.text, 'modern');
  });

  it('keeps JSON-RPC faults as JSON-RPC errors', async () => {
    const bad = await post(bus.url, 'alice-token-123', '{not json');
    assert.equal(bad.status, 400);
    assert.equal((bad.body as { error: { code: number } }).error.code, -32700);
    const unknown = await post(bus.url, 'alice-token-123', { jsonrpc: '2.0', id: 9, method: 'no/such/method' });
    assert.equal((unknown.body as { error: { code: number } }).error.code, -32601);
  });

  it('refuses a foreign Host header or Origin (DNS rebinding guard)', async () => {
    // fetch may not set Host, so this request is made with node:http.
    const status = await new Promise<number>((resolve, reject) => {
      const u = new URL(bus.url);
      const req = httpRequest(
        {
          host: u.hostname,
          port: u.port,
          path: '/mcp',
          method: 'POST',
          headers: {
            host: 'evil.example',
            authorization: 'Bearer alice-token-123',
            'content-type': 'application/json',
          },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }));
    });
    assert.equal(status, 403);
    const o = await post(
      bus.url,
      'alice-token-123',
      { jsonrpc: '2.0', id: 1, method: 'tools/list' },
      { origin: 'http://evil.example' },
    );
    assert.equal(o.status, 403);
    const local = await post(
      bus.url,
      'alice-token-123',
      { jsonrpc: '2.0', id: 1, method: 'tools/list' },
      { origin: 'http://localhost:3000' },
    );
    assert.equal(local.status, 200);
  });

  it('relays resources and prompts, namespaced', async () => {
    const a = alice();
    const resources = (await a.request('resources/list')).resources as { uri: string; name: string }[];
    const summary = resources.find((r) => r.uri.startsWith('toolbus://tickets/'));
    assert.ok(summary, JSON.stringify(resources));
    const read = await a.request('resources/read', { uri: summary.uri });
    const contents = read.contents as { uri: string; text?: string }[];
    assert.ok(contents.length > 0);
    assert.ok(contents[0]!.uri.startsWith('toolbus://tickets/'));
    const prompts = (await a.request('prompts/list')).prompts as { name: string; arguments?: { name: string }[] }[];
    const prompt = prompts.find((p) => p.name.startsWith('tickets__'));
    assert.ok(prompt);
    const args = Object.fromEntries((prompt.arguments ?? []).map((x) => [x.name, 'printer']));
    const got = await a.request('prompts/get', { name: prompt.name, arguments: args });
    assert.ok(Array.isArray(got.messages));
  });

  it('relays cancellation to the upstream', async () => {
    const a = alice();
    await a.initialize();
    const id = 424242;
    const pending = a.request('tools/call', { name: 'lab__hang', arguments: {} }, id).catch((e: unknown) => e);
    await waitFor(() => readFileSync(labLog, 'utf8').includes('"tool":"hang"'), 5000);
    await post(
      bus.url,
      a.token,
      { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: id, reason: 'test' } },
      a.headers(),
    );
    await waitFor(
      () => /"tool":"hang".*"phase":"cancelled"|"phase":"cancelled".*"tool":"hang"/.test(readFileSync(labLog, 'utf8')),
      5000,
    );
    await pending;
  });

  it('relays progress notifications over SSE', async () => {
    const res = await fetch(bus.url, {
      method: 'POST',
      headers: {
        authorization: 'Bearer alice-token-123',
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
      },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 7,
        method: 'tools/call',
        params: { name: 'lab__progress', arguments: { steps: 3, interval_ms: 20 }, _meta: { progressToken: 'p1' } },
      }),
    });
    assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
    const text = await res.text();
    const progress = text.match(/notifications\/progress/g) ?? [];
    assert.ok(progress.length >= 3, text);
    assert.match(text, /"progressToken":"p1"/);
    assert.match(text, /"id":7/);
  });

  it('restarts a crashed stdio upstream; calls in the gap fail fast with upstream_unavailable', async () => {
    const a = alice();
    const before = (await a.call('lab__whoami')).structuredContent as { pid: number };
    await a.call('lab__crash', {});
    const gap = await a.call('lab__echo', { text: 'gap' });
    const started = Date.now();
    const err = busErrorStrict(gap);
    assert.equal(err.category, 'upstream_unavailable');
    assert.equal(err.retryable, true);
    assert.ok(typeof err.retryAfterMs === 'number');
    assert.ok(Date.now() - started < 1000);
    let after: { pid: number } | undefined;
    await waitFor(async () => {
      const r = await a.call('lab__whoami');
      if (r.isError) return false;
      after = r.structuredContent as { pid: number };
      return true;
    }, 10_000);
    assert.notEqual(after!.pid, before.pid);
  });

  it('never shows the upstream secret in lists, results, errors or logs', async () => {
    const a = alice();
    const seen = [
      JSON.stringify(await a.listTools()),
      JSON.stringify(await a.call('tickets__list_tickets', {})),
      JSON.stringify(await a.call('tickets__get_ticket', { id: 999999 })),
      JSON.stringify(
        await a.call('tickets__create_ticket', {
          title: 'x'.repeat(80),
          priority: 'low',
          source_issue: 'S',
          idempotency_key: 'k-secret-1',
        }),
      ),
      (await fetch(bus.url.replace('/mcp', '/metrics'))).ok
        ? await (await fetch(bus.url.replace('/mcp', '/metrics'))).text()
        : '',
      await (await fetch(bus.url.replace('/mcp', '/api/dashboard'))).text(),
      bus.stdout(),
      bus.stderr(),
    ];
    for (const s of seen) assert.ok(!s.includes(SECRET), 'secret leaked');
  });
});
