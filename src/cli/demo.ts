// `serve --demo`: creates the example config's secrets under .toolbus/ when they are missing (a random demo agent
// token and a random API token for the example tickets upstream), and prints the agent token once per start-up on
// stderr (not through the logger, which redacts it), so a first-time user can connect at once.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';

function ensureSecret(path: string): { value: string; created: boolean } {
  if (existsSync(path)) return { value: readFileSync(path, 'utf8').trim(), created: false };
  const value = randomBytes(24).toString('base64url');
  writeFileSync(path, `${value}\n`, { mode: 0o600 });
  return { value, created: true };
}

export function prepareDemoSecrets(): void {
  mkdirSync('.toolbus', { recursive: true, mode: 0o700 });
  ensureSecret('.toolbus/tickets-api-token');
  const agent = ensureSecret('.toolbus/demo-agent-token');
  process.stderr.write(
    `toolbus demo: agent "demo" ${agent.created ? 'created' : 'uses'} token ${agent.value}\n` +
      '  (kept in .toolbus/demo-agent-token; send it as "Authorization: Bearer <token>")\n',
  );
}
