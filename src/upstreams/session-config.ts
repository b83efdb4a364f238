// What a per-agent or per-tenant session of an upstream is configured with: `{agent}` and `{tenant}` in a stdio
// upstream's args, env and cwd, filled in per session (encoded so an id can never climb out of a workspace), and the
// config mistakes about sharing that stop a config from loading.
import { mkdirSync } from 'node:fs';
import { isStdioUpstream, type UpstreamConfig } from '../config/schema.js';

/** What `{agent}` and `{tenant}` stand for in the listing session, which belongs to no agent. */
export const LISTING_KEY = '_catalog';
const PLACEHOLDER = /\{(agent|tenant)\}/g;

/**
 * An agent id or tenant made safe to put into a path or an argument: characters outside `[A-Za-z0-9_.-]` are
 * percent-encoded, and so is a value that is only dots, so `{agent}` can never climb out of a workspace directory.
 */
export function placeholderValue(raw: string): string {
  const enc = raw.replace(/[^A-Za-z0-9_.-]/g, (c) =>
    [...Buffer.from(c, 'utf8')].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''),
  );
  return /^\.*$/.test(enc) ? enc.replace(/\./g, '%2E') || '%00' : enc;
}

/** The placeholders a stdio upstream's args, env and cwd use. */
export function placeholdersIn(cfg: UpstreamConfig): Set<string> {
  const found = new Set<string>();
  if (!isStdioUpstream(cfg)) return found;
  for (const s of [...cfg.args, ...Object.values(cfg.env), cfg.cwd ?? ''])
    for (const m of s.matchAll(PLACEHOLDER)) found.add(m[1]!);
  return found;
}

/** Config mistakes about sharing that must stop the bus (a placeholder that cannot mean anything in its mode). */
export function sharingProblems(name: string, cfg: UpstreamConfig): string[] {
  const used = placeholdersIn(cfg);
  const problems: string[] = [];
  if (cfg.sharing === 'shared' && used.size > 0)
    problems.push(
      `upstreams.${name}: {${[...used].join('}, {')}} in args/env/cwd needs sharing: per-agent or per-tenant (one process serves every agent in shared mode)`,
    );
  if (cfg.sharing === 'per-tenant' && used.has('agent'))
    problems.push(`upstreams.${name}: {agent} cannot be used with sharing: per-tenant (a session serves many agents)`);
  return problems;
}

/** How `toolbus check` states an upstream's sharing mode. */
export function sharingLine(cfg: UpstreamConfig): string {
  if (cfg.sharing === 'shared') return 'sharing: shared, one session for every agent';
  const per = cfg.sharing === 'per-agent' ? 'agent' : 'tenant';
  return `sharing: ${cfg.sharing}, one session per ${per}, at most ${cfg.maxSessions}, closed after ${cfg.sessionIdleMs} ms idle`;
}

/** A stdio upstream's config with `{agent}` and `{tenant}` filled in for one session. */
export function configForSession(cfg: UpstreamConfig, vars: { agent: string; tenant: string }): UpstreamConfig {
  if (!isStdioUpstream(cfg)) return cfg;
  const fill = (s: string) =>
    s.replace(PLACEHOLDER, (_m, which: string) => placeholderValue(which === 'agent' ? vars.agent : vars.tenant));
  return {
    ...cfg,
    args: cfg.args.map(fill),
    env: Object.fromEntries(Object.entries(cfg.env).map(([k, v]) => [k, fill(v)])),
    ...(cfg.cwd === undefined ? {} : { cwd: fill(cfg.cwd) }),
  };
}

/**
 * Creates a session's working directory when the operator templated it (`cwd: /work/{agent}`): the operator names
 * the parent, each session gets its own directory on first use. Returns a message when it cannot be created.
 */
export function ensureSessionCwd(template: UpstreamConfig, filled: UpstreamConfig): string | undefined {
  if (!isStdioUpstream(filled) || filled.cwd === undefined || placeholdersIn(template).size === 0) return undefined;
  try {
    mkdirSync(filled.cwd, { recursive: true });
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}
