// toolbus benchmarks: `npm run bench` (all scenarios) or `node bench/run.mjs front pipeline ...` (some).
// Every ratio is measured side by side in one run on this machine; the load generator runs in its own process.
// Results: bench/results/latest.json and latest.md, plus a timestamped copy of the JSON.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import {
  childPids,
  descendantPids,
  ECHO,
  echoBusYaml,
  ROOT,
  rssMiB,
  runDirect,
  runLoad,
  runLoadWithCpu,
  startBus,
  startProcess,
  tempDir,
} from './lib/procs.mjs';

const DURATION = Number(process.env.BENCH_DURATION_MS ?? 4000);
const WARMUP = 1000;
const TOKEN = 'bench-token-0001';
const results = {
  machine: { cores: cpus().length, cpu: cpus()[0]?.model, node: process.version, date: new Date().toISOString() },
  scenarios: {},
};
const md = [];
const round = (x, d = 2) => (x === null || x === undefined ? null : Math.round(x * 10 ** d) / 10 ** d);
const row = (cells) => md.push(`| ${cells.join(' | ')} |`);

const loadOptions = (url, extra) => ({
  url,
  tokens: [TOKEN],
  sessions: 64,
  warmupMs: WARMUP,
  durationMs: DURATION,
  tool: 'echo__echo',
  stateful: true,
  ...extra,
});
const load = (url, extra) => runLoad(loadOptions(url, extra));
/** A load, and the CPU the load generator and the server (with its child processes) used meanwhile. */
const loadWithCpu = (url, extra, pid) =>
  runLoadWithCpu(loadOptions(url, extra), { server: [pid, ...descendantPids(pid)] });
/**
 * Before a scenario measures a server at low concurrency, it runs this long at 8 sessions on each path it will
 * measure, unrecorded, so V8 has compiled the hot code of every server alike: a fresh bus runs partly in baseline code
 * for seconds at 1 agent (about 1,500 calls a second), far longer than the tiny relay, and the figures would measure
 * V8's tiering rather than the gateway. The first calls after a start are not what an operator lives with.
 */
const WARM_MS = 3000;
const warm = (url, extra) => runLoad(loadOptions(url, { sessions: 8, warmupMs: 0, durationMs: WARM_MS, ...extra }));

/** Above this, the load generator had a core to itself and no more: it, not the server, set the pace. */
const LOADGEN_BOUND_CORES = 0.9;

async function front() {
  const bare = await startProcess(process.execPath, [join(ROOT, 'bench/bare-responder.mjs')], /listening (\d+)/);
  const bareR = await loadWithCpu(
    `http://127.0.0.1:${bare.match}/mcp`,
    { tokens: [null], stateful: false, tool: 'echo' },
    bare.child.pid,
  );
  await bare.stop();

  const bus = await startBus(echoBusYaml());
  const busR = await loadWithCpu(bus.url, {}, bus.pid);
  await bus.stop();

  const port = 17000 + Math.floor(Math.random() * 1000);
  const proxy = await startProcess(
    process.execPath,
    [
      join(ROOT, 'node_modules/mcp-proxy/dist/bin/mcp-proxy.mjs'),
      '--port',
      String(port),
      '--host',
      '127.0.0.1',
      '--server',
      'stream',
      '--',
      process.execPath,
      ECHO,
    ],
    /starting server on port (\d+)/,
  );
  const proxyProcs = descendantPids(proxy.child.pid).length;
  const proxyR = await loadWithCpu(`http://127.0.0.1:${port}/mcp`, { tokens: [null], tool: 'echo' }, proxy.child.pid);
  await proxy.stop();

  const s = {
    sessions: 64,
    toolbus: busR,
    mcpProxy: { ...proxyR, upstreamProcesses: proxyProcs },
    bare: bareR,
    ratioVsMcpProxy: round(busR.rps / proxyR.rps),
    ratioVsBare: round(busR.rps / bareR.rps),
    // The same comparison in CPU: server time per call, bare ÷ toolbus (toolbus's upstream process included).
    cpuRatioVsBare: round(bareR.cpu.servers.server.usPerCall / busR.cpu.servers.server.usPerCall),
    loadgenBound: bareR.cpu.loadgenCores >= LOADGEN_BOUND_CORES,
  };
  results.scenarios.front = s;
  md.push('## Front throughput, 64 sessions, one call in flight each (echo read tool, stdio upstream)', '');
  row(['target', 'calls/s', 'p50 ms', 'p99 ms', 'server CPU µs per call (cores)', 'load generator cores', 'errors']);
  row(['---', '---', '---', '---', '---', '---', '---']);
  for (const [name, r] of [
    ['toolbus (with its upstream process)', busR],
    ['mcp-proxy (with its upstream process)', proxyR],
    ['bare node:http responder', bareR],
  ]) {
    const server = r.cpu.servers.server;
    row([
      name,
      Math.round(r.rps),
      round(r.p50),
      round(r.p99),
      `${round(server.usPerCall, 1)} (${round(server.cores)})`,
      round(r.cpu.loadgenCores),
      JSON.stringify(r.errors),
    ]);
  }
  md.push(
    '',
    `toolbus ÷ mcp-proxy = **${s.ratioVsMcpProxy}×** (target ≥ 3×); toolbus ÷ bare = **${s.ratioVsBare}×** (target ≥ 0.75×, DESIGN.md §12). mcp-proxy ran ${proxyProcs} processes for 64 sessions.`,
    '',
    `Per call in CPU, bare ÷ toolbus = **${s.cpuRatioVsBare}×**: what the ratio would be if each server had a core of its own and the load cost nothing. ${
      s.loadgenBound
        ? `The load generator used ${round(bareR.cpu.loadgenCores)} cores against the bare responder: it, not the responder, set that pace, so the calls/s ratio above flatters toolbus; the CPU ratio does not.`
        : 'The load generator had CPU to spare in every run, so the calls/s ratio stands.'
    }`,
    '',
  );
}

async function direct() {
  const bus = await startBus(echoBusYaml());
  const relay = await startProcess(process.execPath, [join(ROOT, 'bench/floor-relay.mjs')], /listening (\d+)/);
  const relayUrl = `http://127.0.0.1:${relay.match}/mcp`;
  warm(bus.url);
  warm(relayUrl, { tokens: [null], stateful: false, tool: 'echo' });
  const rows = [];
  for (const c of [1, 8, 64]) {
    const viaBus = load(bus.url, { sessions: c });
    const viaRelay = load(relayUrl, { sessions: c, tokens: [null], stateful: false, tool: 'echo' });
    // It starts its own upstream each time: its warm-up is as long as the bus's and the relay's together.
    const straight = runDirect({ sessions: c, warmupMs: WARMUP + WARM_MS, durationMs: DURATION });
    rows.push({
      agents: c,
      bus: viaBus,
      relay: viaRelay,
      direct: straight,
      addedP50Ms: round(viaBus.p50 - straight.p50, 3),
      relayAddedP50Ms: round(viaRelay.p50 - straight.p50, 3),
    });
  }
  await relay.stop();
  await bus.stop();
  results.scenarios.busVsDirect = rows;
  md.push('## Through toolbus vs straight to the stdio upstream', '');
  row([
    'agents',
    'bus calls/s',
    'bus p50 / p99 ms',
    'direct calls/s',
    'direct p50 / p99 ms',
    'added p50 ms',
    'minimal relay: added p50 ms',
  ]);
  row(['---', '---', '---', '---', '---', '---', '---']);
  for (const r of rows) {
    row([
      r.agents,
      Math.round(r.bus.rps),
      `${round(r.bus.p50, 3)} / ${round(r.bus.p99, 3)}`,
      Math.round(r.direct.rps),
      `${round(r.direct.p50, 3)} / ${round(r.direct.p99, 3)}`,
      r.addedP50Ms,
      r.relayAddedP50Ms,
    ]);
  }
  md.push(
    '',
    "The added p50 at 1 agent includes the HTTP round trip of the agent front (the direct client speaks to the upstream's stdin); target ≤ 0.2 ms (DESIGN.md §12; the first release's was 0.3 ms). The minimal relay (`floor-relay.mjs`: node:http in, one line to the same upstream, its line out; no MCP, auth or pipeline) shows what an HTTP hop plus a pipe hop cost on this machine before any gateway work.",
    '',
  );
}

async function pipeline() {
  const dir = tempDir();
  const bus = await startBus(
    echoBusYaml({ store: `{ kind: sqlite, path: ${join(dir, 'state.db')} }`, upstream: '' }).replace(
      'counter_incr: { kind: write, lease: ["c:{/entity}"] }',
      'counter_incr: { kind: write, lease: ["c:{/entity}"] }\n      plain: { kind: read }',
    ),
    dir,
  );
  const one = { sessions: 1 };
  warm(bus.url);
  warm(bus.url, { tool: 'echo__counter_incr', args: 'write-unique' });
  const read = load(bus.url, one);
  const write = load(bus.url, { ...one, tool: 'echo__counter_incr', args: 'write-unique' });
  load(bus.url, { ...one, tool: 'echo__counter_incr', args: 'replay', durationMs: 200, warmupMs: 0 });
  const replay = load(bus.url, { ...one, tool: 'echo__counter_incr', args: 'replay' });
  await bus.stop();
  results.scenarios.pipeline = { read, writeWithKeyAndLease: write, replay };
  md.push('## Pipeline cost, 1 agent, sequential calls (SQLite store)', '');
  row(['call', 'calls/s', 'p50 ms', 'p99 ms']);
  row(['---', '---', '---', '---']);
  row([
    'read (plain forward: validate + fair queue + forward)',
    Math.round(read.rps),
    round(read.p50, 3),
    round(read.p99, 3),
  ]);
  row([
    'write with key and lease (claim, dispatch, lease, complete, audit)',
    Math.round(write.rps),
    round(write.p50, 3),
    round(write.p99, 3),
  ]);
  row([
    'replay of a completed key (served from the store)',
    Math.round(replay.rps),
    round(replay.p50, 3),
    round(replay.p99, 3),
  ]);
  md.push('');
}

/** Store round trips and finished calls of one bus, from its /metrics. */
async function scrape(busUrl) {
  const text = await (await fetch(busUrl.replace('/mcp', '/metrics'))).text();
  const trips = Number(/^toolbus_store_round_trips_total (\d+)/m.exec(text)?.[1] ?? 0);
  let calls = 0;
  for (const m of text.matchAll(/^toolbus_calls_total\{[^}]*\} (\d+)/gm)) calls += Number(m[1]);
  return { trips, calls };
}

/** Round trips to the store per call over a run on the given buses. */
async function roundTripsPerCall(urls, fn) {
  const before = await Promise.all(urls.map(scrape));
  const out = await fn();
  const after = await Promise.all(urls.map(scrape));
  const trips = after.reduce((a, x, i) => a + x.trips - before[i].trips, 0);
  const calls = after.reduce((a, x, i) => a + x.calls - before[i].calls, 0);
  return { out, perCall: calls ? round(trips / calls, 2) : null };
}

async function writes() {
  const rows = [];
  const dir = tempDir();
  const prefix = `bench-${process.pid}-${Date.now()}:`;
  const stores = [
    ['memory', '{ kind: memory }'],
    ['sqlite', `{ kind: sqlite, path: ${join(dir, 'w.db')} }`],
    ['redis', `{ kind: redis, url: "redis://127.0.0.1:6379/0", prefix: "${prefix}" }`],
  ];
  for (const [name, store] of stores) {
    const bus = await startBus(echoBusYaml({ store, keyRequired: true }), dir);
    for (const [label, args] of [
      ['16 distinct entities', 'write-unique'],
      ['one entity', 'write-one'],
    ]) {
      const measured = await roundTripsPerCall([bus.url], async () =>
        load(bus.url, { sessions: 16, tool: 'echo__counter_incr', args }),
      );
      rows.push({
        store: name,
        replicas: 1,
        workload: label,
        ...measured.out,
        roundTripsPerCall: name === 'redis' ? measured.perCall : null,
      });
    }
    await bus.stop();
  }
  // Three replicas on one Redis, load spread round robin by sessions.
  const replicas = await Promise.all([0, 1, 2].map(() => startBus(echoBusYaml({ store: stores[2][1] }), dir)));
  for (const [label, args] of [
    ['16 distinct entities', 'write-unique'],
    ['one entity', 'write-one'],
  ]) {
    const outs = replicas.map(() => null);
    const measured = await roundTripsPerCall(
      replicas.map((r) => r.url),
      async () => {
        const { spawn } = await import('node:child_process');
        const runs = replicas.map(
          (rep) =>
            new Promise((resolve) => {
              const c = spawn(process.execPath, [
                join(ROOT, 'bench/lib/loadgen.mjs'),
                JSON.stringify({
                  url: rep.url,
                  tokens: [TOKEN],
                  sessions: 6,
                  warmupMs: WARMUP,
                  durationMs: DURATION,
                  tool: 'echo__counter_incr',
                  args,
                  stateful: true,
                }),
              ]);
              let o = '';
              c.stdout.on('data', (d) => {
                o += d;
              });
              c.on('exit', () => resolve(JSON.parse(o.trim().split('\n').at(-1))));
            }),
        );
        return Promise.all(runs);
      },
    );
    measured.out.forEach((o, i) => {
      outs[i] = o;
    });
    const calls = outs.reduce((a, o) => a + o.calls, 0);
    const p50 = outs.map((o) => o.p50).sort((a, b) => a - b)[1];
    const p99 = Math.max(...outs.map((o) => o.p99));
    rows.push({
      store: 'redis',
      replicas: 3,
      workload: label,
      calls,
      rps: calls / (DURATION / 1000),
      p50,
      p99,
      errors: Object.assign({}, ...outs.map((o) => o.errors)),
      roundTripsPerCall: measured.perCall,
    });
  }
  await Promise.all(replicas.map((r) => r.stop()));
  const r = new Redis('redis://127.0.0.1:6379/0');
  const keys = await r.keys(`${prefix}*`);
  if (keys.length) await r.del(...keys);
  r.disconnect();
  results.scenarios.writes = rows;
  md.push('## Writes with keys and leases, 16 writers (store × replicas × entities)', '');
  row(['store', 'replicas', 'workload', 'calls/s', 'p50 ms', 'p99 ms', 'Redis round trips per call', 'errors']);
  row(['---', '---', '---', '---', '---', '---', '---', '---']);
  for (const x of rows)
    row([
      x.store,
      x.replicas,
      x.workload,
      Math.round(x.rps),
      round(x.p50),
      round(x.p99),
      x.roundTripsPerCall ?? '-',
      JSON.stringify(x.errors),
    ]);
  md.push(
    '',
    "Round trips per call: requests the bus sent to Redis (a Lua script or a MULTI pipeline is one) divided by calls finished, over the whole run, from the buses' own /metrics. All processes (load generator, 1-3 buses, their upstreams, Redis) share the same 2 cores, so 3 replicas here show the cost of coordinating through Redis, not the gain of 3 machines.",
    '',
  );
}

/** Counts every command Redis runs on database `db` (those inside Lua scripts too) while `fn` runs, via MONITOR. */
async function redisCommands(db, fn) {
  const r = new Redis('redis://127.0.0.1:6379/0');
  const monitor = await r.monitor();
  const counts = { total: 0, scripts: 0, byName: {} };
  // The bus's own health probe and pub/sub setup are not part of any call.
  const ignored = new Set(['ping', 'subscribe', 'info', 'client', 'select', 'quit']);
  monitor.on('monitor', (_time, args, _source, database) => {
    if (String(database) !== String(db)) return;
    const name = String(args[0]).toLowerCase();
    if (ignored.has(name)) return;
    counts.total++;
    if (name === 'evalsha' || name === 'eval') counts.scripts++;
    counts.byName[name] = (counts.byName[name] ?? 0) + 1;
  });
  try {
    const out = await fn();
    // Let the last audit batch (sent up to 20 ms after its call) reach MONITOR.
    await new Promise((res) => setTimeout(res, 200));
    return { out, counts };
  } finally {
    monitor.disconnect();
    r.disconnect();
  }
}

/**
 * Issue 13, "safety at the price of a read": every figure of DESIGN.md §12 about the write path, in one run.
 * SQLite: 1 agent read vs keyed leased write vs replay (p50), 16 readers vs 16 keyed writers on distinct entities
 * (calls/s). Redis: commands (counting those inside Lua) and round trips per keyed leased write, and per read with
 * and without a rate limit.
 */
async function safety() {
  const dir = tempDir();
  const s = {};
  const sqlite = await startBus(echoBusYaml({ store: `{ kind: sqlite, path: ${join(dir, 'safety.db')} }` }), dir);
  // The machine is shared: reads and writes are measured in alternating slices and each figure is the median of its
  // slices, so a burst of load from elsewhere lands on both sides of a ratio rather than on one.
  const rounds = 3;
  const slice = { durationMs: Math.max(500, Math.round(DURATION / rounds)), warmupMs: 300 };
  const runs = { read1: [], write1: [], replay1: [], read16: [], write16: [] };
  warm(sqlite.url);
  warm(sqlite.url, { tool: 'echo__counter_incr', args: 'write-unique' });
  load(sqlite.url, { sessions: 1, tool: 'echo__counter_incr', args: 'replay', durationMs: 200, warmupMs: 0 });
  for (let i = 0; i < rounds; i++) {
    runs.read1.push(load(sqlite.url, { ...slice, sessions: 1 }));
    runs.write1.push(load(sqlite.url, { ...slice, sessions: 1, tool: 'echo__counter_incr', args: 'write-unique' }));
    runs.replay1.push(load(sqlite.url, { ...slice, sessions: 1, tool: 'echo__counter_incr', args: 'replay' }));
    runs.read16.push(load(sqlite.url, { ...slice, sessions: 16 }));
    runs.write16.push(load(sqlite.url, { ...slice, sessions: 16, tool: 'echo__counter_incr', args: 'write-unique' }));
  }
  await sqlite.stop();
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const merged = (xs) => ({
    rps: median(xs.map((x) => x.rps)),
    p50: median(xs.map((x) => x.p50)),
    p99: median(xs.map((x) => x.p99)),
    errors: Object.assign({}, ...xs.map((x) => x.errors)),
  });
  const read1 = merged(runs.read1);
  const write1 = merged(runs.write1);
  const replay1 = merged(runs.replay1);
  const read16 = merged(runs.read16);
  const write16 = merged(runs.write16);
  s.sqlite = {
    read1: pick(read1),
    write1: pick(write1),
    replay1: pick(replay1),
    read16: pick(read16),
    write16: pick(write16),
    writeOverReadP50: round(write1.p50 / read1.p50),
    replayOverReadP50: round(replay1.p50 / read1.p50),
    writers16OverReaders16: round(write16.rps / read16.rps),
  };

  // Redis: a database of its own, so MONITOR sees this bus alone.
  const db = 13;
  const prefix = `bench-safety-${process.pid}:`;
  const store = `{ kind: redis, url: "redis://127.0.0.1:6379/${db}", prefix: "${prefix}" }`;
  const short = { sessions: 1, durationMs: Math.min(DURATION, 2000), warmupMs: 300 };
  const perCall = async (yaml, opts) => {
    const bus = await startBus(yaml, dir);
    try {
      load(bus.url, { ...opts, durationMs: 300, warmupMs: 0 });
      const before = await scrape(bus.url);
      const { counts } = await redisCommands(db, async () => load(bus.url, opts));
      const after = await scrape(bus.url);
      const calls = after.calls - before.calls;
      return {
        calls,
        commandsPerCall: round(counts.total / calls, 2),
        scriptsPerCall: round(counts.scripts / calls, 2),
        roundTripsPerCall: round((after.trips - before.trips) / calls, 2),
        commands: Object.fromEntries(Object.entries(counts.byName).map(([k, v]) => [k, round(v / calls, 2)])),
      };
    } finally {
      await bus.stop();
    }
  };
  s.redis = {
    keyedWrite: await perCall(echoBusYaml({ store }), { ...short, tool: 'echo__counter_incr', args: 'write-unique' }),
    readNoRate: await perCall(echoBusYaml({ store }), short),
    readWithRate: await perCall(
      echoBusYaml({ store, upstream: '    rateLimit: { perSecond: 100000, burst: 1000 }' }),
      short,
    ),
  };
  const r = new Redis(`redis://127.0.0.1:6379/${db}`);
  const keys = await r.keys(`${prefix}*`);
  if (keys.length) await r.del(...keys);
  r.disconnect();
  results.scenarios.safety = s;

  const q = s.sqlite;
  const w = s.redis.keyedWrite;
  md.push('## Safety at the price of a read (issue 13; targets from DESIGN.md §12)', '');
  row(['figure', 'measured', 'target']);
  row(['---', '---', '---']);
  row([
    'keyed, leased write p50 ÷ read p50, 1 agent, SQLite',
    `**${q.writeOverReadP50}×** (${round(write1.p50, 3)} / ${round(read1.p50, 3)} ms)`,
    '≤ 1.3×',
  ]);
  row([
    '16 keyed writers (distinct entities) ÷ 16 readers, calls/s, SQLite',
    `**${q.writers16OverReaders16}×** (${Math.round(write16.rps)} / ${Math.round(read16.rps)})`,
    '≥ 0.6×',
  ]);
  row([
    'replay p50 ÷ read p50, 1 agent, SQLite',
    `**${q.replayOverReadP50}×** (${round(replay1.p50, 3)} / ${round(read1.p50, 3)} ms)`,
    '≤ 1×',
  ]);
  row([
    'Redis commands per keyed, leased write (inside Lua counted)',
    `**${w.commandsPerCall}** (${JSON.stringify(w.commands)})`,
    '≤ 16',
  ]);
  row(['Redis round trips per keyed, leased write', `**${w.roundTripsPerCall}**`, '≤ 2']);
  row([
    'Redis commands / scripts per read, no rate limit',
    `**${s.redis.readNoRate.commandsPerCall}** / ${s.redis.readNoRate.scriptsPerCall}`,
    '0',
  ]);
  row([
    'Redis scripts per read, with a rate limit',
    `**${s.redis.readWithRate.scriptsPerCall}** (${s.redis.readWithRate.commandsPerCall} commands)`,
    '1 script',
  ]);
  md.push(
    '',
    "Redis commands are counted with MONITOR on a database of their own (the bus alone uses it), leaving out the health probe (PING) and pub/sub setup, and divided by the calls made (warm-up included); round trips come from the bus's own `toolbus_store_round_trips_total`. Audit entries ride along with a later write's finish script, several per XADD.",
    '',
  );
}

const pick = (x) => ({ rps: round(x.rps), p50: round(x.p50, 3), p99: round(x.p99, 3), errors: x.errors });

function jain(xs) {
  const s = xs.reduce((a, b) => a + b, 0);
  return (s * s) / (xs.length * xs.reduce((a, b) => a + b * b, 0));
}

async function rate() {
  const dir = tempDir();
  const log = join(dir, 'calls.log');
  const agents = Array.from(
    { length: 8 },
    (_, i) => `{ id: ag${i}, token: "rate-${i}", weight: ${i === 7 ? 2 : 1} }`,
  ).join(', ');
  const bus = await startBus(
    echoBusYaml({ agents: `[${agents}]`, upstream: '    rateLimit: { perSecond: 50, burst: 10 }' }).replace(
      `args: [${ECHO}]`,
      `args: [${ECHO}]\n    env: { ECHO_LOG: ${log} }`,
    ),
    dir,
  );
  // 8 agents; agent 0 sends with 10 sessions, the others with 3 each (weight: ag7 = 2). Nothing is refused here
  // (queueWaitMs 10 s); the honesty of retryAfterMs is measured in a second run below.
  const tokens = [
    ...Array(10).fill('rate-0'),
    ...Array.from({ length: 7 }, (_, i) => Array(3).fill(`rate-${i + 1}`)).flat(),
  ];
  const durationMs = 10_000;
  const from = Date.now();
  const r = runLoad({
    url: bus.url,
    tokens,
    sessions: tokens.length,
    warmupMs: 1000,
    durationMs,
    tool: 'echo__echo',
    stateful: true,
  });
  await bus.stop();
  // Retry honesty: the same flood against a bus whose queue may hold a call only 300 ms, so many calls are turned
  // away; each waits its retryAfterMs and retries once.
  const strict = await startBus(
    echoBusYaml({
      agents: `[${agents}]`,
      upstream: '    rateLimit: { perSecond: 50, burst: 10 }\n    queueWaitMs: 300',
    }),
    dir,
  );
  const h = runLoad({
    url: strict.url,
    tokens,
    sessions: tokens.length,
    warmupMs: 1000,
    durationMs: 5000,
    tool: 'echo__echo',
    stateful: true,
    honorRetryAfter: true,
  });
  // The usual pattern of a fleet: a burst of 160 calls at once (20 per agent), then each refused call retries once.
  await new Promise((res) => setTimeout(res, 1500));
  const burstTokens = Array.from({ length: 160 }, (_, i) => `rate-${i % 8}`);
  const b = runLoad({
    url: strict.url,
    tokens: burstTokens,
    sessions: 160,
    warmupMs: 0,
    durationMs: 1,
    once: true,
    tool: 'echo__echo',
    stateful: false,
    honorRetryAfter: true,
  });
  await strict.stop();
  const times = readFileSync(log, 'utf8')
    .trim()
    .split('\n')
    .map(Number)
    .filter((t) => t >= from + 1000 && t <= from + 1000 + durationMs)
    .sort((a, b) => a - b);
  let worstExcess = Number.NEGATIVE_INFINITY;
  let j = 0;
  for (let i = 0; i < times.length; i++) {
    for (j = Math.max(j, i); j + 1 < times.length; j++) if (times[j + 1] - times[i] > 1000) break;
    // Windows anchored at each call: count in [t_i, t_i + T] for T from 0 to 1 s, against burst + 50·T.
    for (let k = i; k <= j; k++)
      worstExcess = Math.max(worstExcess, k - i + 1 - (10 + (50 * (times[k] - times[i])) / 1000));
  }
  const span = (times.at(-1) - times[0]) / 1000;
  const utilisation = times.length / (50 * span);
  const weighted = Array.from({ length: 8 }, (_, i) => (r.perToken[`rate-${i}`] ?? 0) / (i === 7 ? 2 : 1));
  const s = {
    upstreamCalls: times.length,
    spanSeconds: round(span),
    worstWindowExcessOverCap: round(worstExcess),
    utilisation: round(utilisation, 3),
    jainWeighted: round(jain(weighted), 3),
    perAgentCompleted: r.perToken,
    weight2Ratio: round(
      (r.perToken['rate-7'] ?? 0) / (((r.perToken['rate-1'] ?? 0) + (r.perToken['rate-2'] ?? 0)) / 2),
    ),
    callP50Ms: round(r.p50),
    callP99Ms: round(r.p99),
    refusedThenRetried: h.retries.tried,
    retryAdmittedShare: h.retries.tried ? round(h.retries.admitted / h.retries.tried, 3) : null,
    burstRefusedThenRetried: b.retries.tried,
    burstRetryAdmittedShare: b.retries.tried ? round(b.retries.admitted / b.retries.tried, 3) : null,
    errors: r.errors,
  };
  results.scenarios.rate = s;
  md.push(
    '## Rate cap and fairness: perSecond 50, burst 10, 8 agents flooding for 10 s (agent 0 with 10× the sessions, agent 7 weight 2)',
    '',
  );
  row(['figure', 'value', 'target']);
  row(['---', '---', '---']);
  row(['most calls in any window T beyond burst + 50·T (measured at the upstream)', s.worstWindowExcessOverCap, '≤ 0']);
  row(['utilisation while saturated', s.utilisation, '≥ 0.95']);
  row(["Jain's index over weighted throughput", s.jainWeighted, '≥ 0.95']);
  row(['weight-2 agent ÷ weight-1 agent', s.weight2Ratio, '≈ 2']);
  row(['call latency p50 / p99 ms (≈ queue wait: the upstream answers in µs)', `${s.callP50Ms} / ${s.callP99Ms}`, '']);
  row([
    'burst of 160 calls (queueWaitMs 300): refused, retried once after retryAfterMs / share admitted',
    `${s.burstRefusedThenRetried} / ${s.burstRetryAdmittedShare}`,
    'large majority',
  ]);
  row([
    '34 sessions flooding without pause (queueWaitMs 300): refused, retried / share admitted',
    `${s.refusedThenRetried} / ${s.retryAdmittedShare}`,
    '(an agent over its share keeps its own queue full)',
  ]);
  md.push('');
}

async function memory() {
  const tokens = Array.from({ length: 512 }, (_, i) => `mem-token-${i}`);
  const agents = `[${tokens.map((t, i) => `{ id: m${i}, token: "${t}" }`).join(', ')}]`;
  const bus = await startBus(echoBusYaml({ agents }));
  const settle = () => new Promise((r) => setTimeout(r, 1500));
  await settle();
  const idle = rssMiB(bus.pid);
  const open = async (n) => {
    // Each session: initialize + one call, then left open and idle.
    runLoad({
      url: bus.url,
      tokens: tokens.slice(0, n),
      sessions: n,
      warmupMs: 0,
      durationMs: 1,
      tool: 'echo__echo',
      stateful: true,
    });
  };
  await open(64);
  await settle();
  const at64 = rssMiB(bus.pid);
  await open(512);
  await settle();
  const at512 = rssMiB(bus.pid);
  const sessions = await (await fetch(bus.url.replace('/mcp', '/api/dashboard'))).json();
  const openSessions = sessions.agents.reduce((a, x) => a + x.sessions, 0);
  const upstreams = childPids(bus.pid).length;
  await bus.stop();
  const s = {
    idleMiB: round(idle, 1),
    at64MiB: round(at64, 1),
    at512MiB: round(at512, 1),
    openSessions,
    mibPerSession: round((at512 - at64) / Math.max(1, openSessions - 64), 3),
    upstreamProcesses: upstreams,
  };
  results.scenarios.memory = s;
  md.push('## Memory of idle sessions', '');
  md.push(
    `RSS idle ${s.idleMiB} MiB; with 64 sessions ${s.at64MiB} MiB; with ${openSessions} sessions ${s.at512MiB} MiB → **${s.mibPerSession} MiB per session** (target ≤ 0.15); upstream processes: **${upstreams}**.`,
    '',
  );
}

const all = { front, direct, pipeline, safety, writes, rate, memory };
const chosen = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(all);
md.push(
  `# toolbus benchmarks`,
  '',
  `${results.machine.date} · ${results.machine.cores} cores (${results.machine.cpu}) · Node ${results.machine.node} · ${DURATION} ms per measurement after ${WARMUP} ms warm-up`,
  '',
);
for (const name of chosen) {
  process.stderr.write(`bench: ${name}\n`);
  await all[name]();
}
const dirOut = join(ROOT, 'bench/results');
mkdirSync(dirOut, { recursive: true });
writeFileSync(join(dirOut, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);
writeFileSync(
  join(dirOut, `run-${results.machine.date.replace(/[:.]/g, '-')}.json`),
  `${JSON.stringify(results, null, 2)}\n`,
);
writeFileSync(join(dirOut, 'latest.md'), `${md.join('\n')}\n`);
process.stdout.write(`${md.join('\n')}\n`);
