// The command line as a user runs it: check (errors with key paths, catalog, warnings), client-config, init from
// an .mcp.json, and audit of the write trail.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CLI, LAB_SERVER, startBusWithConfig, tempDir } from '../helpers/bus-process.js';
import { AgentClient } from '../helpers/mcp-http.js';

function toolbus(args: string[], cwd: string, env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd,
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const labConfig = (dir: string) => `
store: { kind: sqlite, path: ${join(dir, 'state.db')} }
agents:
  - { id: planner, token: "\${env:PLANNER_TOKEN}", tenant: team-a, tools: ["lab__*"] }
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    tools:
      echo: { kind: read }
      counter_incr: { kind: write, lease: ["counter:{/entity}"] }
`;

describe('toolbus CLI', () => {
  it('check rejects unknown keys and bad references, naming the key', () => {
    const dir = tempDir();
    writeFileSync(
      join(dir, 'bad.yaml'),
      `
agents: [{ id: a, token: "\${env:TOOLBUS_TEST_UNSET_VAR}" }]
upstreams:
  lab:
    command: node
    rateLimt: { perSecond: 5 }
    tools:
      echo: { kind: reed, lease: ["x"] }
`,
    );
    const r = toolbus(['check', '--config', 'bad.yaml'], dir);
    assert.equal(r.code, 2);
    assert.match(r.stdout, /agents\[0\]\.token: environment variable TOOLBUS_TEST_UNSET_VAR is not set/);
    assert.match(r.stdout, /upstreams\.lab.*rateLimt/);
    assert.match(r.stdout, /upstreams\.lab\.tools\.echo\.kind/);
  });

  it('check refuses an upstream name with "__", which would make the allow-list h__* also grant h__admin', () => {
    const dir = tempDir();
    writeFileSync(
      join(dir, 'names.yaml'),
      `
agents: [{ id: a, token: "a-token-123", tools: ["h__*"] }]
upstreams:
  h: { command: node }
  h__admin: { command: node }
  _lead: { command: node }
`,
    );
    const r = toolbus(['check', '--config', 'names.yaml'], dir);
    assert.equal(r.code, 2);
    assert.match(r.stdout, /upstreams\.h__admin.*single "_"/);
    assert.match(r.stdout, /upstreams\._lead.*single "_"/);
    assert.doesNotMatch(r.stdout, /upstreams\.h:/);
  });

  it('check connects and prints each tool with kind, key rule and lease, and warns about whole-upstream locks', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'toolbus.yaml'), labConfig(dir));
    const r = toolbus(['check'], dir, { PLANNER_TOKEN: 'planner-secret-token' });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /upstream lab: connected \(\d+ tools; [^)]*speaks 2025-11-25\)/);
    assert.match(r.stdout, /lab__echo\s+read\s+key:off/);
    assert.match(r.stdout, /lab__counter_incr\s+write\s+key:required\s+lease: counter:\{\/entity\}/);
    assert.match(r.stdout, /lab__slow\s+write\s+key:required\s+lease: lab \(whole upstream\)/);
    assert.match(r.stdout, /warnings:[\s\S]*lab__slow: write tool with no lease configured/);
    assert.ok(!r.stdout.includes('planner-secret-token'));
  });

  it('client-config prints an .mcp.json entry with the token taken from the environment', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'toolbus.yaml'), labConfig(dir));
    const r = toolbus(['client-config', '--agent', 'planner'], dir, { PLANNER_TOKEN: 'planner-secret-token' });
    assert.equal(r.code, 0, r.stderr);
    const entry = JSON.parse(r.stdout) as {
      mcpServers: { toolbus: { type: string; url: string; headers: Record<string, string> } };
    };
    assert.equal(entry.mcpServers.toolbus.type, 'http');
    assert.equal(entry.mcpServers.toolbus.url, 'http://127.0.0.1:7410/mcp');
    assert.equal(entry.mcpServers.toolbus.headers.Authorization, `Bearer \${TOOLBUS_TOKEN_PLANNER}`);
    assert.ok(!r.stdout.includes('planner-secret-token'));
  });

  it('client-config --upstream prints the entry for /mcp/{upstream}, and refuses an unknown upstream', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'toolbus.yaml'), labConfig(dir));
    const r = toolbus(['client-config', '--agent', 'planner', '--upstream', 'lab'], dir);
    assert.equal(r.code, 0, r.stderr);
    const entry = JSON.parse(r.stdout) as { mcpServers: Record<string, { url: string }> };
    assert.equal(entry.mcpServers.lab?.url, 'http://127.0.0.1:7410/mcp/lab');
    const bad = toolbus(['client-config', '--agent', 'planner', '--upstream', 'nope'], dir);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /no upstream nope/);
  });

  it('init converts an .mcp.json into a config whose secrets are references', () => {
    const dir = tempDir();
    writeFileSync(
      join(dir, '.mcp.json'),
      JSON.stringify({
        mcpServers: {
          tickets: { command: 'node', args: ['server.js'], env: { API_TOKEN: 'literal-secret-value' } },
          'remote-crm': {
            type: 'http',
            url: 'https://crm.example/mcp',
            headers: { Authorization: 'Bearer crm-secret' },
          },
        },
      }),
    );
    const r = toolbus(['init', '--from', '.mcp.json'], dir);
    assert.equal(r.code, 0, r.stderr);
    const text = readFileSync(join(dir, 'toolbus.yaml'), 'utf8');
    assert.ok(!text.includes('literal-secret-value') && !text.includes('crm-secret'));
    assert.match(text, /API_TOKEN: \$\{env:TICKETS_API_TOKEN\}/);
    assert.match(text, /remote-crm:[\s\S]*url: https:\/\/crm.example\/mcp/);
    const again = toolbus(['init', '--from', '.mcp.json'], dir);
    assert.equal(again.code, 2, 'does not overwrite without --force');
  });

  it('audit shows every write with agent, key, scopes, fencing token and outcome', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'toolbus.yaml'), labConfig(dir));
    const bus = await startBusWithConfig(join(dir, 'toolbus.yaml'), {
      cwd: dir,
      env: { PLANNER_TOKEN: 'planner-secret-token' },
    });
    try {
      const a = new AgentClient(bus.url, 'planner-secret-token');
      await a.call('lab__counter_incr', { entity: 'audit', idempotency_key: 'audit-key-0001' });
      await a.call('lab__counter_incr', { entity: 'audit', idempotency_key: 'audit-key-0001' });
      await a.call('lab__echo', { text: 'reads are not audited' });
      // The audit command reads the store while the bus holds it.
      const r = toolbus(['audit', '--json', '--tool', 'lab__counter_incr', '--since', '1h'], dir, {
        PLANNER_TOKEN: 'x',
      });
      assert.equal(r.code, 0, r.stderr);
      const rows = r.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      assert.equal(rows.length, 2);
      assert.deepEqual(
        rows.map((x) => x.outcome),
        ['ok', 'replayed'],
      );
      assert.equal(rows[0]!.agent, 'planner');
      assert.equal(rows[0]!.key, 'audit-key-0001');
      assert.deepEqual(rows[0]!.scopes, ['lab:counter:audit']);
      assert.equal(typeof rows[0]!.fencingToken, 'number');
      const all = toolbus(['audit'], dir, { PLANNER_TOKEN: 'x' });
      assert.match(all.stdout, /2 record\(s\)/);
    } finally {
      await bus.stop();
    }
  });
});
