// The command line an operator meets first: --help and --version, `init --from` on a realistic .mcp.json (nothing lost,
// tool kinds from annotations), `check` on an offline config (fast, with each upstream's own error), client-config and
// audit without the config's secrets, `serve --demo` announcing only a token that works, and the README's minimal
// config working as copied.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { CLI, LAB_SERVER, ROOT, startBusWithConfig, tempDir } from '../helpers/bus-process.js';
import { AgentClient } from '../helpers/mcp-http.js';
import { freePort } from '../helpers/net.js';

function toolbus(args: string[], cwd: string, env: NodeJS.ProcessEnv = {}, timeout = 30_000) {
  const started = Date.now();
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd,
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - started };
}

describe('operating from the command line', () => {
  it('answers --version and --help for every command', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const v = toolbus(['--version'], ROOT);
    assert.equal(v.code, 0);
    assert.equal(v.stdout.trim(), `toolbus ${pkg.version}`);
    for (const cmd of ['serve', 'check', 'init', 'client-config', 'connect', 'audit', 'token']) {
      const h = toolbus([cmd, '--help'], ROOT);
      assert.equal(h.code, 0, `${cmd} --help: ${h.stderr}`);
      assert.match(h.stdout, new RegExp(`^usage: toolbus ${cmd} `));
    }
    assert.match(toolbus(['serve', '--help'], ROOT).stdout, /shutdownGraceMs/);
    const unknown = toolbus(['nope'], ROOT);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command "nope"/);
  });

  it('init --from loses nothing from a realistic .mcp.json and writes tool kinds from annotations', () => {
    const dir = tempDir();
    writeFileSync(
      join(dir, '.mcp.json'),
      JSON.stringify({
        mcpServers: {
          'postgres.prod': {
            command: process.execPath,
            args: [LAB_SERVER, '--data', '${HOME}/data'],
            cwd: dir,
            env: {
              PGPASSWORD: 'pg-literal-secret',
              LOG_LEVEL: 'debug',
              DATABASE_URL: 'postgres://app:pw-in-url@db/app',
              REGION: '${AWS_REGION:-eu-west-1}',
            },
          },
          'postgres-prod': { command: process.execPath, args: [LAB_SERVER], disabled: false },
          legacy: { type: 'sse', url: 'http://127.0.0.1:9/sse', headers: { 'X-Api-Key': 'sse-secret-key' } },
          crm: {
            type: 'http',
            url: 'http://127.0.0.1:9/mcp',
            headers: { Authorization: 'Bearer ${CRM_TOKEN}', 'X-Team': 'blue' },
          },
        },
      }),
    );
    const r = toolbus(['init', '--from', '.mcp.json', '--timeout', '5000'], dir);
    assert.equal(r.code, 0, r.stderr);
    const text = readFileSync(join(dir, 'toolbus.yaml'), 'utf8');
    for (const secret of ['pg-literal-secret', 'pw-in-url', 'sse-secret-key'])
      assert.ok(!text.includes(secret), `${secret} leaked into the config`);
    const cfg = parse(text) as { upstreams: Record<string, Record<string, any>> };
    // Two servers whose names collide after cleaning stay two upstreams; the valid name keeps its own.
    assert.deepEqual(Object.keys(cfg.upstreams).sort(), ['crm', 'postgres-prod', 'postgres-prod-2']);
    assert.deepEqual(cfg.upstreams['postgres-prod']!.args, [LAB_SERVER]);
    const pg = cfg.upstreams['postgres-prod-2']!;
    assert.match(text, /# from \.mcp\.json server "postgres\.prod"/);
    assert.equal(pg.cwd, dir);
    assert.equal(pg.args[2], '${env:HOME}/data');
    assert.equal(pg.env.LOG_LEVEL, 'debug', 'a non-secret literal stays a literal');
    assert.equal(pg.env.PGPASSWORD, '${env:POSTGRES_PROD_2_PGPASSWORD}');
    assert.equal(pg.env.DATABASE_URL, '${env:POSTGRES_PROD_2_DATABASE_URL}');
    assert.equal(pg.env.REGION, '${env:AWS_REGION}');
    assert.match(r.stdout, /AWS_REGION:-eu-west-1.*default toolbus does not apply/);
    assert.equal(cfg.upstreams.crm!.headers.Authorization, 'Bearer ${env:CRM_TOKEN}');
    assert.equal(cfg.upstreams.crm!.headers['X-Team'], 'blue');
    // The SSE server is not silently turned into an HTTP upstream: it is a comment and a note.
    assert.ok(!('legacy' in cfg.upstreams));
    assert.match(text, /# NOT CONVERTED: \.mcp\.json server "legacy" \(type sse/);
    assert.match(r.stdout, /server "legacy" \(type sse\) was NOT converted/);
    assert.match(text, /# not converted: disabled: false/);
    // Tools were read from the running server: kinds from annotations, each with its reason.
    assert.deepEqual(pg.tools.echo, { kind: 'read' });
    assert.deepEqual(pg.tools.slow, { kind: 'write', idempotency: 'required' });
    assert.match(text, /# read: the server says readOnlyHint=true\n\s+echo: \{ kind: read \}/);
    assert.match(text, /# write \(no annotations, so assumed a write\)\. REVIEW: without a lease/);
    assert.match(r.stdout, /crm: tools not read/);
    // The written config is valid and connects once its variables are set.
    const check = toolbus(['check', '--timeout', '3000'], dir, {
      TOOLBUS_AGENT_1_TOKEN: 'agent-token-0123456789',
      POSTGRES_PROD_2_PGPASSWORD: 'x',
      POSTGRES_PROD_2_DATABASE_URL: 'y',
      AWS_REGION: 'z',
      CRM_TOKEN: 'c',
    });
    assert.match(check.stdout, /config is valid \(3 upstreams/);
    assert.match(check.stdout, /postgres-prod-2__echo\s+read\s+key:off/);
  });

  it('check on an offline config of 5 upstreams is quick and shows each upstream its own error', async () => {
    const dir = tempDir();
    const port = await freePort();
    const offline = (n: number) => `  offline${n}: { url: "http://127.0.0.1:${port}/mcp" }\n`;
    writeFileSync(
      join(dir, 'toolbus.yaml'),
      `store: { kind: memory }
upstreams:
  broken:
    command: sh
    args: ["-c", "echo 'fatal: cannot open database /srv/none.db' >&2; exit 3"]
${[1, 2, 3, 4].map(offline).join('')}`,
    );
    const r = toolbus(['check'], dir);
    assert.equal(r.code, 1, r.stdout);
    assert.ok(r.ms < 10_000, `check took ${r.ms} ms`);
    assert.match(r.stdout, /upstream broken: FAILED[\s\S]*its stderr:\s+fatal: cannot open database \/srv\/none\.db/);
    assert.match(r.stdout, /upstream offline4: FAILED[\s\S]*the URL is unreachable: ECONNREFUSED/);
    assert.match(r.stdout, /5 of 5 upstreams failed/);
  });

  it('client-config and audit need none of the config secrets; client-config prints the running port', async () => {
    const dir = tempDir();
    const file = join(dir, 'toolbus.yaml');
    writeFileSync(
      file,
      `server: { port: 7410 }
store: { kind: sqlite, path: ${join(dir, 'state.db')} }
agents: [{ id: planner, token: "\${env:OPS_CLI_PLANNER_TOKEN}" }]
upstreams:
  lab: { command: ${process.execPath}, args: [${LAB_SERVER}], env: { LAB_TOKEN: "\${file:.secrets/lab}" } }
`,
    );
    const before = toolbus(['client-config', '--agent', 'planner'], dir);
    assert.equal(before.code, 0, before.stderr);
    assert.match(before.stdout, /"url": "http:\/\/127\.0\.0\.1:7410\/mcp"/);
    const audit = toolbus(['audit'], dir);
    assert.equal(audit.code, 0, audit.stderr);
    assert.match(audit.stdout, /0 record\(s\)/);
    mkdirSync(join(dir, '.secrets'));
    writeFileSync(join(dir, '.secrets/lab'), 'lab-secret-value\n');
    const bus = await startBusWithConfig(file, { cwd: dir, env: { OPS_CLI_PLANNER_TOKEN: 'planner-ops-token' } });
    try {
      const running = toolbus(['client-config', '--agent', 'planner'], dir);
      assert.equal(running.code, 0, running.stderr);
      assert.match(running.stdout, new RegExp(`"url": "http://127\\.0\\.0\\.1:${bus.port}/mcp"`));
    } finally {
      await bus.stop();
    }
    const after = toolbus(['client-config', '--agent', 'planner'], dir);
    assert.match(after.stdout, /:7410\/mcp/, 'the run file goes with the bus');
  });

  it('serve --demo announces a token only when an agent accepts it, with ${file:} next to the config', async () => {
    const dir = tempDir();
    const elsewhere = tempDir();
    const noDemo = join(dir, 'plain.yaml');
    writeFileSync(
      noDemo,
      'store: { kind: memory }\nagents: [{ id: ops, token: "ops-token-0123456789" }]\nupstreams: {}\n',
    );
    const plain = await startBusWithConfig(noDemo, { cwd: elsewhere, args: ['--demo'] });
    await plain.stop();
    assert.doesNotMatch(plain.stderr(), /uses token|created token/);
    assert.match(plain.stderr(), /no agent in this config uses \.toolbus\/demo-agent-token/);

    const demoFile = join(dir, 'demo.yaml');
    writeFileSync(
      demoFile,
      'store: { kind: memory }\nagents: [{ id: demo, token: "${file:.toolbus/demo-agent-token}" }]\nupstreams:\n' +
        `  lab: { command: ${process.execPath}, args: [${LAB_SERVER}], tools: { echo: { kind: read } } }\n`,
    );
    // Started from another directory: the secret files are made, and read, beside the config.
    const demo = await startBusWithConfig(demoFile, { cwd: elsewhere, args: ['--demo'] });
    try {
      const token = /agent "demo" (?:created|uses) token (\S+)/.exec(demo.stderr())?.[1];
      assert.ok(token, demo.stderr());
      assert.equal(readFileSync(join(dir, '.toolbus/demo-agent-token'), 'utf8').trim(), token);
      const r = await new AgentClient(demo.url, token).call('lab__echo', { text: 'demo works' });
      assert.equal(r.content?.[0]?.text, 'demo works');
    } finally {
      await demo.stop();
    }
  });

  it("the README's minimal config works as copied (secret file beside the config, run from elsewhere)", () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## A minimal config'));
    const yamlText = /```yaml\n([\s\S]*?)```/.exec(section)?.[1];
    assert.ok(yamlText, 'README has a minimal config');
    const dir = tempDir();
    mkdirSync(join(dir, '.secrets'));
    writeFileSync(join(dir, '.secrets/tickets'), 'tickets-api-token-for-readme\n');
    writeFileSync(join(dir, 'toolbus.yaml'), yamlText);
    // Run from another directory that has the build (the config's command path is relative to where toolbus runs).
    const runDir = tempDir();
    symlinkSync(join(ROOT, 'dist'), join(runDir, 'dist'));
    const r = toolbus(['check', '--config', join(dir, 'toolbus.yaml')], runDir, {
      PLANNER_TOKEN: 'planner-readme-token',
    });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /tickets__create_ticket\s+write\s+key:required\s+lease: issue:\{\/source_issue\}/);
  });
});
