// Sharing-mode costs (issue 9): what the first call of a new agent costs when it opens a session (per-agent mode)
// compared with a shared upstream, what a call costs once the session is open, and the resident memory per live
// per-agent session, for two upstreams: the lean bench echo server (hand-written JSON-RPC) and the SDK-based stateful
// test fixture (closer to a real MCP server). `node bench/sessions.mjs` (build first); writes
// bench/results/sessions-latest.json. Calls are made one at a time, so each figure is a latency, not a throughput.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { ECHO, ROOT, rssMiB, startBus, tempDir } from './lib/procs.mjs';

const AGENTS = Number(process.env.BENCH_SESSION_AGENTS ?? 16);
const STATEFUL = join(ROOT, 'dist/test/fixtures/stateful-server.js');
const servers = {
  echo: { args: `[${ECHO}]`, tool: 'echo', args0: { text: 'x' } },
  sdk: { args: `[${STATEFUL}]`, tool: 'recall', args0: {} },
};
const token = (i) => `bench-session-token-${i}`;

function yaml() {
  const agents = Array.from({ length: AGENTS }, (_, i) => `  - { id: a${i}, token: "${token(i)}" }`).join('\n');
  let ups = '';
  for (const [name, s] of Object.entries(servers)) {
    for (const mode of ['shared', 'per-agent']) {
      ups += `
  ${name}-${mode}:
    command: ${process.execPath}
    args: ${s.args}
    trustAnnotations: true
    sharing: ${mode}
    maxSessions: ${AGENTS + 4}
    maxConcurrency: 64`;
    }
  }
  return `
store: { kind: memory }
logging: { level: warn }
agents:
${agents}
upstreams:${ups}
`;
}

let rpcId = 1;
async function call(url, i, tool, args) {
  const t0 = performance.now();
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      authorization: `Bearer ${token(i)}`,
    },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: rpcId++,
      method: 'tools/call',
      params: { name: tool, arguments: args },
    }),
  });
  const text = await res.text();
  const ms = performance.now() - t0;
  if (res.status !== 200 || text.includes('"isError":true')) throw new Error(`call failed: ${res.status} ${text}`);
  return ms;
}

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  const r = (x) => Math.round(x * 100) / 100;
  return {
    n: s.length,
    mean: r(s.reduce((a, b) => a + b, 0) / s.length),
    p50: r(q(0.5)),
    p95: r(q(0.95)),
    max: r(s.at(-1)),
  };
};

/** The pids of an upstream's processes, from the dashboard: the shared/listing connection and each live session. */
async function upstreamPids(url, upstream) {
  const snap = await (await fetch(url.replace(/\/mcp$/, '/api/dashboard'))).json();
  const u = snap.upstreams.find((x) => x.name === upstream);
  return { main: u.pid, sessions: u.sessions.list.map((x) => x.pid).filter((p) => p !== null) };
}

const mib = (x) => Math.round(x * 10) / 10;

const dir = tempDir();
const bus = await startBus(yaml(), dir);
const url = bus.url;
const results = {
  machine: { cores: cpus().length, cpu: cpus()[0]?.model, node: process.version, date: new Date().toISOString() },
  agents: AGENTS,
  upstreams: {},
};
try {
  for (const [name, s] of Object.entries(servers)) {
    const entry = {};
    const busRssBefore = rssMiB(bus.pid);
    for (const mode of ['shared', 'per-agent']) {
      const tool = `${name}-${mode}__${s.tool}`;
      const first = [];
      const steady = [];
      for (let i = 0; i < AGENTS; i++) first.push(await call(url, i, tool, s.args0));
      for (let round = 0; round < 5; round++)
        for (let i = 0; i < AGENTS; i++) steady.push(await call(url, i, tool, s.args0));
      entry[mode] = { firstCallMs: stats(first), steadyCallMs: stats(steady) };
    }
    const shared = await upstreamPids(url, `${name}-shared`);
    const perAgent = await upstreamPids(url, `${name}-per-agent`);
    const sessionRss = perAgent.sessions.map(rssMiB);
    entry.shared.processes = 1;
    entry.shared.rssMiB = mib(rssMiB(shared.main));
    entry['per-agent'].processes = perAgent.sessions.length + 1;
    entry['per-agent'].rssPerSessionMiB = mib(sessionRss.reduce((a, b) => a + b, 0) / sessionRss.length);
    entry['per-agent'].rssListingSessionMiB = mib(rssMiB(perAgent.main));
    entry['per-agent'].rssTotalMiB = mib(sessionRss.reduce((a, b) => a + b, 0) + rssMiB(perAgent.main));
    entry.busRssGrowthMiB = mib(rssMiB(bus.pid) - busRssBefore);
    results.upstreams[name] = entry;
    process.stdout.write(`${name}: ${JSON.stringify(entry)}\n`);
  }
} finally {
  await bus.stop();
}
mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
writeFileSync(join(ROOT, 'bench/results/sessions-latest.json'), `${JSON.stringify(results, null, 2)}\n`);
process.stdout.write('wrote bench/results/sessions-latest.json\n');
