// Property-based fuzzing of the agent front and the tool-call path with fast-check, against the real bus process.
// Any JSON-RPC envelope (odd ids, methods, params, nesting) and any tool arguments (deep values, huge numbers,
// strange keys) must get a well-formed answer: a JSON-RPC result or error, or an HTTP refusal with a JSON-RPC error
// body; never a 500, never a hang, never a dead process; and another agent is served afterwards. Runs a few thousand
// cases in `npm test`; `npm run fuzz` runs many more (FUZZ_RUNS).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { type BusProcess, HOSTILE_SERVER, LAB_SERVER, startBus, tempDir } from '../helpers/bus-process.js';
import { AgentClient, post } from '../helpers/mcp-http.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 1500);
const dir = tempDir();
let bus: BusProcess;

const CATEGORIES = new Set([
  'validation',
  'auth',
  'not_found',
  'idempotency_mismatch',
  'in_progress',
  'conflict',
  'rate_limited',
  'timeout',
  'outcome_unknown',
  'upstream_unavailable',
  'upstream_error',
  'store_unavailable',
]);

/** JSON text for a value; numbers that JSON cannot carry (from fc.double) are written as 1e400, as a hostile client would. */
function hostileJson(v: unknown): string {
  if (typeof v === 'number' && !Number.isFinite(v)) return Number.isNaN(v) ? '1e400' : v > 0 ? '1e400' : '-1e400';
  if (Array.isArray(v)) return `[${v.map(hostileJson).join(',')}]`;
  if (v !== null && typeof v === 'object')
    return `{${Object.entries(v)
      .map(([k, x]) => `${JSON.stringify(k)}:${hostileJson(x)}`)
      .join(',')}}`;
  return JSON.stringify(v) ?? 'null';
}

const anyValue = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.constant(null),
    fc.boolean(),
    fc.double(),
    fc.integer(),
    fc.string({ unit: 'binary', maxLength: 40 }),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(fc.string({ maxLength: 10 }), tie('value'), { maxKeys: 4 }),
  ),
})).value;

const methods = fc.oneof(
  fc.constantFrom(
    'tools/call',
    'tools/list',
    'initialize',
    'server/discover',
    'ping',
    'resources/list',
    'resources/read',
    'prompts/get',
    'prompts/list',
    'logging/setLevel',
    'notifications/cancelled',
  ),
  fc.string({ maxLength: 30 }),
  anyValue,
);

const ids = fc.oneof(
  fc.integer(),
  fc.string({ maxLength: 300 }),
  fc.constant(null),
  fc.constant(undefined),
  fc.double(),
  anyValue,
);

const envelope = fc.record(
  {
    jsonrpc: fc.oneof(fc.constant('2.0'), anyValue),
    id: ids,
    method: methods,
    params: fc.oneof(anyValue, fc.record({ name: fc.string({ maxLength: 20 }), arguments: anyValue, _meta: anyValue })),
  },
  { requiredKeys: [] },
);

function checkReply(status: number, text: string): void {
  assert.ok([200, 202, 400, 404, 429].includes(status), `HTTP ${status}: ${text.slice(0, 300)}`);
  if (status === 202) return;
  const body = JSON.parse(text) as unknown;
  const replies = Array.isArray(body) ? body : [body];
  for (const r of replies as Record<string, unknown>[]) {
    assert.equal(r.jsonrpc, '2.0');
    assert.ok('result' in r || 'error' in r, text.slice(0, 300));
    if ('error' in r) assert.equal(typeof (r.error as { code: unknown }).code, 'number');
    const err = ((r.result as Record<string, unknown> | undefined)?._meta as Record<string, unknown> | undefined)?.[
      'toolbus/error'
    ] as { category: string } | undefined;
    // A fuzzed call may fail in any category of the table but `internal` (that would be a bug in toolbus).
    if (err) assert.ok(CATEGORIES.has(err.category), `category ${err.category}: ${text.slice(0, 300)}`);
  }
}

describe('fuzzing the front and the call path', () => {
  before(async () => {
    bus = await startBus(
      `
store: { kind: sqlite, path: ${join(dir, 'state.db')} }
logging: { level: warn }
agents:
  - { id: fuzzer, token: "fuzzer-token-1", tools: ["*"] }
  - { id: other, token: "other-token-12", tools: ["*"] }
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    maxConcurrency: 64
    tools:
      echo: { kind: read }
      echo_args: { kind: read }
      counter_incr: { kind: write, lease: ["c:{/entity}"] }
  hostile:
    command: ${process.execPath}
    args: [${HOSTILE_SERVER}]
    tools:
      numbers: { kind: read }
      evil_pattern: { kind: read }
`,
      { cwd: dir },
    );
  });
  after(async () => {
    await bus?.stop();
  });

  it(`any JSON-RPC envelope gets a well-formed answer (${RUNS} runs)`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(envelope, fc.array(envelope, { minLength: 1, maxLength: 5 })), async (msg) => {
        const r = await post(bus.url, 'fuzzer-token-1', hostileJson(msg));
        checkReply(r.status, r.text);
      }),
      { numRuns: RUNS },
    );
    const ok = await new AgentClient(bus.url, 'other-token-12').call('lab__echo', { text: 'alive' });
    assert.equal(ok.content?.[0]?.text, 'alive');
  });

  it(`any tool arguments get a result or a structured error, never internal (${RUNS} runs)`, async () => {
    const tools = ['lab__echo', 'lab__echo_args', 'lab__counter_incr', 'hostile__numbers', 'hostile__evil_pattern'];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...tools), anyValue, async (name, args) => {
        const body = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":${JSON.stringify(name)},"arguments":${hostileJson(args)}}}`;
        const r = await post(bus.url, 'fuzzer-token-1', body);
        checkReply(r.status, r.text);
      }),
      { numRuns: RUNS },
    );
    const ok = await new AgentClient(bus.url, 'other-token-12').call('lab__echo', { text: 'alive' });
    assert.equal(ok.content?.[0]?.text, 'alive');
    assert.equal(bus.child.exitCode, null);
  });
});
