// Live secret rotation: a changed ${file:} secret is picked up without a restart. A stdio upstream is replaced
// blue/green with no call dropped; an HTTP upstream uses the new header on the next call.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { LAB_SERVER, startBus, tempDir } from '../helpers/bus-process.js';
import { startLabHttp } from '../helpers/lab.js';
import { AgentClient } from '../helpers/mcp-http.js';
import { freePort } from '../helpers/net.js';
import { waitFor } from '../helpers/wait.js';

describe('live secret rotation', () => {
  it('replaces a stdio upstream blue/green when its secret file changes, dropping no call', async () => {
    const dir = tempDir();
    const secret = join(dir, 'lab-token');
    writeFileSync(secret, 'rotation-secret-one\n');
    const bus = await startBus(
      `
store: { kind: memory }
agents: [{ id: a, token: "rotate-token-1" }]
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    env: { LAB_TOKEN: "\${file:${secret}}" }
    maxConcurrency: 32
    tools:
      echo: { kind: read }
      whoami: { kind: read }
      slow: { kind: read }
`,
      { cwd: dir },
    );
    try {
      const a = new AgentClient(bus.url, 'rotate-token-1');
      const before = (await a.call('lab__whoami')).structuredContent as { pid: number };
      // Calls keep flowing during the rotation, and one long call is in flight on the old process.
      const inFlight = a.call('lab__slow', { ms: 1500, tag: 'old' });
      let stop = false;
      const failures: unknown[] = [];
      const traffic = (async () => {
        let i = 0;
        while (!stop) {
          const r = await a.call('lab__echo', { text: `t${i++}` });
          if (r.isError) failures.push(r);
        }
      })();
      await new Promise((r) => setTimeout(r, 200));
      writeFileSync(secret, 'rotation-secret-two\n');
      let after = before;
      await waitFor(
        async () => {
          after = (await a.call('lab__whoami')).structuredContent as { pid: number };
          return after.pid !== before.pid;
        },
        10_000,
        'new upstream process',
      );
      const old = await inFlight;
      stop = true;
      await traffic;
      assert.notEqual(old.isError, true, 'the call in flight on the old process completed');
      assert.equal((old.structuredContent as { pid: number }).pid, before.pid);
      assert.deepEqual(failures, []);
      // The old process drained and exited.
      await waitFor(
        () => {
          try {
            process.kill(before.pid, 0);
            return false;
          } catch {
            return true;
          }
        },
        5000,
        'old process gone',
      );
      for (const s of ['rotation-secret-one', 'rotation-secret-two']) assert.ok(!bus.stderr().includes(s));
    } finally {
      await bus.stop();
    }
  });

  it('an HTTP upstream uses a rotated header on the next call, even with a reconnect attempt in flight', async () => {
    // The upstream refuses the old header slowly, so when the rotation connects, a reconnect attempt with the old
    // header is usually still waiting for its refusal: that late failure must not mark the upstream down again.
    const dir = tempDir();
    const port = await freePort();
    const secret = join(dir, 'http-token');
    writeFileSync(secret, 'http-secret-old\n');
    const lab = await startLabHttp(port, { LAB_REQUIRE_TOKEN: 'http-secret-new', LAB_HTTP_401_DELAY_MS: '300' });
    const bus = await startBus(
      `
store: { kind: memory }
agents: [{ id: a, token: "rotate-token-2" }]
upstreams:
  web:
    url: http://127.0.0.1:${port}/mcp
    headers: { Authorization: "Bearer \${file:${secret}}" }
    restart: { initialDelayMs: 100, maxDelayMs: 300 }
    tools:
      echo: { kind: read }
`,
      { cwd: dir },
    );
    try {
      const a = new AgentClient(bus.url, 'rotate-token-2');
      const refused = await fetch(bus.url.replace('/mcp', '/readyz'));
      assert.equal(refused.status, 503, 'the old header is refused by the upstream');
      writeFileSync(secret, 'http-secret-new\n');
      await waitFor(
        async () => (await a.call('web__echo', { text: 'rotated' })).content?.[0]?.text === 'rotated',
        10_000,
        'calls work with the new header',
      ).catch((err: Error) => {
        // What the bus said meanwhile (secrets are scrubbed from its log) is what a failure here needs to be read.
        const log = bus
          .stderr()
          .split('\n')
          .filter((l) => !l.includes('"msg":"call"'));
        throw new Error(`${err.message}\n--- bus log, calls left out ---\n${log.slice(-40).join('\n')}`);
      });
      // And it stays up: the reconnect attempt that was in flight with the old header has failed by now (its refusal
      // takes 0.3 s per request), and that failure says nothing about the rotated connection.
      await new Promise((r) => setTimeout(r, 1500));
      const later = await a.call('web__echo', { text: 'still' });
      assert.equal(later.content?.[0]?.text, 'still', JSON.stringify(later));
      for (const s of ['http-secret-old', 'http-secret-new']) assert.ok(!bus.stderr().includes(s));
    } finally {
      await bus.stop();
      lab.kill('SIGKILL');
    }
  });
});
