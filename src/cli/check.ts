// toolbus check: validate the config (errors name the offending key), connect to every upstream, print the catalog
// with each tool's kind, key rule and lease, and the warnings an operator should read.
import { parseArgs } from 'node:util';
import pino from 'pino';
import { Catalog } from '../catalog/catalog.js';
import { ConfigError, type LoadedConfig, loadConfig } from '../config/load.js';
import { isStdioUpstream } from '../config/schema.js';
import { openVault } from '../store/vault-open.js';
import { UpstreamConnection } from '../upstreams/connection.js';
import { upstreamAuthFor } from '../upstreams/oauth/index.js';
import { configForSession, ensureSessionCwd, LISTING_KEY, sharingLine } from '../upstreams/session-config.js';
import { defaultConfigPath } from './config-path.js';

export async function runCheck(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' } } });
  const file = defaultConfigPath(values.config);
  let loaded: LoadedConfig;
  try {
    loaded = loadConfig(file);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stdout.write(`${file}: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const { config } = loaded;
  process.stdout.write(
    `${file}: config is valid (${Object.keys(config.upstreams).length} upstreams, ${config.agents.length} agents, store ${config.store.kind})\n`,
  );
  const logger = pino({ level: 'silent' });
  const catalog = new Catalog();
  let failed = 0;
  // OAuth upstreams use the stored login (and take part in the refresh lock like any replica).
  const needsVault = Object.values(config.upstreams).some((u) => !isStdioUpstream(u) && u.oauth);
  const vault = needsVault ? await openVault(config.store).catch(() => undefined) : undefined;
  for (const [name, ucfg] of Object.entries(config.upstreams)) {
    // A per-agent/per-tenant upstream is checked through a listing session, as the bus lists it.
    const listing = { agent: LISTING_KEY, tenant: LISTING_KEY };
    const used = ucfg.sharing === 'shared' ? ucfg : configForSession(ucfg, listing);
    ensureSessionCwd(ucfg, used);
    const auth = vault ? upstreamAuthFor(name, ucfg, vault.vault, loaded.baseDir, logger) : undefined;
    const conn = new UpstreamConnection(name, used, { logger, auth });
    try {
      await conn.start();
      if (conn.state === 'needs_login') {
        process.stdout.write(`\nupstream ${name}: needs_login (run toolbus login ${name})\n`);
        failed++;
        continue;
      }
      if (!(await conn.ready(ucfg.connectTimeoutMs))) {
        process.stdout.write(`\nupstream ${name}: cannot connect (${conn.state})\n`);
        failed++;
        continue;
      }
      const res = await conn.request('tools/list', undefined);
      catalog.setUpstream(name, ucfg, { tools: (res.tools as Record<string, unknown>[]) ?? [] });
      process.stdout.write(`\nupstream ${name}: connected (${sharingLine(ucfg)})\n`);
      for (const t of catalog.all()) {
        if (t.upstream !== name) continue;
        const lease =
          t.kind === 'read' ? '-' : t.leaseIsWholeUpstream ? `${name} (whole upstream)` : t.lease.join(', ');
        process.stdout.write(`  ${t.name.padEnd(36)} ${t.kind.padEnd(5)} key:${t.keyRule.padEnd(8)} lease: ${lease}\n`);
      }
    } finally {
      await conn.close();
    }
  }
  await vault?.close();
  if (catalog.warnings.length > 0) {
    process.stdout.write('\nwarnings:\n');
    for (const w of catalog.warnings) process.stdout.write(`  ${w.tool}: ${w.message}\n`);
  }
  return failed > 0 ? 1 : 0;
}
