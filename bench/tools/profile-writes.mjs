// Profiles the bus under one load (node bench/tools/profile-writes.mjs [sqlite|redis] [write|read] [sessions]) and prints the
// functions with the most self time. The profile is written to /tmp/toolbus-prof.
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { runLoad, startEchoBus } from '../lib/procs.mjs';

const [storeKind = 'sqlite', what = 'write', sessions = '16'] = process.argv.slice(2);
const out = '/tmp/toolbus-prof';
rmSync(out, { recursive: true, force: true });
process.env.BENCH_BUS_NODE_ARGS = `--cpu-prof --cpu-prof-dir=${out}`;
const bus = await startEchoBus(storeKind);
const r = runLoad({
  url: bus.url,
  tokens: ['bench-token-0001'],
  sessions: Number(sessions),
  warmupMs: 500,
  durationMs: 3000,
  tool: what === 'write' ? 'echo__counter_incr' : 'echo__echo',
  args: what === 'write' ? 'write-unique' : 'echo',
  stateful: true,
});
bus.child.kill('SIGINT');
await new Promise((res) => bus.child.once('exit', res));
console.log(`${Math.round(r.rps)} calls/s p50 ${r.p50} ms`);
const file = readdirSync(out).find((f) => f.endsWith('.cpuprofile'));
const prof = JSON.parse(readFileSync(join(out, file), 'utf8'));
const self = new Map();
const dt = prof.timeDeltas;
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const total = dt.reduce((a, b) => a + b, 0);
prof.samples.forEach((id, i) => {
  const n = byId.get(id);
  const f = n.callFrame;
  const k = `${f.functionName || '(anon)'} ${f.url.replace(/^.*\/(node_modules|src|dist)\//, '$1/')}:${f.lineNumber + 1}`;
  self.set(k, (self.get(k) ?? 0) + (dt[i] ?? 0));
});
for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 30))
  console.log(`${((100 * v) / total).toFixed(1).padStart(5)}%  ${k}`);
