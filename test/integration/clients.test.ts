// Real clients and a third-party server: the official MCP SDK client talks to the bus over HTTP and through the
// stdio bridge (`toolbus connect`), and an unmodified MCP server from npm (@modelcontextprotocol/server-memory)
// works behind the bus.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { type BusProcess, CLI, LAB_SERVER, ROOT, startBus, tempDir } from '../helpers/bus-process.js';
import { waitFor } from '../helpers/wait.js';

const dir = tempDir();
const MEMORY_SERVER = join(ROOT, 'node_modules/@modelcontextprotocol/server-memory/dist/index.js');

const yaml = `
store: { kind: sqlite, path: ${join(dir, 'state.db')} }
logging: { level: warn }
agents: [{ id: sdk, token: "sdk-client-token" }]
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    tools:
      echo: { kind: read }
      add_tool: { kind: write, idempotency: off, lease: [] }
  memory:
    command: ${process.execPath}
    args: [${MEMORY_SERVER}]
    env: { MEMORY_FILE_PATH: ${join(dir, 'memory.jsonl')} }
    trustAnnotations: true
    tools:
      create_entities: { kind: write, lease: ["graph"] }
`;

type TextResult = { content: { type: string; text?: string }[]; isError?: boolean; _meta?: Record<string, unknown> };

describe('real clients and a third-party upstream', () => {
  let bus: BusProcess;
  before(async () => {
    bus = await startBus(yaml, { cwd: dir });
  });
  after(async () => {
    await bus?.stop();
  });

  it('the official SDK client connects over HTTP, lists and calls tools, and hears tools/list_changed', async () => {
    const client = new Client({ name: 'sdk-test', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(bus.url), {
      requestInit: { headers: { Authorization: 'Bearer sdk-client-token' } },
    });
    let changed = 0;
    client.setNotificationHandler('notifications/tools/list_changed', () => {
      changed++;
    });
    await client.connect(transport);
    try {
      const { tools } = await client.listTools();
      assert.ok(tools.some((t) => t.name === 'lab__echo'));
      assert.ok(tools.some((t) => t.name === 'memory__create_entities'));
      const r = (await client.callTool({ name: 'lab__echo', arguments: { text: 'from the sdk' } })) as TextResult;
      assert.equal(r.content[0]?.text, 'from the sdk');
      await client.callTool({ name: 'lab__add_tool', arguments: { name: 'fresh_tool' } });
      await waitFor(
        async () => (await client.listTools()).tools.some((t) => t.name === 'lab__fresh_tool'),
        5000,
        'new tool listed',
      );
      // This SDK version opens a 2025-era session; the notification comes down its GET stream.
      assert.ok(transport.sessionId, 'the SDK client opened a stateful session');
      await waitFor(() => changed > 0, 5000, 'tools/list_changed relayed');
    } finally {
      await client.close();
    }
  });

  it('an unmodified npm MCP server (server-memory) works behind the bus, with keys and replays', async () => {
    const client = new Client({ name: 'sdk-test', version: '1.0.0' });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(bus.url), {
        requestInit: { headers: { Authorization: 'Bearer sdk-client-token' } },
      }),
    );
    try {
      const args = {
        entities: [{ name: 'toolbus', entityType: 'project', observations: ['shares MCP servers between agents'] }],
        idempotency_key: 'memory-create-0001',
      };
      const first = (await client.callTool({ name: 'memory__create_entities', arguments: args })) as TextResult;
      assert.notEqual(first.isError, true, JSON.stringify(first));
      const again = (await client.callTool({ name: 'memory__create_entities', arguments: args })) as TextResult;
      assert.equal(again._meta?.['toolbus/replayed'], true);
      const graph = (await client.callTool({ name: 'memory__read_graph', arguments: {} })) as TextResult;
      const text = graph.content.map((c) => c.text ?? '').join('');
      assert.equal(text.match(/shares MCP servers between agents/g)?.length, 1);
    } finally {
      await client.close();
    }
  });

  it('a stdio-only client uses the bus through `toolbus connect`', async () => {
    const client = new Client({ name: 'stdio-test', version: '1.0.0' });
    await client.connect(
      new StdioClientTransport({
        command: process.execPath,
        args: [CLI, 'connect', '--url', bus.url],
        env: { ...(process.env as Record<string, string>), TOOLBUS_TOKEN: 'sdk-client-token' },
        stderr: 'pipe',
      }),
    );
    try {
      const { tools } = await client.listTools();
      assert.ok(tools.some((t) => t.name === 'lab__echo'));
      const r = (await client.callTool({ name: 'lab__echo', arguments: { text: 'over stdio' } })) as TextResult;
      assert.equal(r.content[0]?.text, 'over stdio');
    } finally {
      await client.close();
    }
  });
});
