// Loading a config file: YAML → `${env:}`/`${file:}` references resolved → strict zod validation → deep-frozen.
// Every resolved reference value is remembered as a secret so the logger and error paths can redact it.

import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { sharingProblems } from '../upstreams/session-config.js';
import { type Config, ConfigSchema } from './schema.js';

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid config:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

export interface LoadedConfig {
  config: Config;
  /** The file it came from (absolute), or null for inline text. */
  path: string | null;
  /** Directory relative `${file:}` references are resolved against: the config file's own (cwd for inline text). */
  baseDir: string;
  /** Values that came from references: never to be logged or returned. */
  secrets: string[];
  /** Files referenced with ${file:}, watched for live rotation. */
  secretFiles: string[];
}

const REF = /\$\{(env|file):([^}]+)\}/g;

interface RefContext {
  env: NodeJS.ProcessEnv;
  baseDir: string;
  secrets: Set<string>;
  files: Set<string>;
  problems: string[];
  /** Commands that need no secret (client-config, audit) read a config whose secrets are not set. */
  secretsOptional: boolean;
}

/** Stands in for a reference that could not be resolved when secrets are optional; long enough for any min length. */
const UNRESOLVED = 'unresolved-reference-placeholder-0000000000000000';

function resolveString(value: string, path: string, ctx: RefContext): string {
  return value.replace(REF, (_all, kind: string, name: string) => {
    if (kind === 'env') {
      const v = ctx.env[name];
      if (v === undefined) {
        if (ctx.secretsOptional) return UNRESOLVED;
        ctx.problems.push(`${path}: environment variable ${name} is not set`);
        return '';
      }
      if (v.length > 0) ctx.secrets.add(v);
      return v;
    }
    const file = isAbsolute(name) ? name : resolve(ctx.baseDir, name);
    ctx.files.add(file);
    try {
      const v = readFileSync(file, 'utf8').trim();
      if (v.length > 0) ctx.secrets.add(v);
      return v;
    } catch (err) {
      if (ctx.secretsOptional) return UNRESOLVED;
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      ctx.problems.push(`${path}: cannot read secret file ${name} (${code})`);
      return '';
    }
  });
}

function resolveRefs(node: unknown, path: string, ctx: RefContext): unknown {
  if (typeof node === 'string') return resolveString(node, path, ctx);
  if (Array.isArray(node)) return node.map((v, i) => resolveRefs(v, `${path}[${i}]`, ctx));
  if (node !== null && typeof node === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(node)) out[k] = resolveRefs(v, path ? `${path}.${k}` : k, ctx);
    return out;
  }
  return node;
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || '(root)';
}

function formatIssues(issues: readonly z.core.$ZodIssue[], base: readonly PropertyKey[] = []): string[] {
  const out: string[] = [];
  for (const issue of issues) {
    const path = [...base, ...issue.path];
    if (issue.code === 'invalid_union' && issue.errors.length > 0) {
      // Report the branch that came closest (a stdio upstream with a typo is a stdio upstream, not an HTTP one).
      const closest = [...issue.errors].sort((a, b) => a.length - b.length)[0]!;
      out.push(...formatIssues(closest, path));
      continue;
    }
    const where = formatPath(path);
    if (issue.code === 'invalid_key' && issue.issues.length > 0) {
      // A map key that breaks its rule (an upstream name): say the rule, not "Invalid key in record".
      out.push(`${where}: ${issue.issues.map((i) => i.message).join('; ')}`);
      continue;
    }
    if (issue.code === 'unrecognized_keys') out.push(`${where}: unknown key(s) ${issue.keys.join(', ')}`);
    else out.push(`${where}: ${issue.message}`);
  }
  return out;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** Structural checks zod cannot express: tool-name collisions, duplicate agents and tokens. */
function crossCheck(config: Config): string[] {
  const problems: string[] = [];
  const ids = new Set<string>();
  for (const [i, a] of config.agents.entries()) {
    if (ids.has(a.id)) problems.push(`agents[${i}].id: duplicate agent id ${a.id}`);
    ids.add(a.id);
  }
  const exposed = new Map<string, string>();
  for (const [up, u] of Object.entries(config.upstreams)) {
    problems.push(...sharingProblems(up, u));
    for (const [tool, policy] of Object.entries(u.tools)) {
      const name = policy.rename ?? `${up}__${tool}`;
      const other = exposed.get(name);
      if (other) problems.push(`upstreams.${up}.tools.${tool}: exposed name ${name} collides with ${other}`);
      exposed.set(name, `upstreams.${up}.tools.${tool}`);
      if (policy.kind === 'read' && policy.lease) {
        problems.push(
          `upstreams.${up}.tools.${tool}.lease: reads never take leases; remove it or make the tool a write`,
        );
      }
    }
  }
  return problems;
}

export function parseConfig(
  text: string,
  opts: { path?: string | null; env?: NodeJS.ProcessEnv; baseDir?: string; secretsOptional?: boolean } = {},
): LoadedConfig {
  const path = opts.path ? resolve(opts.path) : null;
  const baseDir = opts.baseDir ?? (path ? dirname(path) : process.cwd());
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ConfigError([`YAML: ${(err as Error).message}`]);
  }
  if (raw === null || typeof raw !== 'object') throw new ConfigError(['(root): expected a mapping']);
  const ctx: RefContext = {
    env: opts.env ?? process.env,
    baseDir,
    secrets: new Set(),
    files: new Set(),
    problems: [],
    secretsOptional: opts.secretsOptional === true,
  };
  const resolved = resolveRefs(raw, '', ctx);
  const parsed = ConfigSchema.safeParse(resolved);
  const problems = [...ctx.problems];
  // A value that failed to resolve was already reported with its reason; its schema complaint would only repeat it.
  const reported = new Set(ctx.problems.map((p) => p.slice(0, p.indexOf(':'))));
  if (!parsed.success)
    problems.push(...formatIssues(parsed.error.issues).filter((p) => !reported.has(p.slice(0, p.indexOf(':')))));
  else problems.push(...crossCheck(parsed.data));
  if (problems.length > 0 || !parsed.success) throw new ConfigError(problems);
  return {
    config: deepFreeze(parsed.data),
    path,
    baseDir,
    secrets: [...ctx.secrets],
    secretFiles: [...ctx.files],
  };
}

export function loadConfig(
  file: string,
  env: NodeJS.ProcessEnv = process.env,
  opts: { secretsOptional?: boolean } = {},
): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([`cannot read config file ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`]);
  }
  // `${file:}` references resolve next to the config file, so a config and its secrets can be moved together and
  // a copied config works from any working directory.
  return parseConfig(text, { path: file, env, ...opts });
}
