// server-everything (the MCP project's own demo server, unmodified from npm) behind the bus. It registers its
// sampling, elicitation and roots tools only for clients that declare those capabilities, so it shows that toolbus
// offers them upstream; with `sharing: per-agent` each agent has its own process, so two agents asked at the same
// moment each get their own answer back, never the other's, whichever era their client speaks. Its roots come from
// the bus's config, or, for an agent whose client offers roots, that agent's own kept to those inside the config's.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { type BusProcess, ROOT, startBus } from '../helpers/bus-process.js';

const EVERYTHING = join(ROOT, 'node_modules/@modelcontextprotocol/server-everything/dist/index.js');

let bus: BusProcess;

type TextResult = { content: { type: string; text?: string }[]; isError?: boolean };
const textOf = (r: unknown) => (r as TextResult).content.map((c) => c.text ?? '').join('\n');

/** The official v2 client; `modern` pins it to 2026-07-28 (it then fulfils InputRequiredResults itself). */
async function agent(token: string, answer: string, modern = false): Promise<Client> {
  const client = new Client({ name: `everything-${token}`, version: '1.0.0' }, {
    capabilities: { elicitation: { form: {} }, sampling: {} },
    ...(modern ? { versionNegotiation: { mode: { pin: '2026-07-28' } } } : {}),
  } as never);
  client.setRequestHandler('elicitation/create', async () => {
    await new Promise((r) => setTimeout(r, 100));
    return { action: 'accept', content: { name: answer, check: true, email: `${answer}@example.com` } } as never;
  });
  client.setRequestHandler('sampling/createMessage', async () => {
    await new Promise((r) => setTimeout(r, 100));
    return { role: 'assistant', content: { type: 'text', text: `sampled by ${answer}` }, model: 'test-model' } as never;
  });
  await client.connect(
    new StreamableHTTPClientTransport(new URL(`${bus.url}/everything`), {
      requestInit: { headers: { authorization: `Bearer ${token}` } },
    }),
  );
  return client;
}

describe('server-everything behind the bus', () => {
  before(async () => {
    bus = await startBus(`
store: { kind: memory }
agents:
  - { id: alice, token: "alice-token-1" }
  - { id: bob, token: "bob-token-123" }
  - { id: carol, token: "carol-token-12" }
upstreams:
  everything:
    command: ${process.execPath}
    args: [${EVERYTHING}, stdio]
    sharing: per-agent
    roots: [{ uri: "file:///srv/shared", name: shared }]
    tools:
      trigger-elicitation-request: { kind: read }
      trigger-sampling-request: { kind: read }
      get-roots-list: { kind: read }
`);
  });
  after(async () => {
    await bus?.stop();
  });

  it('offers its sampling, elicitation and roots tools (toolbus declares those capabilities upstream)', async () => {
    const client = await agent('alice-token-1', 'alice');
    try {
      const names = (await client.listTools()).tools.map((t) => t.name);
      for (const n of ['trigger-sampling-request', 'trigger-elicitation-request', 'get-roots-list'])
        assert.ok(names.includes(n), `${n} in ${names.join(', ')}`);
    } finally {
      await client.close();
    }
  });

  it('two agents sampled and elicited at the same moment each get their own answer (2025 and 2026 clients)', async () => {
    const alice = await agent('alice-token-1', 'alice');
    const bob = await agent('bob-token-123', 'bob', true);
    try {
      const [sa, sb, ea, eb] = await Promise.all([
        alice.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'hi' } }),
        bob.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'hi' } }),
        alice.callTool({ name: 'trigger-elicitation-request', arguments: {} }),
        bob.callTool({ name: 'trigger-elicitation-request', arguments: {} }),
      ]);
      assert.match(textOf(sa), /sampled by alice/);
      assert.doesNotMatch(textOf(sa), /bob/);
      assert.match(textOf(sb), /sampled by bob/);
      assert.doesNotMatch(textOf(sb), /alice/);
      assert.match(textOf(ea), /alice@example\.com/);
      assert.doesNotMatch(textOf(ea), /bob/);
      assert.match(textOf(eb), /bob@example\.com/);
      assert.doesNotMatch(textOf(eb), /alice/);
    } finally {
      await alice.close();
      await bob.close();
    }
  });

  it("its roots are the ones in the bus config, not an agent's", async () => {
    const client = await agent('alice-token-1', 'alice');
    try {
      const text = textOf(await client.callTool({ name: 'get-roots-list', arguments: {} }));
      assert.match(text, /file:\/\/\/srv\/shared/);
    } finally {
      await client.close();
    }
  });

  it("a per-agent session gets its own agent's roots, kept to those inside the config's", async () => {
    const client = new Client(
      { name: 'everything-carol', version: '1.0.0' },
      { capabilities: { roots: { listChanged: false } } },
    );
    client.setRequestHandler('roots/list', async () => ({
      roots: [
        { uri: 'file:///srv/shared/carol-work', name: 'work' },
        { uri: 'file:///etc', name: 'outside' },
        { uri: 'file:///srv/shared/../../etc', name: 'climbing out' },
      ],
    }));
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${bus.url}/everything`), {
        requestInit: { headers: { authorization: 'Bearer carol-token-12' } },
      }),
    );
    try {
      const text = textOf(await client.callTool({ name: 'get-roots-list', arguments: {} }));
      assert.match(text, /file:\/\/\/srv\/shared\/carol-work/);
      assert.doesNotMatch(text, /file:\/\/\/etc|\.\./, 'a root outside the config is not passed on, even by ..');
    } finally {
      await client.close();
    }
  });
});
