// The least any Node gateway does per call, as a reference for the added-latency figure: node:http in, one JSON-RPC
// line to the stdio echo upstream, its line back out as the HTTP response. No MCP session, no auth, no pipeline, no
// metrics. Whatever toolbus adds on top of this relay is its own cost; the relay's own added p50 is what the machine
// charges for an HTTP hop plus a pipe hop. Prints "listening PORT".
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';

const upstream = spawn(process.execPath, [new URL('./echo-upstream.mjs', import.meta.url).pathname], {
  stdio: ['pipe', 'pipe', 'inherit'],
});
const pending = new Map();
let nextId = 1;
createInterface({ input: upstream.stdout }).on('line', (line) => {
  const m = JSON.parse(line);
  const done = pending.get(m.id);
  pending.delete(m.id);
  done?.(m);
});
const answer = (res, body) => {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
};
const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const m = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    if (m.method !== 'tools/call') return answer(res, JSON.stringify({ jsonrpc: '2.0', id: m.id, result: {} }));
    const id = nextId++;
    pending.set(id, (r) => answer(res, JSON.stringify({ jsonrpc: '2.0', id: m.id, result: r.result })));
    const params = { name: 'echo', arguments: m.params.arguments };
    upstream.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params })}\n`);
  });
});
server.keepAliveTimeout = 65_000;
process.on('SIGTERM', () => {
  upstream.kill();
  process.exit(0);
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`listening ${server.address().port}\n`));
