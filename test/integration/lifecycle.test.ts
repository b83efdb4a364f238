// The bus's life as an operator sees it: SIGTERM drains calls in flight (and cuts them, recorded, after
// server.shutdownGraceMs), a busy port is a clear error that leaves nothing running, and `toolbus connect` carries
// a real SDK client across a bus restart.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { CLI, LAB_SERVER, startBus, startBusWithConfig, tempDir } from '../helpers/bus-process.js';
import { AgentClient, post } from '../helpers/mcp-http.js';
import { waitFor } from '../helpers/wait.js';

const labYaml = (dir: string, server = '') => `
server: { ${server} }
store: { kind: sqlite, path: ${join(dir, 'state.db')} }
agents: [{ id: ops, token: "ops-agent-token-1" }]
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    env: { LAB_STATE: ${join(dir, 'lab.json')} }
    tools:
      echo: { kind: read }
      slow: { kind: read }
`;

type TextResult = { content: { type: string; text?: string }[]; isError?: boolean };

describe('operating the bus: drain, busy port, restart', () => {
  it('SIGTERM lets a 3 s call finish, refuses new work, and exits 0', async () => {
    const dir = tempDir();
    const bus = await startBus(labYaml(dir), { cwd: dir });
    const agent = new AgentClient(bus.url, 'ops-agent-token-1');
    const started = Date.now();
    const call = agent.call('lab__slow', { ms: 3000, tag: 'drained' });
    await waitFor(async () => (await fetch(`${bus.url.replace('/mcp', '')}/metrics`)).ok, 2000, 'metrics');
    await new Promise((r) => setTimeout(r, 400));
    const exited = bus.stop();
    await new Promise((r) => setTimeout(r, 300));
    // While it drains, new work is turned away: the listener is closed, or an open connection gets 503.
    const late = await post(bus.url, 'ops-agent-token-1', { jsonrpc: '2.0', id: 9, method: 'tools/list' }).then(
      (r) => r.status,
      () => 'refused',
    );
    assert.ok(late === 503 || late === 'refused', `late request got ${late}`);
    const result = await call;
    assert.equal(result.isError, undefined, JSON.stringify(result));
    assert.match(result.content?.[0]?.text ?? '', /"tag":"drained"/);
    assert.ok(Date.now() - started >= 2900);
    assert.equal(await exited, 0, bus.stderr());
    assert.match(bus.stderr(), /stopping: draining calls in flight/);
    assert.doesNotMatch(bus.stderr(), /cutting the calls still in flight/);
  });

  it('past shutdownGraceMs the call is cut and the cut is logged with its agent and tool', async () => {
    const dir = tempDir();
    const bus = await startBus(labYaml(dir, 'shutdownGraceMs: 300'), { cwd: dir });
    const agent = new AgentClient(bus.url, 'ops-agent-token-1');
    const call = agent.call('lab__slow', { ms: 10_000 }).then(
      (r) => r,
      (e: unknown) => e as Error,
    );
    await new Promise((r) => setTimeout(r, 500));
    const t0 = Date.now();
    assert.equal(await bus.stop(), 0);
    assert.ok(Date.now() - t0 < 4000, `stopped in ${Date.now() - t0} ms`);
    const outcome = await call;
    assert.ok(outcome instanceof Error || outcome.isError === true, 'the cut call did not succeed');
    assert.match(
      bus.stderr(),
      /"calls":\[\{"agent":"ops","tool":"lab__slow"\}\],"msg":"shutdown grace ran out: cutting the calls still in flight"/,
    );
    // The per-call log line records how the cut call ended (nothing was lost silently).
    assert.match(bus.stderr(), /"agent":"ops","tool":"lab__slow".*"outcome":"upstream_unavailable".*"msg":"call"/);
  });

  it('a circuit breaker change is logged and counted, and each call has one log line without argument values', async () => {
    const dir = tempDir();
    const bus = await startBus(
      `
store: { kind: memory }
agents: [{ id: ops, token: "ops-agent-token-1" }]
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    circuitBreaker: { failures: 1, openMs: 60000 }
    restart: { initialDelayMs: 100, maxDelayMs: 200 }
    tools:
      echo: { kind: read }
      crash: { kind: write, idempotency: off, lease: [] }
`,
      { cwd: dir },
    );
    try {
      const agent = new AgentClient(bus.url, 'ops-agent-token-1');
      await agent.call('lab__echo', { text: 'argument-value-never-logged' });
      await agent.call('lab__crash', {});
      const metrics = async () => (await fetch(bus.url.replace('/mcp', '/metrics'))).text();
      await waitFor(
        async () => /toolbus_circuit_breaker_transitions_total\{upstream="lab",state="open"\} 1/.test(await metrics()),
        5000,
        'breaker transition counted',
      );
      assert.match(await metrics(), /toolbus_circuit_breaker_open\{upstream="lab"\} 1/);
      assert.match(await metrics(), /toolbus_agent_calls_total\{agent="ops",outcome="ok"\} 1/);
      assert.match(bus.stderr(), /"upstream":"lab","state":"open","previous":"closed","msg":"circuit breaker changed"/);
      assert.match(
        bus.stderr(),
        /"agent":"ops","tool":"lab__echo","upstream":"lab","outcome":"ok","durationMs":\d+,(?:"\w+WaitMs":\d+,)*"keyPresent":false,"bytes":\d+,"msg":"call"/,
      );
      assert.ok(!bus.stderr().includes('argument-value-never-logged'));
    } finally {
      await bus.stop();
    }
  });

  it('a reload logs what changed, by name only', async () => {
    const dir = tempDir();
    const file = join(dir, 'toolbus.yaml');
    writeFileSync(file, labYaml(dir));
    const bus = await startBusWithConfig(file, { cwd: dir });
    try {
      writeFileSync(
        file,
        labYaml(dir).replace(
          'agents: [{ id: ops, token: "ops-agent-token-1" }]',
          'agents: [{ id: ops, token: "ops-agent-token-2" }, { id: added, token: "added-agent-token-1" }]',
        ),
      );
      bus.child.kill('SIGHUP');
      await waitFor(() => bus.stderr().includes('"msg":"config reloaded"'), 5000, 'reload line');
      const line = bus
        .stderr()
        .split('\n')
        .find((l) => l.includes('"msg":"config reloaded"'))!;
      const rec = JSON.parse(line) as Record<string, unknown>;
      assert.equal(rec.reason, 'SIGHUP');
      assert.deepEqual(rec.agentsAdded, ['added']);
      assert.deepEqual(rec.agentsChanged, ['ops']);
      assert.deepEqual(rec.upstreamsChanged, []);
      assert.ok(!line.includes('ops-agent-token'), 'no values in the line');
    } finally {
      await bus.stop();
    }
  });

  it('a port in use exits non-zero with a clear message and leaves no upstream running', async () => {
    const dir = tempDir();
    const blocker: Server = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as { port: number }).port;
    const pidFile = join(dir, 'upstream.pid');
    const wrapper = join(dir, 'upstream.sh');
    writeFileSync(wrapper, `#!/bin/sh\necho $$ > ${pidFile}\nexec ${process.execPath} ${LAB_SERVER}\n`, {
      mode: 0o755,
    });
    const file = join(dir, 'toolbus.yaml');
    writeFileSync(
      file,
      `store: { kind: memory }\nagents: [{ id: ops, token: "ops-agent-token-1" }]\nupstreams:\n  lab: { command: ${wrapper} }\n`,
    );
    try {
      const child = spawn(process.execPath, [CLI, 'serve', '--config', file, '--port', String(port)], {
        cwd: dir,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let err = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => {
        err += d;
      });
      const code = await new Promise<number | null>((resolve, reject) => {
        const t = setTimeout(() => {
          child.kill('SIGKILL');
          reject(new Error(`serve did not exit on a busy port: ${err}`));
        }, 20_000);
        child.once('exit', (c) => {
          clearTimeout(t);
          resolve(c);
        });
      });
      assert.equal(code, 1, err);
      assert.match(err, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: the port is in use`));
      const pid = Number(readFileSync(pidFile, 'utf8').trim());
      await waitFor(
        () => {
          try {
            process.kill(pid, 0);
            return false;
          } catch {
            return true;
          }
        },
        3000,
        'the upstream process to be gone',
      );
    } finally {
      blocker.close();
    }
  });

  it('`toolbus connect` carries the SDK client across a bus restart', async () => {
    const dir = tempDir();
    const file = join(dir, 'toolbus.yaml');
    writeFileSync(file, labYaml(dir));
    let bus = await startBusWithConfig(file, { cwd: dir });
    const port = bus.port;
    const client = new Client({ name: 'restart-test', version: '1.0.0' });
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [CLI, 'connect', '--url', bus.url],
      env: { ...(process.env as Record<string, string>), TOOLBUS_TOKEN: 'ops-agent-token-1' },
      stderr: 'pipe',
    });
    let bridgeErr = '';
    transport.stderr?.on('data', (d: Buffer) => {
      bridgeErr += d.toString();
    });
    await client.connect(transport);
    try {
      const first = (await client.callTool({ name: 'lab__echo', arguments: { text: 'before' } })) as TextResult;
      assert.equal(first.content[0]?.text, 'before');
      // A call in flight when the bus is told to stop finishes; one sent during the drain is refused (503), retried
      // by the bridge while the bus is down, and lands on the new bus.
      const drained = client.callTool(
        { name: 'lab__slow', arguments: { ms: 1500, tag: 'drain' } },
        { timeout: 15_000 },
      );
      await new Promise((r) => setTimeout(r, 300));
      const stopping = bus.stop();
      await new Promise((r) => setTimeout(r, 300));
      const during = client.callTool(
        { name: 'lab__echo', arguments: { text: 'sent during the drain' } },
        {
          timeout: 15_000,
        },
      );
      assert.equal(await stopping, 0);
      bus = await startBusWithConfig(file, { cwd: dir, args: ['--port', String(port)] });
      assert.equal(bus.port, port);
      assert.match(((await drained) as TextResult).content[0]?.text ?? '', /"tag":"drain"/);
      assert.equal(((await during) as TextResult).content[0]?.text, 'sent during the drain');
      for (const text of ['after', 'and after']) {
        const r = (await client.callTool(
          { name: 'lab__echo', arguments: { text } },
          { timeout: 15_000 },
        )) as TextResult;
        assert.equal(r.content[0]?.text, text);
      }
      const { tools } = await client.listTools(undefined, { timeout: 15_000 });
      assert.ok(tools.some((t) => t.name === 'lab__echo'));
      assert.match(bridgeErr, /re-initialized and carrying on/);
      // The old session is gone on the new bus; a request naming it still gets 404 (nothing was resurrected).
      const stale = await post(
        bus.url,
        'ops-agent-token-1',
        { jsonrpc: '2.0', id: 1, method: 'tools/list' },
        {
          'mcp-session-id': 'no-such-session',
        },
      );
      assert.equal(stale.status, 404);
    } finally {
      await client.close();
      await bus.stop();
    }
  });
});
