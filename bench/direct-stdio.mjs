// "Straight to the upstream": drives the stdio echo upstream over its own stdin/stdout with raw JSON-RPC lines,
// C requests in flight, for the baseline of bus-vs-direct comparisons. Same output shape as lib/loadgen.mjs.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

const o = JSON.parse(process.argv[2]);
const child = spawn(process.execPath, [new URL('./echo-upstream.mjs', import.meta.url).pathname], {
  stdio: ['pipe', 'pipe', 'inherit'],
});
const pending = new Map();
let nextId = 1;
createInterface({ input: child.stdout }).on('line', (line) => {
  const m = JSON.parse(line);
  pending.get(m.id)?.(m);
  pending.delete(m.id);
});
const call = (method, params) =>
  new Promise((resolve) => {
    const id = nextId++;
    pending.set(id, resolve);
    child.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', id, method, params })}\n`);
  });

await call('initialize', {
  protocolVersion: '2025-11-25',
  capabilities: {},
  clientInfo: { name: 'direct', version: '1' },
});
const latencies = [];
const t0 = performance.now();
const measureFrom = t0 + (o.warmupMs ?? 1000);
const stopAt = measureFrom + o.durationMs;
await Promise.all(
  Array.from({ length: o.sessions }, async (_, i) => {
    for (let seq = 0; performance.now() < stopAt; seq++) {
      const started = performance.now();
      await call('tools/call', { name: 'echo', arguments: { text: `s${i}-${seq}` } });
      const done = performance.now();
      if (started >= measureFrom && done <= stopAt) latencies.push(done - started);
    }
  }),
);
latencies.sort((a, b) => a - b);
const q = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))];
process.stdout.write(
  `${JSON.stringify({ calls: latencies.length, rps: latencies.length / (o.durationMs / 1000), p50: q(0.5), p99: q(0.99), errors: {} })}\n`,
);
child.kill();
