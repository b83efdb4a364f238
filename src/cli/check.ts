// toolbus check: validate the config (errors name the offending key), connect to every upstream at once, print the
// catalog (every page of tools/list) with each tool's kind, key rule and lease, and the warnings an operator should
// read. An upstream that fails is shown with its own words: its connection error and the last lines of its stderr.
import { parseArgs } from 'node:util';
import { Catalog } from '../catalog/catalog.js';
import { ConfigError, type LoadedConfig, loadConfig } from '../config/load.js';
import { isStdioUpstream, type UpstreamConfig } from '../config/schema.js';
import { SecretRedactor } from '../observe/redact.js';
import { UpstreamTrails } from '../observe/upstream-trail.js';
import { openVault } from '../store/vault-open.js';
import { UpstreamConnection } from '../upstreams/connection.js';
import { upstreamAuthFor } from '../upstreams/oauth/index.js';
import type { UpstreamAuth } from '../upstreams/oauth/upstream-auth.js';
import { configForSession, ensureSessionCwd, LISTING_KEY, sharingLine } from '../upstreams/session-config.js';
import { defaultConfigPath } from './config-path.js';

interface Probe {
  name: string;
  tools?: Record<string, unknown>[];
  revisions?: string[];
  failure?: string;
}

/** Every page of an upstream's tools (bounded, in case a server hands out cursors forever). */
export async function listAllTools(conn: UpstreamConnection): Promise<Record<string, unknown>[]> {
  const tools: Record<string, unknown>[] = [];
  let cursor: unknown;
  for (let page = 0; page < 100; page++) {
    const res = await conn.request('tools/list', cursor === undefined ? undefined : { cursor });
    tools.push(...((res.tools as Record<string, unknown>[] | undefined) ?? []));
    cursor = res.nextCursor;
    if (typeof cursor !== 'string') break;
  }
  return tools;
}

/** For an HTTP upstream that failed: what the network itself says about its URL (refused, unknown host, a status). */
async function reachability(url: string, headers: Record<string, string>, timeoutMs: number): Promise<string> {
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: '{}',
      signal: AbortSignal.timeout(Math.min(timeoutMs, 5000)),
    });
    await res.body?.cancel();
    return `the URL answers HTTP ${res.status} ${res.statusText}`.trimEnd();
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    return `the URL is unreachable: ${cause?.code ?? cause?.message ?? (err as Error).message}`;
  }
}

async function probe(
  name: string,
  ucfg: UpstreamConfig,
  trails: UpstreamTrails,
  auth: UpstreamAuth | undefined,
): Promise<Probe> {
  // A per-agent/per-tenant upstream is checked through a listing session, as the bus lists it.
  const used = ucfg.sharing === 'shared' ? ucfg : configForSession(ucfg, { agent: LISTING_KEY, tenant: LISTING_KEY });
  ensureSessionCwd(ucfg, used);
  const conn = new UpstreamConnection(name, used, { logger: trails.loggerFor(name), auth });
  try {
    // One attempt: check reports what is wrong now instead of waiting out the restart backoff.
    await conn.start();
    if (conn.state === 'needs_login') return { name, failure: `needs_login (run toolbus login ${name})` };
    if (conn.state !== 'ready') {
      // A process that died says why on stderr, which may arrive just after its pipe closed.
      await new Promise((r) => setTimeout(r, 150));
      const trail = trails.get(name);
      const lines = [trail.lastError?.message ?? `cannot connect (${conn.state})`];
      if ('url' in ucfg) lines.push(await reachability(ucfg.url, ucfg.headers ?? {}, ucfg.connectTimeoutMs));
      if (trail.stderr.length > 0) lines.push('its stderr:', ...trail.stderr.slice(-10).map((l) => `  ${l}`));
      return { name, failure: lines.join('\n    ') };
    }
    return { name, tools: await listAllTools(conn), revisions: conn.revisions };
  } catch (err) {
    return { name, failure: (err as Error).message };
  } finally {
    await conn.close().catch(() => {});
  }
}

export async function runCheck(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { config: { type: 'string', short: 'c' }, timeout: { type: 'string' } },
  });
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
  const timeoutMs = values.timeout === undefined ? undefined : Number(values.timeout);
  if (timeoutMs !== undefined && !(Number.isInteger(timeoutMs) && timeoutMs > 0)) {
    process.stdout.write('--timeout takes a positive number of milliseconds\n');
    return 2;
  }
  const { config } = loaded;
  process.stdout.write(
    `${file}: config is valid (${Object.keys(config.upstreams).length} upstreams, ${config.agents.length} agents, store ${config.store.kind})\n`,
  );
  const redactor = new SecretRedactor(loaded.secrets);
  const trails = new UpstreamTrails({ redact: (t) => redactor.redact(t), level: 'silent' });
  // OAuth upstreams use the stored login (and take part in the refresh lock like any replica).
  const needsVault = Object.values(config.upstreams).some((u) => !isStdioUpstream(u) && u.oauth);
  const vault = needsVault ? await openVault(config.store).catch(() => undefined) : undefined;
  const probes = await Promise.all(
    Object.entries(config.upstreams).map(([name, ucfg]) =>
      probe(
        name,
        timeoutMs === undefined ? ucfg : { ...ucfg, connectTimeoutMs: timeoutMs },
        trails,
        vault ? upstreamAuthFor(name, ucfg, vault.vault, loaded.baseDir, trails.loggerFor(name)) : undefined,
      ),
    ),
  );
  await vault?.close();
  const catalog = new Catalog();
  let failed = 0;
  for (const p of probes) {
    const ucfg = config.upstreams[p.name]!;
    if (p.failure !== undefined) {
      process.stdout.write(`\nupstream ${p.name}: FAILED\n    ${redactor.redact(p.failure)}\n`);
      failed++;
      continue;
    }
    catalog.setUpstream(p.name, ucfg, { tools: p.tools ?? [] });
    const speaks = `speaks ${(p.revisions ?? []).join(' and ') || 'nothing known'}`;
    process.stdout.write(
      `\nupstream ${p.name}: connected (${p.tools?.length ?? 0} tools; ${sharingLine(ucfg)}; ${speaks})\n`,
    );
    for (const t of catalog.all()) {
      if (t.upstream !== p.name) continue;
      const lease =
        t.kind === 'read' ? '-' : t.leaseIsWholeUpstream ? `${p.name} (whole upstream)` : t.lease.join(', ');
      process.stdout.write(`  ${t.name.padEnd(36)} ${t.kind.padEnd(5)} key:${t.keyRule.padEnd(8)} lease: ${lease}\n`);
    }
  }
  if (catalog.warnings.length > 0) {
    process.stdout.write('\nwarnings:\n');
    for (const w of catalog.warnings) process.stdout.write(`  ${w.tool}: ${w.message}\n`);
  }
  if (failed > 0) process.stdout.write(`\n${failed} of ${probes.length} upstreams failed\n`);
  return failed > 0 ? 1 : 0;
}
