// /mcp/{upstream} and what passes through toolbus beyond tools: instructions, completions, resource links, logging
// levels and the 2026-07-28 caching hints, each checked on the wire against the real bus and a real upstream.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type BusProcess, HOSTILE_SERVER, startBus, tempDir } from '../helpers/bus-process.js';
import { AgentClient, busErrorStrict, mirroredHeaders, post } from '../helpers/mcp-http.js';
import { waitFor } from '../helpers/wait.js';

const dir = tempDir();
const hostileLog = join(dir, 'hostile.log');
let bus: BusProcess;
const one = () => `${bus.url}/hostile`;

/** What a session's notification stream (GET) receives within `ms`. */
async function readStream(c: AgentClient, ms = 1500): Promise<string> {
  const ctl = new AbortController();
  const res = await fetch(bus.url, {
    headers: { authorization: `Bearer ${c.token}`, accept: 'text/event-stream', ...c.headers() },
    signal: ctl.signal,
  });
  let text = '';
  const reader = res.body!.getReader();
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const chunk = await Promise.race([
      reader.read(),
      new Promise<{ done: true; value: undefined }>((r) =>
        setTimeout(() => r({ done: true, value: undefined }), until - Date.now()),
      ),
    ]);
    if (chunk.done) break;
    text += new TextDecoder().decode(chunk.value);
  }
  ctl.abort();
  return text;
}

const MODERN_META = {
  'io.modelcontextprotocol/protocolVersion': '2026-07-28',
  'io.modelcontextprotocol/clientCapabilities': {},
};

describe('/mcp/{upstream} and protocol features', () => {
  before(async () => {
    bus = await startBus(
      `
store: { kind: memory }
agents:
  - { id: all, token: "all-token-1234" }
  - { id: narrow, token: "narrow-token-1", tools: ["hostile__echo"] }
  - { id: other, token: "other-token-12" }
upstreams:
  hostile:
    command: ${process.execPath}
    args: [${HOSTILE_SERVER}]
    env: { HOSTILE_LOG: ${hostileLog} }
    tools:
      echo: { kind: read }
      link: { kind: read }
      leak: { kind: read }
      touch: { kind: read }
`,
      { cwd: dir },
    );
  });
  after(async () => {
    await bus?.stop();
  });

  it('serves one upstream under its own names, with the same allow-lists', async () => {
    const names = (await new AgentClient(one(), 'all-token-1234').listTools()).map((t) => t.name);
    assert.ok(names.includes('echo') && names.includes('link'));
    assert.ok(!names.some((n) => String(n).startsWith('hostile__')));
    const aggregated = (await new AgentClient(bus.url, 'all-token-1234').listTools()).map((t) => t.name);
    assert.ok(aggregated.includes('hostile__echo'));
    const ok = await new AgentClient(one(), 'all-token-1234').call('echo', { text: 'own name' });
    assert.equal(ok.content?.[0]?.text, 'own name');
    const narrow = new AgentClient(one(), 'narrow-token-1');
    assert.deepEqual(
      (await narrow.listTools()).map((t) => t.name),
      ['echo'],
    );
    assert.equal(busErrorStrict(await narrow.call('link', {})).category, 'auth');
    const missing = await post(`${bus.url}/nosuch`, 'all-token-1234', { jsonrpc: '2.0', id: 1, method: 'tools/list' });
    assert.equal(missing.status, 404);
    const malformed = await post(`${bus.url}/%E0%A4%A`, 'all-token-1234', { jsonrpc: '2.0', id: 1, method: 'ping' });
    assert.equal(malformed.status, 404, 'a malformed escape is no upstream, not an internal error');
  });

  it('passes instructions through: verbatim on /mcp/{upstream}, as a titled block on /mcp', async () => {
    const own = await new AgentClient(one(), 'all-token-1234').initialize();
    assert.equal(own.instructions, 'hostile server no-secret');
    const all = await new AgentClient(bus.url, 'all-token-1234').initialize();
    assert.match(String(all.instructions), /^toolbus:/);
    assert.match(String(all.instructions), /## hostile \(tools hostile__\*\)\nhostile server no-secret/);
    assert.deepEqual((own.capabilities as Record<string, unknown>).completions, {});
  });

  it('relays completions with the ref rewritten to the upstream name', async () => {
    const a = new AgentClient(bus.url, 'all-token-1234');
    const r = await a.request('completion/complete', {
      ref: { type: 'ref/prompt', name: 'hostile__leak' },
      argument: { name: 'x', value: '' },
    });
    assert.deepEqual((r.completion as { values: string[] }).values, ['ref:leak']);
    const own = await new AgentClient(one(), 'all-token-1234').request('completion/complete', {
      ref: { type: 'ref/resource', uri: 'mem://leak' },
      argument: { name: 'x', value: '' },
    });
    assert.deepEqual((own.completion as { values: string[] }).values, ['ref:mem://leak']);
  });

  it('rewrites resource links in results on /mcp so the agent can read them, and leaves them on /mcp/{upstream}', async () => {
    const a = new AgentClient(bus.url, 'all-token-1234');
    const r = await a.call('hostile__link', {});
    const content = r.content as unknown as Record<string, unknown>[];
    assert.equal(content[0]!.uri, 'toolbus://hostile/mem://leak');
    assert.equal((content[1]!.resource as Record<string, unknown>).uri, 'toolbus://hostile/mem://leak');
    const read = await a.request('resources/read', { uri: String(content[0]!.uri) });
    assert.match(JSON.stringify(read), /contents no-secret/);
    const own = await new AgentClient(one(), 'all-token-1234').call('link', {});
    assert.equal((own.content as unknown as Record<string, unknown>[])[0]!.uri, 'mem://leak');
  });

  it('adds the 2026-07-28 caching hints (private: lists depend on the allow-list) and resultType', async () => {
    const meta = {
      'io.modelcontextprotocol/protocolVersion': '2026-07-28',
      'io.modelcontextprotocol/clientCapabilities': {},
    };
    for (const method of ['tools/list', 'resources/list', 'prompts/list', 'server/discover']) {
      const r = await post(bus.url, 'all-token-1234', { jsonrpc: '2.0', id: 1, method, params: { _meta: meta } });
      const result = (r.body as { result: Record<string, unknown> }).result;
      assert.equal(result.resultType, 'complete', method);
      assert.equal(result.cacheScope, 'private', method);
      assert.equal(result.ttlMs, 0, method);
    }
    const call = await post(bus.url, 'all-token-1234', {
      jsonrpc: '2.0',
      id: 2,
      method: 'tools/call',
      params: { name: 'hostile__echo', arguments: { text: 'x' }, _meta: meta },
    });
    assert.equal((call.body as { result: Record<string, unknown> }).result.cacheScope, undefined);
  });

  it('sends upstream log messages to the sessions that asked for that level, and to no other', async () => {
    const listening = new AgentClient(bus.url, 'all-token-1234');
    await listening.initialize();
    await listening.request('logging/setLevel', { level: 'info' });
    const quiet = new AgentClient(bus.url, 'all-token-1234');
    await quiet.initialize();
    const streams = Promise.all([readStream(listening), readStream(quiet)]);
    await new Promise((r) => setTimeout(r, 200));
    await new AgentClient(bus.url, 'all-token-1234').call('hostile__leak', {});
    const [heard, silent] = await streams;
    assert.match(heard, /notifications\/message/);
    assert.doesNotMatch(silent, /notifications\/message/);
    await assert.rejects(listening.request('logging/setLevel', { level: 'loud' }), /RPC error/);
  });

  it("a log message goes to the agent whose call emitted it, on that call's stream and once", async () => {
    const caller = new AgentClient(bus.url, 'all-token-1234');
    await caller.initialize();
    await caller.request('logging/setLevel', { level: 'info' });
    const other = new AgentClient(bus.url, 'other-token-12');
    await other.initialize();
    await other.request('logging/setLevel', { level: 'info' });
    const streams = Promise.all([readStream(caller), readStream(other)]);
    await new Promise((r) => setTimeout(r, 200));
    const call = await post(
      bus.url,
      'all-token-1234',
      { jsonrpc: '2.0', id: 77, method: 'tools/call', params: { name: 'hostile__leak', arguments: {} } },
      caller.headers(),
    );
    assert.match(call.headers.get('content-type') ?? '', /text\/event-stream/);
    assert.match(call.text, /notifications\/message/, "on the call's own stream");
    const [callerSession, otherSession] = await streams;
    assert.doesNotMatch(callerSession, /notifications\/message/, 'not a second time on its session stream');
    assert.match(otherSession, /notifications\/message/, 'another agent that asked for the level still gets it');
  });

  it('fans resource subscriptions out: one upstream subscription per URI, updates only to subscribers', async () => {
    const events = (name: string) =>
      readFileSync(hostileLog, 'utf8')
        .split('\n')
        .filter((l) => l.includes(`"event":"${name}"`)).length;
    const uri = 'toolbus://hostile/mem://leak';
    const a = new AgentClient(bus.url, 'all-token-1234');
    const b = new AgentClient(bus.url, 'all-token-1234');
    const c = new AgentClient(bus.url, 'all-token-1234');
    for (const x of [a, b, c]) await x.initialize();
    await a.request('resources/subscribe', { uri });
    await b.request('resources/subscribe', { uri });
    assert.equal(events('resources/subscribe'), 1, 'one upstream subscription for two sessions');
    const streams = Promise.all([readStream(a), readStream(c)]);
    await new Promise((r) => setTimeout(r, 200));
    await new AgentClient(bus.url, 'all-token-1234').call('hostile__touch', { uri: 'mem://leak' });
    const [subscribed, other] = await streams;
    assert.match(subscribed, /notifications\/resources\/updated/);
    assert.ok(subscribed.includes(uri), 'the URI is the bus URI on /mcp');
    assert.doesNotMatch(other, /resources\/updated/);
    await a.request('resources/unsubscribe', { uri });
    assert.equal(events('resources/unsubscribe'), 0, 'b still subscribes');
    await b.request('resources/unsubscribe', { uri });
    assert.equal(events('resources/unsubscribe'), 1, 'the last one out unsubscribes upstream');
  });
  it('a 2026-07-28 subscriptions/listen stream subscribes to resources: updates tagged with its id, one upstream subscription', async () => {
    const events = (name: string) =>
      readFileSync(hostileLog, 'utf8')
        .split('\n')
        .filter((l) => l.includes(`"event":"${name}"`)).length;
    const before = { sub: events('resources/subscribe'), unsub: events('resources/unsubscribe') };
    const uri = 'toolbus://hostile/mem://listen';
    const listen = (token: string, uris: string[]) => {
      const ctl = new AbortController();
      const body = {
        jsonrpc: '2.0',
        id: 1,
        method: 'subscriptions/listen',
        params: { notifications: { resourceSubscriptions: uris }, _meta: MODERN_META },
      };
      const res = fetch(bus.url, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          ...mirroredHeaders(body),
        },
        body: JSON.stringify(body),
        signal: ctl.signal,
      });
      return { res, ctl };
    };
    const refused = await (await listen('narrow-token-1', [uri]).res).json();
    assert.equal((refused as { error: { code: number } }).error.code, -32002, 'a URI the agent may not read');
    const tooMany = await listen(
      'all-token-1234',
      Array.from({ length: 65 }, (_, i) => `${uri}-${i}`),
    ).res;
    assert.equal(tooMany.status, 400, 'at most 64 URIs per listen request');
    assert.equal(((await tooMany.json()) as { error: { code: number } }).error.code, -32602);
    assert.equal(events('resources/subscribe'), before.sub, 'nothing was subscribed for the refused requests');
    const stream = listen('all-token-1234', [uri]);
    const res = await stream.res;
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    let text = '';
    let pending: ReturnType<typeof reader.read> | undefined;
    const readFor = async (ms: number) => {
      const until = Date.now() + ms;
      while (Date.now() < until) {
        pending ??= reader.read();
        const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), until - Date.now()));
        const chunk = await Promise.race([pending, timeout]);
        if (chunk === 'timeout') break;
        pending = undefined;
        if (chunk.done) break;
        text += new TextDecoder().decode(chunk.value);
      }
    };
    await readFor(200);
    const id = /"io.modelcontextprotocol\/subscriptionId":"([^"]+)"/.exec(text)?.[1];
    assert.ok(id, 'acknowledged with a subscription id');
    assert.equal(events('resources/subscribe'), before.sub + 1);
    await new AgentClient(bus.url, 'all-token-1234').call('hostile__touch', { uri: 'mem://listen' });
    await readFor(500);
    assert.match(text, /notifications\/resources\/updated/);
    assert.ok(text.includes(uri) && text.includes(`"io.modelcontextprotocol/subscriptionId":"${id}"`));
    stream.ctl.abort();
    await waitFor(() => events('resources/unsubscribe') === before.unsub + 1, 3000, 'the upstream unsubscription');
  });
});
