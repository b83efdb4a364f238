// A quick A/B of the write path (node bench/tools/write-vs-read.mjs [memory|sqlite|redis] [sessions]): one bus, the
// same upstream tool exposed as a read and as a keyed, leased write, three alternating 2 s slices of each, and the
// medians: p50 and calls/s of both and their ratios. For trying a change in minutes; `npm run bench` (safety) is
// the figure of record.
import { runLoad, startEchoBus } from '../lib/procs.mjs';

const [kind = 'sqlite', sessionsArg = '1'] = process.argv.slice(2);
const sessions = Number(sessionsArg);
const bus = await startEchoBus(kind);
const base = { url: bus.url, tokens: ['bench-token-0001'], sessions, warmupMs: 500, durationMs: 2000, stateful: true };
const reads = [];
const writes = [];
for (let i = 0; i < 3; i++) {
  reads.push(runLoad({ ...base, tool: 'echo__echo', args: 'echo' }));
  writes.push(runLoad({ ...base, tool: 'echo__counter_incr', args: 'write-unique' }));
}
await bus.stop();
const median = (runs, k) => runs.map((r) => r[k]).sort((a, b) => a - b)[1];
const [rp, wp, rr, wr] = [median(reads, 'p50'), median(writes, 'p50'), median(reads, 'rps'), median(writes, 'rps')];
console.log(
  `${kind}, ${sessions} session(s): read p50 ${rp.toFixed(3)} ms ${Math.round(rr)}/s | write p50 ${wp.toFixed(3)} ms ${Math.round(wr)}/s | write ÷ read: p50 ${(wp / rp).toFixed(2)}×, calls/s ${(wr / rr).toFixed(2)}×`,
);
