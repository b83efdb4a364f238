// A lean stdio MCP server for benchmarks: newline-delimited JSON-RPC by hand, so the upstream costs microseconds and
// the figures measure the gateway in front of it. Tools: echo {text} (read), counter_incr {entity, delay_ms} (a
// read-modify-write in memory, optionally slow). ECHO_LOG=path appends the time of every tools/call (rate benchmarks).
import { appendFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

const log = process.env.ECHO_LOG;
const counters = new Map();
const tools = [
  {
    name: 'echo',
    description: 'Echo text',
    inputSchema: { type: 'object', properties: { text: { type: 'string' } }, required: ['text'] },
    annotations: { readOnlyHint: true },
  },
  {
    name: 'counter_incr',
    description: 'Increment a counter',
    inputSchema: {
      type: 'object',
      properties: { entity: { type: 'string' }, delay_ms: { type: 'integer' } },
      required: ['entity'],
    },
  },
];
const out = (msg) => process.stdout.write(`${JSON.stringify(msg)}\n`);

async function call(id, params) {
  if (log) appendFileSync(log, `${performance.timeOrigin + performance.now()}\n`);
  const args = params.arguments ?? {};
  if (params.name === 'echo')
    return out({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: String(args.text) }] } });
  if (params.name === 'counter_incr') {
    const before = counters.get(args.entity) ?? 0;
    if (args.delay_ms) await new Promise((r) => setTimeout(r, args.delay_ms));
    counters.set(args.entity, before + 1);
    return out({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: String(before + 1) }] } });
  }
  out({ jsonrpc: '2.0', id, error: { code: -32602, message: `unknown tool ${params.name}` } });
}

createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line) return;
  const m = JSON.parse(line);
  if (m.id === undefined) return;
  switch (m.method) {
    case 'initialize':
      return out({
        jsonrpc: '2.0',
        id: m.id,
        result: {
          protocolVersion: m.params?.protocolVersion ?? '2025-11-25',
          capabilities: { tools: {} },
          serverInfo: { name: 'echo', version: '1' },
        },
      });
    case 'tools/list':
      return out({ jsonrpc: '2.0', id: m.id, result: { tools } });
    case 'tools/call':
      return void call(m.id, m.params ?? {});
    case 'ping':
      return out({ jsonrpc: '2.0', id: m.id, result: {} });
    default:
      return out({ jsonrpc: '2.0', id: m.id, error: { code: -32601, message: 'method not found' } });
  }
});
process.stdin.on('end', () => process.exit(0));
