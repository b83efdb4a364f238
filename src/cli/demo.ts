// `serve --demo`: creates the example config's secrets under .toolbus/ beside the config when they are missing (a
// random demo agent token and a random API token for the example tickets upstream). Once the config is loaded,
// `announceDemoToken` prints the agent token on stderr (not through the logger, which redacts it), but only when an
// agent of that config really accepts it: a demo token that would get 401 is never announced.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';

const AGENT_TOKEN = '.toolbus/demo-agent-token';

function ensureSecret(path: string): { value: string; created: boolean } {
  if (existsSync(path)) return { value: readFileSync(path, 'utf8').trim(), created: false };
  const value = randomBytes(24).toString('base64url');
  writeFileSync(path, `${value}\n`, { mode: 0o600 });
  return { value, created: true };
}

export interface DemoSecrets {
  agentToken: string;
  created: boolean;
}

export function prepareDemoSecrets(baseDir: string): DemoSecrets {
  mkdirSync(join(baseDir, '.toolbus'), { recursive: true, mode: 0o700 });
  ensureSecret(join(baseDir, '.toolbus/tickets-api-token'));
  const agent = ensureSecret(join(baseDir, AGENT_TOKEN));
  return { agentToken: agent.value, created: agent.created };
}

export function announceDemoToken(demo: DemoSecrets, config: Config): void {
  const sha = createHash('sha256').update(demo.agentToken).digest('hex');
  const agent = config.agents.find((a) => a.token === demo.agentToken || a.tokenSha256?.toLowerCase() === sha);
  if (!agent) {
    process.stderr.write(
      `toolbus demo: no agent in this config uses ${AGENT_TOKEN}, so no demo token is announced\n` +
        `  (the example config has one: toolbus serve --demo --config toolbus.example.yaml)\n`,
    );
    return;
  }
  process.stderr.write(
    `toolbus demo: agent "${agent.id}" ${demo.created ? 'created' : 'uses'} token ${demo.agentToken}\n` +
      `  (kept in ${AGENT_TOKEN}; send it as "Authorization: Bearer <token>")\n`,
  );
}
