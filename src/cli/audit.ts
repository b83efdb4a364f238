// toolbus audit: the write audit trail from the store (read-only; works while a bus runs).
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.js';
import { createStore } from '../store/index.js';
import { defaultConfigPath } from './config-path.js';

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function parseSince(text: string, now = Date.now()): number {
  const m = /^(\d+)([smhd])$/.exec(text);
  if (m) return now - Number(m[1]) * UNITS[m[2]!]!;
  const t = Date.parse(text);
  if (Number.isNaN(t))
    throw new Error(`--since takes a duration like 30m, 2h, 1d or an ISO time, not ${JSON.stringify(text)}`);
  return t;
}

export async function runAudit(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      since: { type: 'string' },
      tool: { type: 'string' },
      limit: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  const { config } = loadConfig(defaultConfigPath(values.config), process.env, { secretsOptional: true });
  // No bus has run from this config yet: nothing to show, and nothing to create by looking.
  if (config.store.kind === 'sqlite' && !existsSync(config.store.path)) {
    if (!values.json) process.stdout.write(`0 record(s) (no state file at ${config.store.path} yet)\n`);
    return 0;
  }
  const store = await createStore(config.store, { replicaId: 'audit-cli', readonly: true });
  try {
    const entries = await store.queryAudit({
      ...(values.since ? { sinceMs: parseSince(values.since) } : {}),
      ...(values.tool ? { tool: values.tool } : {}),
      limit: values.limit ? Number(values.limit) : 100,
    });
    for (const e of entries) {
      if (values.json) {
        process.stdout.write(`${JSON.stringify(e)}\n`);
        continue;
      }
      process.stdout.write(
        `${new Date(e.at).toISOString()}  ${e.agent.padEnd(12)} ${e.tool.padEnd(28)} ${e.outcome.padEnd(20)} ` +
          `key=${e.key ?? '-'} scopes=${e.scopes.join(',') || '-'} fence=${e.fencingToken ?? '-'} ${e.durationMs}ms\n`,
      );
    }
    if (!values.json) process.stdout.write(`${entries.length} record(s)\n`);
  } finally {
    await store.close();
  }
  return 0;
}
