// The load generator, run as its own process (node bench/lib/loadgen.mjs '<json options>') so it never shares an
// event loop with a server under test. C sessions, one call in flight each, raw node:http with keep-alive and
// pre-built headers; latencies recorded for the measured window only (after the warm-up). Prints one JSON line.
//
// Options: url, tokens (one per session, cycled), sessions, warmupMs, durationMs, stateful (initialize first),
// tool, args ('echo' | 'write-unique' | 'write-one' | 'replay' | 'counter-unique-entity'), headers (extra),
// honorRetryAfter (on rate_limited: wait retryAfterMs, retry the same call, count whether it got in), once (each
// session sends a single call, all at the same moment: a burst).
import http from 'node:http';

const o = JSON.parse(process.argv[2]);
const url = new URL(o.url);
const agent = new http.Agent({ keepAlive: true, maxSockets: o.sessions, maxFreeSockets: o.sessions });
let rpcId = 0;

function request(headers, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: 'POST',
        agent,
        headers: { ...headers, 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

function argsFor(session, seq) {
  switch (o.args) {
    case 'write-unique':
      return { entity: `e${session}`, idempotency_key: `k-${process.pid}-${session}-${seq}` };
    case 'write-one':
      return { entity: 'one', idempotency_key: `k-${process.pid}-${session}-${seq}` };
    case 'replay':
      return { entity: 'replayed', idempotency_key: 'replay-key-000001' };
    case 'counter-unique-entity':
      return { entity: `e${session}-${seq}`, idempotency_key: `k-${process.pid}-${session}-${seq}` };
    default:
      return { text: `s${session}-${seq}` };
  }
}

function parse(text) {
  if (text.startsWith('{')) return JSON.parse(text);
  const data = text
    .split('\n')
    .filter((l) => l.startsWith('data:'))
    .map((l) => l.slice(5).trim())
    .filter(Boolean);
  for (const d of data) {
    const m = JSON.parse(d);
    if ('result' in m || 'error' in m) return m;
  }
  return {};
}

const latencies = [];
const perToken = {};
const errors = {};
let retriesTried = 0;
let retriesAdmitted = 0;
const t0 = performance.now();
const measureFrom = t0 + (o.warmupMs ?? 1000);
const stopAt = measureFrom + o.durationMs;

async function session(i) {
  const token = o.tokens[i % o.tokens.length];
  const headers = {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    ...(token ? { authorization: `Bearer ${token}` } : {}),
    ...(o.headers ?? {}),
  };
  if (o.stateful) {
    const init = await request(
      headers,
      JSON.stringify({
        jsonrpc: '2.0',
        id: ++rpcId,
        method: 'initialize',
        params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'loadgen', version: '1' } },
      }),
    );
    const sid = init.headers['mcp-session-id'];
    if (sid) headers['mcp-session-id'] = sid;
    await request(headers, JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }));
  }
  for (let seq = 0; o.once ? seq < 1 : performance.now() < stopAt; seq++) {
    const body = JSON.stringify({
      jsonrpc: '2.0',
      id: ++rpcId,
      method: 'tools/call',
      params: { name: o.tool, arguments: argsFor(i, seq) },
    });
    let started = performance.now();
    let res = parse((await request(headers, body)).text);
    let category =
      res.result?._meta?.['toolbus/error']?.category ??
      (res.error ? 'rpc_error' : res.result?.isError ? 'tool_error' : null);
    if (category === 'rate_limited' && o.honorRetryAfter) {
      await new Promise((r) => setTimeout(r, res.result._meta['toolbus/error'].retryAfterMs ?? 0));
      retriesTried++;
      started = performance.now();
      res = parse((await request(headers, body)).text);
      category = res.result?._meta?.['toolbus/error']?.category ?? null;
      if (category !== 'rate_limited') retriesAdmitted++;
    }
    const done = performance.now();
    if (o.once || (started >= measureFrom && done <= stopAt)) {
      if (category) errors[category] = (errors[category] ?? 0) + 1;
      else {
        latencies.push(done - started);
        perToken[token] = (perToken[token] ?? 0) + 1;
      }
    }
  }
}

await Promise.all(Array.from({ length: o.sessions }, (_, i) => session(i)));
latencies.sort((a, b) => a - b);
const q = (p) =>
  latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : null;
process.stdout.write(
  `${JSON.stringify({
    calls: latencies.length,
    rps: latencies.length / (o.durationMs / 1000),
    p50: q(0.5),
    p99: q(0.99),
    errors,
    perToken,
    retries: { tried: retriesTried, admitted: retriesAdmitted },
  })}\n`,
);
agent.destroy();
