// One serialized reload applies every config change live (DESIGN.md section 17): policies and caps in place with the
// upstream process kept, an upstream removed is gone, one added appears, limits and agents apply at once, and a
// config that does not load changes nothing.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type BusProcess, LAB_SERVER, startBusWithConfig, tempDir } from '../helpers/bus-process.js';
import { AgentClient, busErrorStrict, post } from '../helpers/mcp-http.js';
import { waitFor } from '../helpers/wait.js';

const dir = tempDir();
const file = join(dir, 'toolbus.yaml');

function config(opts: {
  rate?: string;
  echoKind?: string;
  tickets?: boolean;
  maxBatch?: number;
  agents?: string;
}): string {
  return `
store: { kind: memory }
logging: { level: info }
limits: { maxBatch: ${opts.maxBatch ?? 64} }
agents:
${opts.agents ?? '  - { id: a, token: "reload-token-a" }'}
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    ${opts.rate ?? ''}
    queueWaitMs: 200
    tools:
      echo: { kind: ${opts.echoKind ?? 'read'} }
      whoami: { kind: read }
${
  opts.tickets
    ? `  tickets:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    tools:
      echo: { kind: read }`
    : ''
}
`;
}

let bus: BusProcess;
const a = () => new AgentClient(bus.url, 'reload-token-a');
const pidOf = async () => JSON.parse(String((await a().call('lab__whoami')).content?.[0]?.text)).pid as number;

async function reload(yaml: string, expect: RegExp): Promise<void> {
  const seen = bus.stderr().length;
  writeFileSync(file, yaml);
  bus.child.kill('SIGHUP');
  await waitFor(() => expect.test(bus.stderr().slice(seen)), 10_000, `reload log ${expect}`);
}

describe('live reload', () => {
  before(async () => {
    writeFileSync(file, config({ tickets: true }));
    bus = await startBusWithConfig(file, { cwd: dir });
  });
  after(async () => {
    await bus?.stop();
  });

  it('a policy change (kind, rate cap) applies in place and keeps the upstream process', async () => {
    const pid = await pidOf();
    assert.equal((await a().call('lab__echo', { text: 'x' })).isError, undefined);
    await reload(
      config({ tickets: true, echoKind: 'write', rate: 'rateLimit: { perSecond: 1, burst: 1 }' }),
      /policy changed/,
    );
    // echo is now a write: it needs an idempotency key.
    await waitFor(
      async () =>
        (await a().listTools()).some((t) => t.name === 'lab__echo' && JSON.stringify(t).includes('idempotency_key')),
      5000,
      'echo became a write',
    );
    assert.equal(busErrorStrict(await a().call('lab__echo', { text: 'x' })).category, 'validation');
    // One call a second: a burst of four finds the budget spent.
    const burst = await Promise.all([1, 2, 3, 4].map(() => a().call('lab__whoami')));
    assert.ok(
      burst.some((r) => r.isError && busErrorStrict(r).category === 'rate_limited'),
      'the new rate cap applies',
    );
    await reload(config({ tickets: true }), /policy changed/);
    assert.equal(await pidOf(), pid, 'same upstream process throughout');
  });

  it('an upstream removed is gone; one added appears', async () => {
    assert.ok((await a().listTools()).some((t) => String(t.name).startsWith('tickets__')));
    await reload(config({}), /upstream tickets removed/);
    await waitFor(
      async () => !(await a().listTools()).some((t) => String(t.name).startsWith('tickets__')),
      5000,
      'tools gone',
    );
    assert.equal(busErrorStrict(await a().call('tickets__echo', { text: 't' })).category, 'not_found');
    await reload(config({ tickets: true }), /upstream tickets added/);
    await waitFor(async () => (await a().listTools()).some((t) => t.name === 'tickets__echo'), 10_000, 'tools back');
    assert.equal((await a().call('tickets__echo', { text: 't' })).content?.[0]?.text, 't');
  });

  it('limits and agents apply at once; a broken config changes nothing', async () => {
    await reload(
      config({
        tickets: true,
        maxBatch: 2,
        agents: '  - { id: a, token: "reload-token-a" }\n  - { id: b, token: "reload-token-b" }',
      }),
      /limits changed/,
    );
    const batch = [1, 2, 3].map((id) => ({ jsonrpc: '2.0', id, method: 'ping' }));
    assert.equal((await post(bus.url, 'reload-token-a', batch)).status, 400);
    assert.equal(
      (await new AgentClient(bus.url, 'reload-token-b').call('lab__echo', { text: 'b' })).isError,
      undefined,
    );
    const seen = bus.stderr().length;
    writeFileSync(file, 'upstreams: [not, a, map');
    bus.child.kill('SIGHUP');
    await waitFor(() => /keeping the running config/.test(bus.stderr().slice(seen)), 5000, 'refused reload');
    assert.equal(
      (await new AgentClient(bus.url, 'reload-token-b').call('lab__echo', { text: 'b' })).isError,
      undefined,
    );
  });

  it('a connection that authenticated keeps no token past a reload, and each token on it is its own agent', async () => {
    await reload(
      config({
        tickets: true,
        agents: [
          '  - { id: a, token: "reload-token-a" }',
          '  - { id: c, token: "reload-token-c", tools: ["lab__echo"] }',
          // Configured by digest only: never remembered on a connection, checked by its digest every time.
          `  - { id: d, tokenSha256: "${createHash('sha256').update('reload-token-d').digest('hex')}", tools: ["lab__echo"] }`,
        ].join('\n'),
      }),
      /config reloaded/,
    );
    // One socket for every request below: toolbus remembers the token that last matched on a connection.
    const keep = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const ports = new Set<number>();
    const call = (token: string, name: string) =>
      new Promise<{ status: number; text: string }>((resolve, reject) => {
        const body = JSON.stringify({
          jsonrpc: '2.0',
          id: 1,
          method: 'tools/call',
          params: { name, arguments: { text: 't' } },
        });
        const req = http.request(
          bus.url,
          {
            method: 'POST',
            agent: keep,
            headers: {
              'content-type': 'application/json',
              accept: 'application/json, text/event-stream',
              authorization: `Bearer ${token}`,
            },
          },
          (res) => {
            ports.add(res.socket.localPort ?? 0);
            let text = '';
            res.on('data', (d: Buffer) => {
              text += d.toString();
            });
            res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
          },
        );
        req.on('error', reject);
        req.end(body);
      });
    const category = (r: { text: string }) =>
      (JSON.parse(r.text) as { result?: { _meta?: Record<string, { category?: string }> } }).result?._meta?.[
        'toolbus/error'
      ]?.category;
    try {
      const asA = await call('reload-token-a', 'lab__whoami');
      assert.equal(asA.status, 200);
      assert.equal(category(asA), undefined, asA.text);
      // Agent c may call lab__echo only: on the same connection it is c, not the a that came before.
      assert.equal(category(await call('reload-token-c', 'lab__whoami')), 'auth');
      assert.equal(category(await call('reload-token-c', 'lab__echo')), undefined);
      assert.equal(category(await call('reload-token-a', 'lab__whoami')), undefined);
      assert.equal(category(await call('reload-token-d', 'lab__whoami')), 'auth');
      assert.equal(category(await call('reload-token-d', 'lab__echo')), undefined);
      assert.equal(category(await call('reload-token-a', 'lab__whoami')), undefined);
      await reload(
        config({ tickets: true, agents: '  - { id: c, token: "reload-token-c", tools: ["lab__echo"] }' }),
        /config reloaded/,
      );
      assert.equal(
        (await call('reload-token-a', 'lab__whoami')).status,
        401,
        'a token removed by the reload is refused',
      );
      assert.equal((await call('reload-token-d', 'lab__echo')).status, 401, 'so is one known by its digest');
      assert.equal(ports.size, 1, 'every request went over one connection');
    } finally {
      keep.destroy();
    }
  });
  it('an edit of the config file alone, with no SIGHUP, is applied; a broken edit is refused and changes nothing', async () => {
    const seen = bus.stderr().length;
    writeFileSync(
      file,
      config({
        tickets: true,
        agents: '  - { id: a, token: "reload-token-a" }\n  - { id: e, token: "reload-token-e" }',
      }),
    );
    await waitFor(() => /config reloaded/.test(bus.stderr().slice(seen)), 10_000, 'a reload from the file watch');
    assert.match(bus.stderr().slice(seen), /"reason":"file changed"/);
    assert.equal(
      (await new AgentClient(bus.url, 'reload-token-e').call('lab__echo', { text: 'e' })).isError,
      undefined,
    );
    const before = bus.stderr().length;
    writeFileSync(file, 'upstreams: [not, a, map');
    await waitFor(() => /keeping the running config/.test(bus.stderr().slice(before)), 10_000, 'a refused reload');
    assert.equal(
      (await new AgentClient(bus.url, 'reload-token-e').call('lab__echo', { text: 'e' })).isError,
      undefined,
    );
  });
});
