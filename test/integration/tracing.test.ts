// OpenTelemetry traces end to end: the bus exports OTLP/HTTP (JSON here, and protobuf, the default, in one test) to a
// collector this test runs on loopback, continues the agent's W3C traceparent (from `_meta` or the HTTP header) and
// hands the upstream a traceparent naming the upstream-call span. Off by default: without OTEL_* variables nothing is
// exported.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseTraceparent } from '../../src/observe/tracing.js';
import { type BusProcess, LAB_SERVER, startBus, tempDir } from '../helpers/bus-process.js';
import { AgentClient, post } from '../helpers/mcp-http.js';
import { waitFor } from '../helpers/wait.js';

interface Span {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: { key: string; value: Record<string, unknown> }[];
  status: { code: number; message?: string };
}

const yaml = (dir: string) => `
store: { kind: sqlite, path: ${join(dir, 'state.db')} }
agents: [{ id: tracer, token: "tracing-agent-token" }]
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    env: { LAB_STATE: ${join(dir, 'lab.json')} }
    maxConcurrency: 1
    tools:
      get_meta: { kind: read }
      slow: { kind: read }
      counter_incr: { kind: write, lease: ["counter:{/entity}"] }
`;

const AGENT_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const AGENT_SPAN = '00f067aa0ba902b7';

function attr(span: Span, key: string): unknown {
  const v = span.attributes.find((a) => a.key === key)?.value;
  return v ? Object.values(v)[0] : undefined;
}

function upstreamMeta(result: { content?: { text?: string }[] }): Record<string, unknown> {
  return (JSON.parse(result.content?.[0]?.text ?? '{}') as { meta: Record<string, unknown> }).meta;
}

describe('OpenTelemetry tracing', () => {
  const dir = tempDir();
  const bodies: Record<string, unknown>[] = [];
  const paths: string[] = [];
  const protobufBodies: Buffer[] = [];
  let collector: Server;
  let bus: BusProcess;
  let agent: AgentClient;
  const spans = () =>
    bodies.flatMap((b) =>
      (b.resourceSpans as { scopeSpans: { spans: Span[] }[] }[]).flatMap((r) => r.scopeSpans.flatMap((s) => s.spans)),
    );

  before(async () => {
    collector = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => {
        const type = req.headers['content-type'] ?? '';
        const body = Buffer.concat(chunks);
        if (type === 'application/x-protobuf') {
          protobufBodies.push(body);
          res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
          return;
        }
        paths.push(`${req.method} ${req.url} ${type} ${req.headers['x-collector-key']}`);
        bodies.push(JSON.parse(body.toString('utf8')) as Record<string, unknown>);
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
    const port = (collector.address() as { port: number }).port;
    bus = await startBus(yaml(dir), {
      cwd: dir,
      env: {
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
        OTEL_EXPORTER_OTLP_HEADERS: 'x-collector-key=abc%20123',
        OTEL_BSP_SCHEDULE_DELAY: '200',
        OTEL_SERVICE_NAME: 'toolbus-under-test',
      },
    });
    agent = new AgentClient(bus.url, 'tracing-agent-token');
  });
  after(async () => {
    await bus?.stop();
    collector?.close();
  });

  it('continues the agent trace from _meta and gives the upstream our upstream-call span as parent', async () => {
    const result = await agent.call('lab__get_meta', {}, { traceparent: `00-${AGENT_TRACE}-${AGENT_SPAN}-01` });
    const seen = parseTraceparent(upstreamMeta(result).traceparent);
    assert.ok(seen, 'the upstream got a valid traceparent');
    assert.equal(seen.traceId, AGENT_TRACE);
    assert.notEqual(seen.spanId, AGENT_SPAN);
    await waitFor(() => spans().some((s) => s.spanId === seen.spanId), 5000, 'the upstream-call span exported');
    const up = spans().find((s) => s.spanId === seen.spanId)!;
    assert.equal(up.name, 'upstream call');
    assert.equal(up.kind, 3);
    const call = spans().find((s) => s.spanId === up.parentSpanId)!;
    assert.equal(call.name, 'tools/call lab__get_meta');
    assert.equal(call.traceId, AGENT_TRACE);
    assert.equal(call.parentSpanId, AGENT_SPAN);
    assert.equal(call.kind, 2);
    assert.equal(attr(call, 'toolbus.agent'), 'tracer');
    assert.equal(attr(call, 'toolbus.outcome'), 'ok');
    assert.ok(BigInt(call.endTimeUnixNano) >= BigInt(up.endTimeUnixNano));
    assert.ok(BigInt(up.startTimeUnixNano) >= BigInt(call.startTimeUnixNano));
    assert.ok(spans().some((s) => s.parentSpanId === call.spanId && s.name === 'queue wait'));
    const resource = (bodies[0]!.resourceSpans as { resource: { attributes: Span['attributes'] } }[])[0]!.resource;
    assert.ok(
      resource.attributes.some((a) => a.key === 'service.name' && a.value.stringValue === 'toolbus-under-test'),
    );
    assert.match(paths[0]!, /^POST \/v1\/traces application\/json abc 123$/);
  });

  it('takes the traceparent from the HTTP header when _meta has none', async () => {
    const trace = 'aaaabbbbccccddddeeeeffff00001111';
    const r = await post(
      bus.url,
      'tracing-agent-token',
      { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'lab__get_meta', arguments: {} } },
      { traceparent: `00-${trace}-1111222233334444-01` },
    );
    const result = (r.body as { result: { content: { text: string }[] } }).result;
    assert.equal(parseTraceparent(upstreamMeta(result).traceparent)?.traceId, trace);
    await waitFor(() => spans().some((s) => s.traceId === trace && s.parentSpanId === '1111222233334444'), 5000);
  });

  it('a write that waits for its lease and its queue slot has both child spans, and errors are marked', async () => {
    const slow = agent.call('lab__slow', { ms: 400 });
    await new Promise((r) => setTimeout(r, 100));
    const first = agent.call('lab__counter_incr', { entity: 'e1', delay_ms: 300, idempotency_key: 'k-trace-1' });
    await new Promise((r) => setTimeout(r, 50));
    const second = agent.call('lab__counter_incr', { entity: 'e1', idempotency_key: 'k-trace-2' });
    await Promise.all([slow, first, second]);
    await waitFor(
      () => spans().filter((s) => s.name === 'tools/call lab__counter_incr').length >= 2,
      5000,
      'write spans',
    );
    const writes = spans().filter((s) => s.name === 'tools/call lab__counter_incr');
    const children = (id: string) => spans().filter((s) => s.parentSpanId === id);
    const waited = writes.find((w) => children(w.spanId).some((c) => c.name === 'lease wait'));
    assert.ok(waited, 'a lease wait span');
    const leaseSpan = children(waited.spanId).find((c) => c.name === 'lease wait')!;
    const queueSpan = children(waited.spanId).find((c) => c.name === 'queue wait')!;
    assert.ok(queueSpan, 'a queue wait span');
    assert.ok(BigInt(queueSpan.startTimeUnixNano) >= BigInt(leaseSpan.endTimeUnixNano));
    assert.ok(writes.every((w) => attr(w, 'toolbus.idempotency_key_present') === true));
    // An error is marked on the call span.
    await agent.call('lab__counter_incr', { entity: 'e2' });
    await waitFor(() => spans().some((s) => s.status.code === 2 && s.status.message === 'validation'), 5000);
  });

  it('exports OTLP protobuf when no protocol is set (the specification default)', async () => {
    const port = (collector.address() as { port: number }).port;
    const proto = await startBus(yaml(tempDir()), {
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`, OTEL_BSP_SCHEDULE_DELAY: '100' },
    });
    try {
      const trace = 'cccc0000dddd1111eeee2222ffff3333';
      await new AgentClient(proto.url, 'tracing-agent-token').call(
        'lab__get_meta',
        {},
        { traceparent: `00-${trace}-${AGENT_SPAN}-01` },
      );
      // Protobuf carries ids as raw bytes and names as UTF-8: both are in the body the collector got.
      const has = (b: Buffer) => b.includes(Buffer.from(trace, 'hex')) && b.includes('tools/call lab__get_meta');
      await waitFor(() => protobufBodies.some(has), 5000, 'a protobuf export with the call span');
      assert.match(proto.stderr(), /tracing on/);
    } finally {
      await proto.stop();
    }
  });

  it('a collector that refuses costs only dropped spans and one warning, with its header scrubbed', async () => {
    // A collector (or a proxy before it) that refuses every export with a status line echoing the bearer token.
    const refusing = createServer((req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(401, `refused ${req.headers.authorization}`).end());
    });
    await new Promise<void>((r) => refusing.listen(0, '127.0.0.1', r));
    const port = (refusing.address() as { port: number }).port;
    const down = await startBus(yaml(tempDir()), {
      env: {
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
        OTEL_EXPORTER_OTLP_HEADERS: 'authorization=Bearer%20collector-secret-7781',
        OTEL_BSP_SCHEDULE_DELAY: '50',
      },
    });
    try {
      const agentDown = new AgentClient(down.url, 'tracing-agent-token');
      for (let i = 0; i < 4; i++) {
        assert.ok(await agentDown.call('lab__get_meta', {}), 'calls are served while every export fails');
        await new Promise((r) => setTimeout(r, 250));
      }
      await waitFor(() => /trace export failed/.test(down.stderr()), 10_000, 'the export warning');
      // Several batches failed by now (one every 50 ms while calls came); the warning is said once a minute.
      assert.equal(down.stderr().match(/trace export failed/g)?.length, 1);
      assert.match(down.stderr(), /refused/, 'the warning says what the collector answered');
      assert.doesNotMatch(down.stderr(), /collector-secret-7781/);
    } finally {
      await down.stop();
      refusing.close();
    }
  });

  it('is off by default: a bus without OTEL_* variables exports nothing, yet passes the agent traceparent on', async () => {
    const quiet = await startBus(yaml(tempDir()));
    try {
      const before = bodies.length;
      const tp = `00-${AGENT_TRACE}-${AGENT_SPAN}-01`;
      const result = await new AgentClient(quiet.url, 'tracing-agent-token').call(
        'lab__get_meta',
        {},
        { traceparent: tp },
      );
      assert.equal(upstreamMeta(result).traceparent, tp);
      await new Promise((r) => setTimeout(r, 600));
      assert.equal(bodies.length, before);
      assert.doesNotMatch(quiet.stderr(), /tracing on/);
    } finally {
      await quiet.stop();
    }
  });
});

describe('W3C traceparent parsing', () => {
  it('accepts version 00 and rejects malformed or all-zero ids', () => {
    assert.deepEqual(parseTraceparent(`00-${AGENT_TRACE}-${AGENT_SPAN}-01`), {
      traceId: AGENT_TRACE,
      spanId: AGENT_SPAN,
      traceFlags: 1,
    });
    assert.equal(parseTraceparent(`00-${'0'.repeat(32)}-${AGENT_SPAN}-01`), undefined);
    assert.equal(parseTraceparent(`00-${AGENT_TRACE}-${'0'.repeat(16)}-01`), undefined);
    assert.equal(parseTraceparent(`ff-${AGENT_TRACE}-${AGENT_SPAN}-01`), undefined);
    assert.equal(parseTraceparent(`00-${AGENT_TRACE.toUpperCase()}-${AGENT_SPAN}-01`), undefined);
    assert.equal(parseTraceparent(`00-${AGENT_TRACE}-${AGENT_SPAN}-01-extra`), undefined);
    assert.equal(parseTraceparent(`01-${AGENT_TRACE}-${AGENT_SPAN}-01-extra`)?.traceId, AGENT_TRACE);
    assert.equal(parseTraceparent(42), undefined);
  });
});
