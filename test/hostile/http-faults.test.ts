// Upstream faults over HTTP that once turned a keyed write into two writes: while agent A's write is in flight, the
// upstream forgets its sessions (another request gets 404) or dies and refuses connections. A's request was already
// written, so its outcome is unknown: A gets outcome_unknown, its retry with the same key never runs the write again,
// and only requests refused before sending are upstream_unavailable.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type BusProcess, HOSTILE_SERVER, startBus, tempDir } from '../helpers/bus-process.js';
import { AgentClient, busErrorStrict } from '../helpers/mcp-http.js';
import { freePort } from '../helpers/net.js';
import { waitFor } from '../helpers/wait.js';

const dir = tempDir();
const log = join(dir, 'hostile.log');
const TOKEN = `hh-token-${Math.random().toString(36).slice(2)}`;
let port: number;
let upstream: ChildProcess | undefined;
let bus: BusProcess;

function startUpstream(): Promise<ChildProcess> {
  const child = spawn(process.execPath, [HOSTILE_SERVER, '--http', '--port', String(port)], {
    env: { ...process.env, HOSTILE_LOG: log },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`hostile --http exited with ${code}`)));
    child.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('listening')) resolve(child);
    });
  });
}

const writesOf = (id: string) =>
  readFileSync(log, 'utf8')
    .split('\n')
    .filter((l) => l.includes('"event":"write"') && l.includes(`"id":"${id}"`)).length;

const a = () => new AgentClient(bus.url, 'agent-a-token-1');
const b = () => new AgentClient(bus.url, 'agent-b-token-1');

describe('HTTP upstream faults never duplicate a write', () => {
  before(async () => {
    port = await freePort();
    upstream = await startUpstream();
    bus = await startBus(
      `
store: { kind: sqlite, path: ${join(dir, 'state.db')} }
agents:
  - { id: a, token: "agent-a-token-1", tools: ["*"] }
  - { id: b, token: "agent-b-token-1", tools: ["*"] }
upstreams:
  hh:
    url: http://127.0.0.1:${port}/mcp
    headers: { authorization: "Bearer \${env:HH_TOKEN}" }
    restart: { initialDelayMs: 100, maxDelayMs: 500 }
    circuitBreaker: { failures: 4, openMs: 1000 }
    tools:
      slow_write: { kind: write, lease: ["w:{/id}"] }
      echo: { kind: read }
      forget_sessions: { kind: read }
      fail_next: { kind: read }
`,
      { cwd: dir, env: { HH_TOKEN: TOKEN } },
    );
  });
  after(async () => {
    await bus?.stop();
    upstream?.kill('SIGKILL');
  });

  it('a 404 (session gone) on another request makes the write in flight outcome_unknown, and its retry does not write', async () => {
    const write = a().call('hh__slow_write', { id: 'w404', ms: 1200, idempotency_key: 'write-404-key-1' });
    await waitFor(() => writesOf('w404') === 1, 5000, 'write reached the upstream');
    assert.equal((await b().call('hh__forget_sessions')).isError, undefined);
    const other = busErrorStrict(await b().call('hh__echo', { text: 'after forget' }));
    assert.equal(other.category, 'upstream_unavailable', 'a read that was lost may be retried');
    const first = busErrorStrict(await write);
    assert.equal(first.category, 'outcome_unknown');
    // The bus reconnects (new session); the retry with the same key is refused as unknown, not run again.
    await waitFor(
      async () => (await b().call('hh__echo', { text: 'back' })).isError === undefined,
      10_000,
      'reconnect',
    );
    const retry = busErrorStrict(
      await a().call('hh__slow_write', { id: 'w404', ms: 1200, idempotency_key: 'write-404-key-1' }),
    );
    assert.equal(retry.category, 'outcome_unknown');
    await new Promise((r) => setTimeout(r, 1300));
    assert.equal(writesOf('w404'), 1, 'the write ran once');
  });

  it('an upstream that dies mid-write and refuses connections: the write is outcome_unknown, never retried', async () => {
    const write = a().call('hh__slow_write', { id: 'wdead', ms: 1500, idempotency_key: 'write-dead-key-1' });
    await waitFor(() => writesOf('wdead') === 1, 5000, 'write reached the upstream');
    upstream!.kill('SIGKILL');
    const refused = busErrorStrict(await b().call('hh__echo', { text: 'while down' }));
    assert.equal(refused.category, 'upstream_unavailable');
    const first = busErrorStrict(await write);
    assert.equal(first.category, 'outcome_unknown');
    upstream = await startUpstream();
    await waitFor(
      async () => (await b().call('hh__echo', { text: 'back' })).isError === undefined,
      10_000,
      'reconnect',
    );
    const retry = busErrorStrict(
      await a().call('hh__slow_write', { id: 'wdead', ms: 1500, idempotency_key: 'write-dead-key-1' }),
    );
    assert.equal(retry.category, 'outcome_unknown');
    assert.equal(writesOf('wdead'), 1, 'the write ran once');
    // A new key is a new operation and runs.
    const fresh = await a().call('hh__slow_write', { id: 'wdead', ms: 10, idempotency_key: 'write-dead-key-2' });
    assert.equal(fresh.isError, undefined);
    assert.equal(writesOf('wdead'), 2);
  });

  it('an upstream answering 503 opens the breaker: calls fail fast without reaching it, then a probe closes it', async () => {
    const refusedSoFar = () =>
      readFileSync(log, 'utf8')
        .split('\n')
        .filter((l) => l.includes('"refused"')).length;
    const before = refusedSoFar();
    assert.equal((await b().call('hh__fail_next', { status: 503, count: 4 })).isError, undefined);
    const errors = [];
    for (let i = 0; i < 8; i++) errors.push(busErrorStrict(await b().call('hh__echo', { text: `e${i}` })));
    for (const e of errors) assert.equal(e.category, 'upstream_unavailable');
    // Four refusals reach the upstream and open the breaker; the next four never leave the bus.
    assert.deepEqual(
      errors.map((e) => e.code),
      [
        'upstream_down',
        'upstream_down',
        'upstream_down',
        'upstream_down',
        'circuit_open',
        'circuit_open',
        'circuit_open',
        'circuit_open',
      ],
    );
    assert.equal(refusedSoFar() - before, 4);
    assert.ok((errors[4]!.retryAfterMs ?? 0) > 0 && (errors[4]!.retryAfterMs ?? 0) <= 1000);
    // Once openMs has passed, one call is let through as a probe; its success closes the breaker.
    await new Promise((r) => setTimeout(r, 1100));
    const probe = await b().call('hh__echo', { text: 'probe' });
    assert.equal(probe.isError, undefined, 'the half-open probe went through and closed the breaker');
    assert.equal((await a().call('hh__echo', { text: 'closed' })).isError, undefined);
  });
});
