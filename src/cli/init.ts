// toolbus init: write a starter config, either the example one or converted from a client's .mcp.json (each server
// becomes an upstream; its env and header values become ${env:NAME} references so no secret lands in the file).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';

const STARTER = `# toolbus config: see docs/config.md for every key.
server: { host: 127.0.0.1, port: 7410 }
store: { kind: sqlite, path: .toolbus/state.db }
agents:
  - { id: agent-1, token: "\${env:TOOLBUS_AGENT_1_TOKEN}", tenant: default, tools: ["*"], weight: 1 }
upstreams: {}
`;

function envName(server: string, key: string): string {
  return `${server}_${key}`.toUpperCase().replace(/[^A-Z0-9]/g, '_');
}

export function convertMcpJson(text: string): { config: Record<string, unknown>; envVars: string[] } {
  const parsed = JSON.parse(text) as { mcpServers?: Record<string, Record<string, unknown>> };
  const upstreams: Record<string, unknown> = {};
  const envVars: string[] = [];
  for (const [rawName, s] of Object.entries(parsed.mcpServers ?? {})) {
    const name = rawName.replace(/[^A-Za-z0-9_-]/g, '_');
    if (typeof s.command === 'string') {
      const env: Record<string, string> = {};
      for (const k of Object.keys((s.env as Record<string, string> | undefined) ?? {})) {
        const v = envName(name, k);
        env[k] = `\${env:${v}}`;
        envVars.push(v);
      }
      upstreams[name] = {
        command: s.command,
        args: (s.args as string[] | undefined) ?? [],
        ...(Object.keys(env).length ? { env } : {}),
      };
    } else if (typeof s.url === 'string') {
      const headers: Record<string, string> = {};
      for (const k of Object.keys((s.headers as Record<string, string> | undefined) ?? {})) {
        const v = envName(name, k);
        headers[k] = `\${env:${v}}`;
        envVars.push(v);
      }
      upstreams[name] = { url: s.url, ...(Object.keys(headers).length ? { headers } : {}) };
    }
  }
  return {
    config: {
      server: { host: '127.0.0.1', port: 7410 },
      store: { kind: 'sqlite', path: '.toolbus/state.db' },
      agents: [{ id: 'agent-1', token: `\${env:TOOLBUS_AGENT_1_TOKEN}`, tenant: 'default', tools: ['*'], weight: 1 }],
      upstreams,
    },
    envVars,
  };
}

export async function runInit(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { from: { type: 'string' }, out: { type: 'string' }, force: { type: 'boolean' } },
  });
  const out = values.out ?? 'toolbus.yaml';
  if (existsSync(out) && !values.force) {
    process.stderr.write(`${out} exists; pass --force to overwrite\n`);
    return 2;
  }
  if (!values.from) {
    writeFileSync(out, STARTER);
    process.stdout.write(`wrote ${out}\n`);
    return 0;
  }
  const { config, envVars } = convertMcpJson(readFileSync(values.from, 'utf8'));
  writeFileSync(out, `# converted from ${values.from} by toolbus init; see docs/config.md\n${stringify(config)}`);
  process.stdout.write(`wrote ${out} with ${Object.keys(config.upstreams as object).length} upstreams\n`);
  if (envVars.length > 0)
    process.stdout.write(
      `set these environment variables before toolbus serve: ${['TOOLBUS_AGENT_1_TOKEN', ...envVars].join(' ')}\n`,
    );
  return 0;
}
