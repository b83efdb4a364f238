// Process helpers for the benchmarks: start the real bus (built CLI) and other servers, run a load generator in its
// own process, read RSS and child processes from /proc.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '../..');
export const CLI = join(ROOT, 'dist/src/cli/main.js');
export const ECHO = join(ROOT, 'bench/echo-upstream.mjs');

export function tempDir() {
  return mkdtempSync(join(tmpdir(), 'toolbus-bench-'));
}

/** Spawns a process and resolves once its stdout matches `ready` (the first capture group is returned). */
export function startProcess(command, args, ready, opts = {}) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => {
    err += d;
  });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`${command} did not start: ${out} ${err}`)), 30_000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = ready.exec(out);
      if (m) {
        clearTimeout(timer);
        resolvePromise({
          child,
          match: m[1],
          stop: () =>
            new Promise((r) => {
              if (child.exitCode !== null) return r();
              child.once('exit', () => r());
              child.kill('SIGTERM');
              setTimeout(() => child.kill('SIGKILL'), 3000).unref();
            }),
        });
      }
    });
    child.once('exit', (code) => reject(new Error(`${command} exited ${code}: ${err}`)));
  });
}

/**
 * The bench's bus config: the echo upstream with `echo` as a read and `counter_incr` as a leased write (keyed when
 * `keyRequired`), agent token bench-token-0001 unless `agents` says otherwise. `upstream` adds lines to the upstream's
 * block, `extra` top-level lines.
 */
export function echoBusYaml({
  store = '{ kind: memory }',
  agents = '[{ id: a, token: "bench-token-0001" }]',
  upstream = '',
  extra = '',
  keyRequired = false,
} = {}) {
  return `
store: ${store}
logging: { level: warn }
${extra}
agents: ${agents}
upstreams:
  echo:
    command: ${process.execPath}
    args: [${ECHO}]
    maxConcurrency: 256
${upstream}
    tools:
      echo: { kind: read }
      counter_incr: { kind: write,${keyRequired ? ' idempotency: required,' : ''} lease: ["c:{/entity}"] }
`;
}

/**
 * A bus on the given store (memory, sqlite in a temp dir, or redis on 127.0.0.1:6379 under its own prefix) in front of
 * the echo upstream, with `echo` as a read and `counter_incr` as a keyed, leased write; agent token bench-token-0001.
 * For the tools in bench/tools/.
 */
export function startEchoBus(storeKind) {
  const dir = tempDir();
  const store =
    storeKind === 'sqlite'
      ? `{ kind: sqlite, path: ${join(dir, 'bench.db')} }`
      : storeKind === 'redis'
        ? `{ kind: redis, url: "redis://127.0.0.1:6379/0", prefix: "bench-${process.pid}-${Date.now()}:" }`
        : '{ kind: memory }';
  return startBus(echoBusYaml({ store, keyRequired: true }), dir);
}

export async function startBus(yaml, dir = tempDir()) {
  const file = join(dir, `bench-${Date.now()}-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, yaml);
  const p = await startProcess(
    process.execPath,
    // BENCH_BUS_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") profiles the bus alone, not the load generator.
    [
      ...(process.env.BENCH_BUS_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
      CLI,
      'serve',
      '--config',
      file,
      '--port',
      '0',
    ],
    /listening on (http:\/\/\S+)/,
    { cwd: dir },
  );
  return { ...p, url: p.match, pid: p.child.pid };
}

function runChild(script, opts) {
  const r = execFileSync(process.execPath, [script, JSON.stringify(opts)], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    timeout: 300_000,
  });
  return JSON.parse(r.trim().split('\n').at(-1));
}

export const runLoad = (opts) => runChild(join(ROOT, 'bench/lib/loadgen.mjs'), opts);

/** Clock ticks per second of /proc/<pid>/stat's times. */
let clockTicks;
/** CPU time (user + system, ms) a process has used so far, from /proc. */
function cpuMs(pid) {
  clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / clockTicks;
  } catch {
    return 0;
  }
}

/**
 * runLoad, and the CPU each process used during the measured window (after the warm-up): the load generator's, and
 * the servers' (`servers`: name → pids, children included by the caller). Returns the load result with
 * `cpu: { loadgenCores, servers: { name: { cores, usPerCall } } }`.
 */
export async function runLoadWithCpu(opts, servers) {
  const child = execFile(process.execPath, [join(ROOT, 'bench/lib/loadgen.mjs'), JSON.stringify(opts)], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    timeout: 300_000,
  });
  let out = '';
  child.stdout.on('data', (d) => {
    out += d;
  });
  let failed;
  const exited = new Promise((resolve) => {
    child.once('exit', (code) => {
      if (code !== 0) failed = new Error(`load generator exited ${code}`);
      resolve();
    });
  });
  const sample = () => ({
    loadgen: cpuMs(child.pid),
    ...Object.fromEntries(Object.entries(servers).map(([k, pids]) => [k, pids.reduce((a, p) => a + cpuMs(p), 0)])),
  });
  await new Promise((r) => setTimeout(r, opts.warmupMs ?? 1000));
  const from = sample();
  const started = performance.now();
  await new Promise((r) => setTimeout(r, opts.durationMs));
  const to = sample();
  const window = performance.now() - started;
  await exited;
  if (failed) throw failed;
  const result = JSON.parse(out.trim().split('\n').at(-1));
  const cores = (k) => (to[k] - from[k]) / window;
  // Calls in the CPU window: the load generator's rate (its own window, the same length, in the same steady load).
  const calls = (result.rps * window) / 1000;
  return {
    ...result,
    cpu: {
      loadgenCores: cores('loadgen'),
      servers: Object.fromEntries(
        Object.keys(servers).map((k) => [
          k,
          { cores: cores(k), usPerCall: calls > 0 ? ((to[k] - from[k]) * 1000) / calls : null },
        ]),
      ),
    },
  };
}
export const runDirect = (opts) => runChild(join(ROOT, 'bench/direct-stdio.mjs'), opts);

export function rssMiB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]) / 1024;
}

export function childPids(pid) {
  try {
    return execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/** All descendants (mcp-proxy runs its upstreams through npx/sh layers). */
export function descendantPids(pid) {
  const out = [];
  for (const c of childPids(pid)) out.push(c, ...descendantPids(c));
  return out;
}
