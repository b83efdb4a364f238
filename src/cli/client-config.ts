// toolbus client-config: the .mcp.json entry an agent needs (HTTP transport, the bus URL, and the Authorization
// header taken from an environment variable, so the token itself is never written into a client's config).
import { parseArgs } from 'node:util';
import { isUnspecifiedAddress } from '../agents/hosts.js';
import { loadConfig } from '../config/load.js';
import { defaultConfigPath } from './config-path.js';
import { runningUrl } from './run-file.js';

export async function runClientConfig(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      agent: { type: 'string' },
      config: { type: 'string', short: 'c' },
      url: { type: 'string' },
      name: { type: 'string' },
      upstream: { type: 'string' },
    },
  });
  if (!values.agent) {
    process.stderr.write('client-config needs --agent ID\n');
    return 2;
  }
  const file = defaultConfigPath(values.config);
  // Only ids and the address are read: the config's secrets need not be set where this runs.
  const { config } = loadConfig(file, process.env, { secretsOptional: true });
  if (!config.agents.some((a) => a.id === values.agent)) {
    process.stderr.write(
      `no agent ${values.agent} in the config (agents: ${config.agents.map((a) => a.id).join(', ')})\n`,
    );
    return 2;
  }
  if (values.upstream !== undefined && !Object.hasOwn(config.upstreams, values.upstream)) {
    process.stderr.write(
      `no upstream ${values.upstream} in the config (upstreams: ${Object.keys(config.upstreams).join(', ')})\n`,
    );
    return 2;
  }
  const host = isUnspecifiedAddress(config.server.host) ? '127.0.0.1' : config.server.host;
  const base = values.url ?? runningUrl(file) ?? `http://${host}:${config.server.port}/mcp`;
  // --upstream: the entry for /mcp/{upstream}, one upstream under its own names (in Claude Code: mcp__{upstream}__*).
  const url =
    values.upstream === undefined ? base : `${base.replace(/\/$/, '')}/${encodeURIComponent(values.upstream)}`;
  const envName = `TOOLBUS_TOKEN_${values.agent.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
  const entry = {
    mcpServers: {
      [values.name ?? values.upstream ?? 'toolbus']: {
        type: 'http',
        url,
        headers: { Authorization: `Bearer \${${envName}}` },
      },
    },
  };
  process.stdout.write(`${JSON.stringify(entry, null, 2)}\n`);
  process.stderr.write(`set ${envName} to agent ${values.agent}'s token in the client's environment\n`);
  return 0;
}
