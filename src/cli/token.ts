// toolbus token create: prints a short-lived token for one configured agent, signed with `auth.signing.key`.
// For scripts and CI jobs that should not hold a long-lived static token. The token goes to stdout only.
import { parseArgs } from 'node:util';
import { parseTtl, signAgentToken } from '../agents/local-tokens.js';
import { loadConfig } from '../config/load.js';
import { defaultConfigPath } from './config-path.js';

const USAGE = `usage: toolbus token create --agent ID [--ttl 1h] [--config FILE]

Prints a signed, short-lived bearer token for the agent ID (listed under agents: or auth.agents:).
The bus verifies it like any JWT (signature, iss, aud, exp) and refuses it once it expires.
Needs auth.signing.key in the config. --ttl takes seconds or 30s / 15m / 1h / 1d (default 1h,
at most auth.signing.maxTtlSeconds).
`;

export async function runToken(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    process.stdout.write(USAGE);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== 'create') {
    process.stderr.write(`unknown token command ${sub}\n${USAGE}`);
    return 2;
  }
  const { values } = parseArgs({
    args: rest,
    options: {
      agent: { type: 'string' },
      ttl: { type: 'string', default: '1h' },
      config: { type: 'string', short: 'c' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (!values.agent) {
    process.stderr.write(`token create needs --agent ID\n${USAGE}`);
    return 2;
  }
  const { config } = loadConfig(defaultConfigPath(values.config));
  const signing = config.auth.signing;
  if (!signing) {
    process.stderr.write('the config has no auth.signing.key, so toolbus cannot sign tokens\n');
    return 2;
  }
  const known = config.agents.some((a) => a.id === values.agent) || config.auth.agents[values.agent] !== undefined;
  if (!known) {
    process.stderr.write(`no agent ${values.agent} under agents: or auth.agents: in the config\n`);
    return 2;
  }
  const ttl = parseTtl(values.ttl);
  if (ttl === undefined || ttl > signing.maxTtlSeconds) {
    process.stderr.write(`--ttl must be a duration from 1s to ${signing.maxTtlSeconds}s (e.g. 15m, 1h)\n`);
    return 2;
  }
  process.stdout.write(`${await signAgentToken(signing, values.agent, ttl)}\n`);
  return 0;
}
