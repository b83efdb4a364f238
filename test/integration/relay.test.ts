// An upstream's own requests during a call (elicitation here) reach exactly the agent whose call caused them, through
// the official SDK client: over an HTTP upstream two agents asked at the same moment each get their own answer back;
// over a shared stdio upstream the one agent in flight is asked, and with several in flight the request is refused
// rather than guessed. An agent whose client declared no elicitation is never asked.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as TransportV1 } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { type BusProcess, LAB_SERVER, startBus, tempDir } from '../helpers/bus-process.js';
import { startLabHttp } from '../helpers/lab.js';
import { freePort } from '../helpers/net.js';

const dir = tempDir();
let bus: BusProcess;
let lab: ChildProcess;

type TextResult = { content: { type: string; text?: string }[]; isError?: boolean };

async function agent(token: string, answer: string | null, delayMs = 0): Promise<Client> {
  const client = new Client(
    { name: `relay-${token}`, version: '1.0.0' },
    { capabilities: answer === null ? {} : { elicitation: { form: {} } } },
  );
  if (answer !== null) {
    client.setRequestHandler('elicitation/create', async () => {
      await new Promise((r) => setTimeout(r, delayMs));
      return { action: 'accept', content: { answer } };
    });
  }
  await client.connect(
    new StreamableHTTPClientTransport(new URL(bus.url), {
      requestInit: { headers: { authorization: `Bearer ${token}` } },
    }),
  );
  return client;
}

/** The same agent through the official v1 SDK client (2025 era), answering elicitation with `answer`. */
async function agentV1(token: string, answer: string, url: string): Promise<ClientV1> {
  const client = new ClientV1({ name: `relay-v1-${token}`, version: '1.0.0' }, { capabilities: { elicitation: {} } });
  client.setRequestHandler(ElicitRequestSchema, async () => ({ action: 'accept', content: { answer } }));
  await client.connect(
    new TransportV1(new URL(url), { requestInit: { headers: { authorization: `Bearer ${token}` } } }),
  );
  return client;
}

const answerOf = (r: TextResult) => JSON.parse(r.content[0]!.text!) as { action: string; answer: string | null };

describe('server-initiated requests reach the agent whose call caused them', () => {
  before(async () => {
    const port = await freePort();
    lab = await startLabHttp(port);
    bus = await startBus(
      `
store: { kind: memory }
agents:
  - { id: alice, token: "alice-token-1" }
  - { id: bob, token: "bob-token-123" }
  - { id: mute, token: "mute-token-12" }
upstreams:
  web:
    url: http://127.0.0.1:${port}/mcp
    tools:
      ask: { kind: read }
  local:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    tools:
      ask: { kind: read }
  mine:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    sharing: per-agent
    tools:
      ask: { kind: read }
`,
      { cwd: dir },
    );
  });
  after(async () => {
    await bus?.stop();
    lab?.kill('SIGKILL');
  });

  it('HTTP upstream: two agents asked at the same moment each get their own answer', async () => {
    const [a, b] = await Promise.all([
      agent('alice-token-1', 'from alice', 300),
      agent('bob-token-123', 'from bob', 300),
    ]);
    const results = await Promise.all(
      Array.from({ length: 3 }, () => [
        a.callTool({ name: 'web__ask', arguments: { question: 'who?' } }) as Promise<TextResult>,
        b.callTool({ name: 'web__ask', arguments: { question: 'who?' } }) as Promise<TextResult>,
      ]).flat(),
    );
    results.forEach((r, i) => {
      assert.equal(r.isError, undefined, JSON.stringify(r));
      assert.deepEqual(answerOf(r), { action: 'accept', answer: i % 2 === 0 ? 'from alice' : 'from bob' });
    });
    await Promise.all([a.close(), b.close()]);
  });

  it('shared stdio upstream: the one agent in flight is asked; with two in flight the request is refused', async () => {
    const a = await agent('alice-token-1', 'alice alone');
    const alone = (await a.callTool({ name: 'local__ask', arguments: { question: 'q' } })) as TextResult;
    assert.deepEqual(answerOf(alone), { action: 'accept', answer: 'alice alone' });
    const b = await agent('bob-token-123', 'bob too', 200);
    const slow = await agent('alice-token-1', 'slow alice', 1500);
    // Alice's call is in flight (her client takes 1.5 s to answer) when Bob's call asks: two agents, no link.
    const first = slow.callTool({ name: 'local__ask', arguments: { question: 'q1' } }) as Promise<TextResult>;
    await new Promise((r) => setTimeout(r, 300));
    const second = (await b.callTool({ name: 'local__ask', arguments: { question: 'q2' } })) as TextResult;
    assert.equal(second.isError, true, 'refused, not sent to whichever agent');
    assert.match(JSON.stringify(second), /sharing: per-agent/);
    assert.deepEqual(answerOf(await first), { action: 'accept', answer: 'slow alice' });
    assert.match(bus.stderr(), /sharing: per-agent/);
    await Promise.all([a.close(), b.close(), slow.close()]);
  });

  it('an agent whose client declared no elicitation is never asked', async () => {
    const m = await agent('mute-token-12', null);
    const r = (await m.callTool({ name: 'web__ask', arguments: { question: 'q' } })) as TextResult;
    assert.equal(r.isError, true);
    assert.match(JSON.stringify(r), /does not support elicitation/);
    await m.close();
  });

  it('sharing: per-agent: two agents asked at the same moment by their own upstream processes each get their answer', async () => {
    const [a, b] = await Promise.all([
      agent('alice-token-1', 'alice own', 300),
      agent('bob-token-123', 'bob own', 300),
    ]);
    const [ra, rb] = (await Promise.all([
      a.callTool({ name: 'mine__ask', arguments: { question: 'q' } }),
      b.callTool({ name: 'mine__ask', arguments: { question: 'q' } }),
    ])) as TextResult[];
    assert.deepEqual(answerOf(ra!), { action: 'accept', answer: 'alice own' });
    assert.deepEqual(answerOf(rb!), { action: 'accept', answer: 'bob own' });
    await Promise.all([a.close(), b.close()]);
  });

  it('the official v1 SDK client (2025 era) gets its own elicitation, on /mcp and on /mcp/{upstream}', async () => {
    const v1 = await agentV1('alice-token-1', 'from v1', bus.url);
    const r = (await v1.callTool({ name: 'web__ask', arguments: { question: 'v1?' } })) as TextResult;
    assert.deepEqual(answerOf(r), { action: 'accept', answer: 'from v1' });
    await v1.close();
    const own = await agentV1('bob-token-123', 'v1 on its own names', `${bus.url}/web`);
    const names = (await own.listTools()).tools.map((t) => t.name);
    assert.ok(names.includes('ask') && !names.includes('web__ask'));
    const r2 = (await own.callTool({ name: 'ask', arguments: { question: 'v1?' } })) as TextResult;
    assert.deepEqual(answerOf(r2), { action: 'accept', answer: 'v1 on its own names' });
    await own.close();
  });
});
