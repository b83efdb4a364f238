// Agents and upstreams of different protocol eras, through the real bus and the reference upstream (official SDK v2,
// which serves both eras over HTTP). toolbus is told to speak only 2026-07-28 to one entry (`modern`), only 2025 to
// another (`legacy`), and to pick per request on the third (`both`), so each translation is exercised:
// - a 2025 agent (official v1 SDK client) uses a 2026-only upstream's multi round-trip tool: the embedded elicitation
//   requests reach it on its call's stream, and toolbus retries upstream with its answers;
// - a 2026 agent (official v2 SDK client, pinned to 2026-07-28) uses a 2025 upstream's eliciting tool: it gets an
//   InputRequiredResult, and its retry completes the upstream's pending request; two such agents at the same moment
//   each get their own answer back (the 2025 entry is `sharing: per-agent`, so the session says whose call asked:
//   the reference server sends its requests on the session's standalone stream, not on the call's own);
// - the upstream's requestState reaches a 2026 agent sealed: altered, or replayed by another agent, it is refused
//   before anything reaches the upstream;
// - an HTTP upstream's log messages reach the call whose response stream carried them, even when one agent has several
//   calls in flight on the shared connection;
// - a keyed write that came back input-required leaves its key open: the follow-up with the same key completes, and a
//   later retry of the key replays that completion, never the InputRequiredResult.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as TransportV1 } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ElicitRequestSchema, LoggingMessageNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { Redis } from 'ioredis';
import { type BusProcess, startBus, tempDir } from '../helpers/bus-process.js';
import { busErrorStrict, post, type ToolCallResult } from '../helpers/mcp-http.js';
import { startReference } from '../helpers/reference.js';

const MODERN = {
  'io.modelcontextprotocol/protocolVersion': '2026-07-28',
  'io.modelcontextprotocol/clientCapabilities': { elicitation: {}, sampling: {} },
  'io.modelcontextprotocol/clientInfo': { name: 'eras-test', version: '1.0.0' },
};

let bus: BusProcess;
let ref: ChildProcess;

type TextResult = { content: { type: string; text?: string }[]; isError?: boolean; _meta?: Record<string, unknown> };
const textOf = (r: unknown) => (r as TextResult).content.map((c) => c.text ?? '').join('');

/** The official v2 client pinned to 2026-07-28, answering elicitation with `answer` after `delayMs`. */
async function modernAgent(token: string, endpoint: string, answer: Record<string, unknown>, delayMs = 0) {
  const client = new Client({ name: `eras-${token}`, version: '1.0.0' }, {
    capabilities: { elicitation: { form: {} } },
    versionNegotiation: { mode: { pin: '2026-07-28' } },
  } as never);
  const asked: string[] = [];
  client.setRequestHandler('elicitation/create', async (req) => {
    asked.push(String((req.params as { message?: string }).message));
    await new Promise((r) => setTimeout(r, delayMs));
    return { action: 'accept', content: answer } as never;
  });
  await client.connect(
    new StreamableHTTPClientTransport(new URL(`${bus.url}/${endpoint}`), {
      requestInit: { headers: { authorization: `Bearer ${token}` } },
    }),
  );
  return { client, asked };
}

describe('agents and upstreams of different protocol eras', () => {
  before(async () => {
    const started = await startReference();
    ref = started.child;
    const url = started.url;
    bus = await startBus(
      `
store: { kind: sqlite, path: ${join(tempDir(), 'eras.db')} }
agents:
  - { id: alice, token: "alice-token-1" }
  - { id: bob, token: "bob-token-123" }
upstreams:
  modern:
    url: ${url}
    protocol: "2026-07-28"
    tools:
      test_input_required_result_multi_round: { kind: read }
      test_input_required_forever: { kind: read }
      test_input_required_result_request_state: { kind: read }
  legacy:
    url: ${url}
    protocol: "2025-11-25"
    sharing: per-agent
    tools:
      test_elicitation: { kind: read }
  locked:
    url: ${url}
    protocol: "2025-11-25"
    leaseWaitMs: 300
    tools:
      test_elicitation: { kind: write, idempotency: optional }
  capped:
    url: ${url}
    rateLimit: { perSecond: 1, burst: 1 }
    queueWaitMs: 100
    tools:
      test_input_required_result_request_state: { kind: read }
  logs:
    url: ${url}
    protocol: "2025-11-25"
    tools:
      test_tool_with_logging: { kind: read }
  both:
    url: ${url}
    tools:
      test_input_required_result_request_state: { kind: write, idempotency: required }
      test_custom_header: { kind: read }
`,
    );
  });
  after(async () => {
    await bus?.stop();
    ref?.kill();
  });

  it("a 2025 agent (v1 SDK) answers a 2026-only upstream's input requests on its call's stream", async () => {
    const client = new ClientV1({ name: 'eras-v1', version: '1.0.0' }, { capabilities: { elicitation: {} } });
    const asked: string[] = [];
    client.setRequestHandler(ElicitRequestSchema, async (req) => {
      asked.push(req.params.message);
      return { action: 'accept', content: { name: 'Ada', color: 'teal' } };
    });
    await client.connect(
      new TransportV1(new URL(`${bus.url}/modern`), {
        requestInit: { headers: { authorization: 'Bearer alice-token-1' } },
      }),
    );
    try {
      const r = await client.callTool({ name: 'test_input_required_result_multi_round', arguments: {} });
      assert.equal(textOf(r), 'Multi-round complete for Ada who likes teal');
      assert.deepEqual(asked, ['Step 1: What is your name?', 'Step 2: What is your favorite color?']);
    } finally {
      await client.close();
    }
  });

  it("an HTTP upstream's log messages reach the call whose stream carried them, among one agent's concurrent calls", async () => {
    // Three sessions of one agent on one shared connection, calling at once: the protocol gives a log message no
    // request id, but over HTTP it arrives on its call's response stream, and that names the call.
    const sessions = await Promise.all(
      [1, 2, 3].map(async (n) => {
        const client = new ClientV1({ name: `eras-logs-${n}`, version: '1.0.0' });
        const heard: string[] = [];
        client.setNotificationHandler(LoggingMessageNotificationSchema, (note) => {
          heard.push(String(note.params.data));
        });
        await client.connect(
          new TransportV1(new URL(`${bus.url}/logs`), {
            requestInit: { headers: { authorization: 'Bearer alice-token-1' } },
          }),
        );
        await client.setLoggingLevel('info');
        return { client, heard };
      }),
    );
    try {
      for (let round = 0; round < 3; round++) {
        for (const s of sessions) s.heard.length = 0;
        await Promise.all(sessions.map((s) => s.client.callTool({ name: 'test_tool_with_logging', arguments: {} })));
        for (const s of sessions)
          assert.deepEqual(
            s.heard,
            ['Tool execution started', 'Tool processing data', 'Tool execution completed'],
            `round ${round}: each call hears its own three messages, once`,
          );
      }
    } finally {
      await Promise.all(sessions.map((s) => s.client.close()));
    }
  });

  it('an upstream that asks for input forever is stopped after 8 rounds with a structured error', async () => {
    const client = new ClientV1({ name: 'eras-v1-forever', version: '1.0.0' }, { capabilities: { elicitation: {} } });
    let asked = 0;
    client.setRequestHandler(ElicitRequestSchema, async () => {
      asked++;
      return { action: 'accept', content: { again: 'yes' } };
    });
    await client.connect(
      new TransportV1(new URL(`${bus.url}/modern`), {
        requestInit: { headers: { authorization: 'Bearer alice-token-1' } },
      }),
    );
    try {
      const r = (await client.callTool({ name: 'test_input_required_forever', arguments: {} })) as TextResult;
      assert.equal(r.isError, true);
      const err = busErrorStrict(r as ToolCallResult);
      assert.equal(err.category, 'upstream_error');
      assert.match(err.message, /after 8 rounds/);
      assert.equal(asked, 8);
    } finally {
      await client.close();
    }
  });

  it("a 2026 agent (v2 SDK) uses a 2025 upstream's eliciting tool; two agents at once each get their own answer", async () => {
    const a = await modernAgent('alice-token-1', 'legacy', { response: 'from alice' }, 300);
    const b = await modernAgent('bob-token-123', 'legacy', { response: 'from bob' }, 50);
    try {
      const [ra, rb] = await Promise.all([
        a.client.callTool({ name: 'test_elicitation', arguments: {} }),
        b.client.callTool({ name: 'test_elicitation', arguments: {} }),
      ]);
      assert.equal(textOf(ra), 'User response: action=accept, content={"response":"from alice"}');
      assert.equal(textOf(rb), 'User response: action=accept, content={"response":"from bob"}');
      assert.deepEqual(a.asked, ['Please respond']);
      assert.deepEqual(b.asked, ['Please respond']);
    } finally {
      await a.client.close();
      await b.client.close();
    }
  });

  it('a parked call answers only the agent that holds its state, and a missing answer is asked again', async () => {
    const url = `${bus.url}/legacy`;
    const call = (token: string, extra: Record<string, unknown> = {}) =>
      post(url, token, {
        jsonrpc: '2.0',
        id: 1,
        method: 'tools/call',
        params: { name: 'test_elicitation', arguments: {}, _meta: MODERN, ...extra },
      });
    const first = (await call('alice-token-1')).body as { result: Record<string, unknown> };
    assert.equal(first.result.resultType, 'input_required');
    const requests = first.result.inputRequests as Record<string, { method: string }>;
    const [key] = Object.keys(requests);
    assert.equal(requests[key!]!.method, 'elicitation/create');
    const state = first.result.requestState as string;
    // Bob cannot complete Alice's parked call, even with her exact state.
    const stolen = (
      await call('bob-token-123', {
        requestState: state,
        inputResponses: { [key!]: { action: 'accept', content: { response: 'bob' } } },
      })
    ).body as { error: { code: number } };
    assert.equal(stolen.error.code, -32602);
    // No answer for the open key: the same question comes back.
    const again = (await call('alice-token-1', { requestState: state, inputResponses: { other: {} } })).body as {
      result: Record<string, unknown>;
    };
    assert.equal(again.result.resultType, 'input_required');
    assert.deepEqual(Object.keys(again.result.inputRequests as object), [key]);
    const done = (
      await call('alice-token-1', {
        requestState: again.result.requestState,
        inputResponses: { [key!]: { action: 'accept', content: { response: 'alice' } } },
      })
    ).body as { result: Record<string, unknown> };
    assert.equal(done.result.resultType, 'complete');
    assert.equal(textOf(done.result), 'User response: action=accept, content={"response":"alice"}');
    // The parked call is gone once it completed: its state cannot be used twice.
    const twice = (
      await call('alice-token-1', {
        requestState: again.result.requestState,
        inputResponses: { [key!]: { action: 'accept', content: {} } },
      })
    ).body as { error: { code: number; message: string } };
    assert.equal(twice.error.code, -32602);
    assert.match(twice.error.message, /no longer pending/);
  });

  it('a parked write keeps its lease until it ends: another agent meanwhile gets conflict, then its turn', async () => {
    const url = `${bus.url}/locked`;
    const call = (token: string, extra: Record<string, unknown> = {}) =>
      post(url, token, {
        jsonrpc: '2.0',
        id: 5,
        method: 'tools/call',
        params: { name: 'test_elicitation', arguments: {}, _meta: MODERN, ...extra },
      });
    const answer = async (token: string, first: { result: Record<string, unknown> }, text: string) => {
      const [key] = Object.keys(first.result.inputRequests as object);
      const done = (
        await call(token, {
          requestState: first.result.requestState,
          inputResponses: { [key!]: { action: 'accept', content: { response: text } } },
        })
      ).body as { result: Record<string, unknown> };
      assert.equal(textOf(done.result), `User response: action=accept, content={"response":"${text}"}`);
    };
    const alice = (await call('alice-token-1')).body as { result: Record<string, unknown> };
    assert.equal(alice.result.resultType, 'input_required');
    const blocked = (await call('bob-token-123')).body as { result: TextResult };
    assert.equal(blocked.result.isError, true);
    assert.equal(busErrorStrict(blocked.result as ToolCallResult).category, 'conflict');
    await answer('alice-token-1', alice, 'alice');
    const bob = (await call('bob-token-123')).body as { result: Record<string, unknown> };
    assert.equal(bob.result.resultType, 'input_required', 'the lease is free once the parked write ended');
    await answer('bob-token-123', bob, 'bob');
  });

  it('a 2025-era request cannot carry a multi round-trip state past the seal', async () => {
    const url = `${bus.url}/modern`;
    const name = 'test_input_required_result_request_state';
    const first = (
      await post(url, 'bob-token-123', {
        jsonrpc: '2.0',
        id: 7,
        method: 'tools/call',
        params: { name, arguments: {}, _meta: MODERN },
      })
    ).body as { result: Record<string, unknown> };
    // The upstream's own state, read out of toolbus's seal (its payload is not secret, only bound).
    const payload = String(first.result.requestState).split('.')[1]!;
    const inner = (JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { s: unknown }).s;
    const smuggled = (
      await post(url, 'alice-token-1', {
        jsonrpc: '2.0',
        id: 8,
        method: 'tools/call',
        params: {
          name,
          arguments: {},
          requestState: inner,
          inputResponses: { confirm: { action: 'accept', content: { ok: true } } },
        },
      })
    ).body as { error?: { code: number } };
    // The fields were dropped: the upstream asked for input again, which this JSON request cannot take, so the
    // upstream's own refusal (-32021, elicitation not declared) comes back, not its completion.
    assert.equal(smuggled.error?.code, -32021, JSON.stringify(smuggled).slice(0, 300));
    assert.doesNotMatch(JSON.stringify(smuggled), /state-ok/);
  });

  it("the upstream's requestState is sealed: altered or replayed by another agent it is refused", async () => {
    const url = `${bus.url}/both`;
    const call = (token: string, extra: Record<string, unknown>) =>
      post(url, token, {
        jsonrpc: '2.0',
        id: 2,
        method: 'tools/call',
        params: {
          name: 'test_input_required_result_request_state',
          arguments: { idempotency_key: 'seal-key-1' },
          _meta: MODERN,
          ...extra,
        },
      });
    const first = (await call('alice-token-1', {})).body as { result: Record<string, unknown> };
    assert.equal(first.result.resultType, 'input_required');
    const state = first.result.requestState as string;
    assert.match(state, /^tb1\./);
    const answer = { inputResponses: { confirm: { action: 'accept', content: { ok: true } } } };
    const flipped = state.slice(0, 10) + (state[10] === 'A' ? 'B' : 'A') + state.slice(11);
    for (const [token, s] of [
      ['alice-token-1', flipped],
      ['bob-token-123', state],
    ] as const) {
      const refused = (await call(token, { ...answer, requestState: s })).body as { error: { code: number } };
      assert.equal(refused.error.code, -32602, `${token} with ${s === state ? 'the real' : 'an altered'} state`);
    }
    const done = (await call('alice-token-1', { ...answer, requestState: state })).body as {
      result: Record<string, unknown>;
    };
    assert.equal(done.result.resultType, 'complete');
    assert.match(textOf(done.result), /state-ok/);
  });

  it('SEP-2243: headers that disagree with the body are -32020 (HTTP 400); Mcp-Param headers reach the upstream', async () => {
    const url = `${bus.url}/both`;
    const body = (region: string) => ({
      jsonrpc: '2.0',
      id: 4,
      method: 'tools/call',
      params: { name: 'test_custom_header', arguments: { region }, _meta: MODERN },
    });
    const base = { 'mcp-method': 'tools/call', 'mcp-name': 'test_custom_header' };
    const cases: [string, Record<string, string>][] = [
      ['a method header naming another method', { ...base, 'mcp-method': 'tools/list', 'mcp-param-region': 'eu' }],
      ['no method header', { 'mcp-name': 'test_custom_header', 'mcp-param-region': 'eu' }],
      ['a name header naming another tool', { ...base, 'mcp-name': 'other', 'mcp-param-region': 'eu' }],
      ['no name header', { 'mcp-method': 'tools/call', 'mcp-param-region': 'eu' }],
      ['no param header while the body has the argument', base],
      ['a param header that disagrees', { ...base, 'mcp-param-region': 'us' }],
      ['a param header whose Base64 is not canonical', { ...base, 'mcp-param-region': '=?base64?ZX!?=' }],
    ];
    for (const [what, headers] of cases) {
      const r = await post(url, 'alice-token-1', body('eu'), { 'mcp-method': '', 'mcp-name': '', ...headers });
      assert.equal(r.status, 400, what);
      assert.equal((r.body as { error: { code: number } }).error.code, -32020, what);
    }
    // Agreeing headers, one of them in Base64: the call goes through, and the upstream (which checks them too) got
    // the header from toolbus, or it would have refused.
    const ok = await post(url, 'alice-token-1', body('Zürich'), {
      ...base,
      'mcp-param-region': `=?base64?${Buffer.from('Zürich').toString('base64')}?=`,
    });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(textOf((ok.body as { result: unknown }).result), 'region=Zürich');
  });

  it("each round a 2026 agent sends is a call under the upstream's rate limit, refused in a structured way", async () => {
    const call = (extra: Record<string, unknown> = {}) =>
      post(`${bus.url}/capped`, 'alice-token-1', {
        jsonrpc: '2.0',
        id: 6,
        method: 'tools/call',
        params: { name: 'test_input_required_result_request_state', arguments: {}, _meta: MODERN, ...extra },
      });
    const first = (await call()).body as { result: Record<string, unknown> };
    assert.equal(first.result.resultType, 'input_required');
    const retry = {
      requestState: first.result.requestState,
      inputResponses: { confirm: { action: 'accept', content: { ok: true } } },
    };
    const limited = (await call(retry)).body as { result: TextResult };
    const err = busErrorStrict(limited.result as ToolCallResult);
    assert.equal(err.category, 'rate_limited');
    assert.ok((err.retryAfterMs ?? 0) > 0);
    await new Promise((r) => setTimeout(r, err.retryAfterMs));
    const done = (await call(retry)).body as { result: Record<string, unknown> };
    assert.match(textOf(done.result), /state-ok/, 'the same sealed state still completes after the wait');
  });

  it('a keyed write that came back input-required keeps its key open; the completion is what replays', async () => {
    const url = `${bus.url}/both`;
    const call = (extra: Record<string, unknown>) =>
      post(url, 'alice-token-1', {
        jsonrpc: '2.0',
        id: 3,
        method: 'tools/call',
        params: {
          name: 'test_input_required_result_request_state',
          arguments: { idempotency_key: 'mrtr-write-1' },
          _meta: MODERN,
          ...extra,
        },
      });
    const first = (await call({})).body as { result: Record<string, unknown> };
    assert.equal(first.result.resultType, 'input_required');
    // The same key again without answers: asked again (the key is open, not completed with the question).
    const second = (await call({})).body as { result: Record<string, unknown> };
    assert.equal(second.result.resultType, 'input_required');
    assert.equal((second.result._meta as Record<string, unknown> | undefined)?.['toolbus/replayed'], undefined);
    const done = (
      await call({
        requestState: second.result.requestState,
        inputResponses: { confirm: { action: 'accept', content: { ok: true } } },
      })
    ).body as { result: Record<string, unknown> };
    assert.match(textOf(done.result), /state-ok/);
    const replay = (await call({})).body as { result: Record<string, unknown> };
    assert.equal(replay.result.resultType, 'complete');
    assert.match(textOf(replay.result), /state-ok/);
    assert.equal((replay.result._meta as Record<string, unknown>)['toolbus/replayed'], true);
  });
});

describe('a sealed requestState across replicas', () => {
  const prefix = `tb-eras-${process.pid}-${Date.now()}:`;
  const REDIS_URL = 'redis://127.0.0.1:6379/0';
  let reference: ChildProcess;
  let replicas: BusProcess[] = [];
  before(async () => {
    const started = await startReference();
    reference = started.child;
    const yaml = `
store: { kind: redis, url: "${REDIS_URL}", prefix: "${prefix}" }
agents: [{ id: alice, token: "alice-token-1" }]
upstreams:
  both:
    url: ${started.url}
    tools:
      test_input_required_result_request_state: { kind: read }
`;
    replicas = await Promise.all([startBus(yaml), startBus(yaml)]);
  });
  after(async () => {
    await Promise.all(replicas.map((b) => b.stop()));
    reference?.kill();
    const redis = new Redis(REDIS_URL);
    try {
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length > 0) await redis.del(...keys);
    } finally {
      redis.disconnect();
    }
  });

  it('a state sealed by one replica opens on another (the key is shared through the store)', async () => {
    const call = (bus: BusProcess, extra: Record<string, unknown> = {}) =>
      post(`${bus.url}/both`, 'alice-token-1', {
        jsonrpc: '2.0',
        id: 1,
        method: 'tools/call',
        params: { name: 'test_input_required_result_request_state', arguments: {}, _meta: MODERN, ...extra },
      });
    const first = (await call(replicas[0]!)).body as { result: Record<string, unknown> };
    assert.equal(first.result.resultType, 'input_required');
    const done = (
      await call(replicas[1]!, {
        requestState: first.result.requestState,
        inputResponses: { confirm: { action: 'accept', content: { ok: true } } },
      })
    ).body as { result: Record<string, unknown> };
    assert.match(textOf(done.result), /state-ok/);
  });
});
