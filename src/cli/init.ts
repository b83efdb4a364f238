// toolbus init: write a starter config, either the example one or converted from a client's .mcp.json. The
// conversion loses nothing silently: every server becomes an upstream under a valid name (the original name is kept
// in a comment; no two servers ever share one), `cwd` is kept, `${VAR}` expansions become `${env:VAR}`, literal
// values that look secret become `${env:…}` references (so no secret lands in the file) while other literals stay as
// they are, and whatever toolbus cannot take (an SSE server, unknown keys) is written as a comment and reported.
// Unless told not to, init then starts each server, reads all its tools, and writes each tool's kind from its
// annotations as an explicit policy with a comment saying why, for the operator to review.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { Document, isMap, isScalar, type Pair, type Scalar, type YAMLMap } from 'yaml';
import { parseConfig } from '../config/load.js';
import { UpstreamConnection } from '../upstreams/connection.js';
import { listAllTools } from './check.js';

const STARTER = `# toolbus config: see docs/config.md for every key.
server: { host: 127.0.0.1, port: 7410 }
store: { kind: sqlite, path: .toolbus/state.db }
agents:
  - { id: agent-1, token: "\${env:TOOLBUS_AGENT_1_TOKEN}", tenant: default, tools: ["*"], weight: 1 }
upstreams: {}
`;

/** Key names (env or header) whose literal values are treated as secrets. */
const SECRET_KEY = /token|secret|passw|pwd|api[-_]?key|apikey|auth|credential|private|cookie|session|signature/i;
/** Values that are secrets whatever their key: bearer/basic credentials, URLs with a password. */
const SECRET_VALUE = /^(bearer|basic|token)\s+\S|:\/\/[^/\s:@]+:[^/\s@]+@/i;
/** Claude Code's expansion syntax: ${VAR} and ${VAR:-default}. */
const EXPANSION = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;
const KNOWN_STDIO = new Set(['type', 'command', 'args', 'env', 'cwd']);
const KNOWN_HTTP = new Set(['type', 'url', 'headers']);

export interface Conversion {
  config: Record<string, unknown>;
  /** Environment variables the config refers to (secrets moved out, and the .mcp.json's own expansions). */
  envVars: string[];
  /** Comments to attach: path (as keys) → text. */
  comments: { path: string[]; text: string }[];
  /** What the operator must read: renamed servers, skipped servers, unconverted keys, defaults dropped. */
  notes: string[];
  /** Servers as the client would run them (values as given), for reading their tools. */
  runnable: Record<string, Record<string, unknown>>;
}

function envName(server: string, key: string): string {
  return `${server}_${key}`.toUpperCase().replace(/[^A-Z0-9]/g, '_');
}

/** A valid upstream name (letters, digits, "-", single "_" between), unique among those taken. */
function upstreamName(raw: string, taken: Set<string>): string {
  const base = upstreamNameBase(raw);
  // Valid names were reserved up front, so only the renamed ones can need a suffix.
  if (base === raw) return raw;
  let name = base;
  for (let i = 2; taken.has(name); i++) name = `${base}-${i}`;
  taken.add(name);
  return name;
}

function upstreamNameBase(raw: string): string {
  const base = raw
    .replace(/[^A-Za-z0-9_-]+/g, '-')
    .replace(/_{2,}/g, '_')
    .replace(/^[-_]+|[-_]+$/g, '');
  return base || 'server';
}

/** A server entry with its env and header values hidden, fit for a comment (they may be secrets). */
function withoutValues(s: Record<string, unknown>): Record<string, unknown> {
  const hide = (m: unknown) =>
    m && typeof m === 'object' ? Object.fromEntries(Object.keys(m).map((k) => [k, '(see .mcp.json)'])) : m;
  return { ...s, ...(s.env ? { env: hide(s.env) } : {}), ...(s.headers ? { headers: hide(s.headers) } : {}) };
}

export function convertMcpJson(text: string, env: NodeJS.ProcessEnv = process.env): Conversion {
  const parsed = JSON.parse(text) as { mcpServers?: Record<string, Record<string, unknown>> };
  const upstreams: Record<string, unknown> = {};
  const envVars = new Set<string>();
  const comments: Conversion['comments'] = [];
  const notes: string[] = [];
  const runnable: Conversion['runnable'] = {};
  // Names that are valid as they are keep them; only the others are renamed, around them.
  const taken = new Set(Object.keys(parsed.mcpServers ?? {}).filter((n) => upstreamNameBase(n) === n));

  /** `${VAR}` → `${env:VAR}`; a default is not supported by toolbus, so it is reported. */
  const expand = (value: string, where: string): string =>
    value.replace(EXPANSION, (_all, name: string, dflt: string | undefined) => {
      envVars.add(name);
      if (dflt !== undefined)
        notes.push(
          `${where}: \${${name}:-${dflt}} has a default toolbus does not apply; set ${name} (e.g. to "${dflt}")`,
        );
      return `\${env:${name}}`;
    });
  /** A value for the client's process: expansions applied from our environment, for reading tools now. */
  const expandNow = (value: string): string =>
    value.replace(EXPANSION, (_all, name: string, dflt: string | undefined) => env[name] ?? dflt ?? '');

  const values = (
    server: string,
    raw: unknown,
    where: string,
  ): { out: Record<string, string>; now: Record<string, string> } => {
    const out: Record<string, string> = {};
    const now: Record<string, string> = {};
    for (const [k, v] of Object.entries((raw as Record<string, unknown> | undefined) ?? {})) {
      const value = String(v);
      now[k] = expandNow(value);
      if (EXPANSION.test(value)) {
        EXPANSION.lastIndex = 0;
        out[k] = expand(value, `${where}.${k}`);
      } else if (SECRET_KEY.test(k) || SECRET_VALUE.test(value)) {
        const name = envName(server, k);
        out[k] = `\${env:${name}}`;
        envVars.add(name);
        comments.push({
          path: ['upstreams', server, where.split('.').pop()!, k],
          text: ` secret: its value from .mcp.json is read from $${name}`,
        });
      } else {
        out[k] = value;
      }
      EXPANSION.lastIndex = 0;
    }
    return { out, now };
  };

  for (const [rawName, s] of Object.entries(parsed.mcpServers ?? {})) {
    const name = upstreamName(rawName, taken);
    const from =
      name === rawName ? undefined : ` from .mcp.json server "${rawName}" (renamed: not a valid upstream name)`;
    if (from) notes.push(`server "${rawName}" is upstream "${name}"`);
    const type = typeof s.type === 'string' ? s.type : undefined;
    const extra = Object.keys(s).filter((k) => !(typeof s.command === 'string' ? KNOWN_STDIO : KNOWN_HTTP).has(k));
    const extraNote = extra.length
      ? ` not converted: ${extra.map((k) => `${k}: ${JSON.stringify(s[k])}`).join(', ')}`
      : undefined;
    if (extraNote)
      notes.push(`server "${rawName}": keys toolbus has no use for were kept as a comment: ${extra.join(', ')}`);

    if (typeof s.command === 'string' && (type === undefined || type === 'stdio')) {
      const { out: envOut, now: envNow } = values(name, s.env, 'env');
      const args = ((s.args as unknown[] | undefined) ?? []).map((a, i) => expand(String(a), `${name}.args[${i}]`));
      const cwd = typeof s.cwd === 'string' ? expand(s.cwd, `${name}.cwd`) : undefined;
      upstreams[name] = {
        command: expand(s.command, `${name}.command`),
        args,
        ...(Object.keys(envOut).length ? { env: envOut } : {}),
        ...(cwd !== undefined ? { cwd } : {}),
      };
      runnable[name] = {
        command: expandNow(s.command),
        args: ((s.args as unknown[] | undefined) ?? []).map((a) => expandNow(String(a))),
        env: envNow,
        ...(typeof s.cwd === 'string' ? { cwd: expandNow(s.cwd) } : {}),
      };
    } else if (typeof s.url === 'string' && (type === undefined || type === 'http' || type === 'streamable-http')) {
      const { out: headersOut, now: headersNow } = values(name, s.headers, 'headers');
      upstreams[name] = {
        url: expand(s.url, `${name}.url`),
        ...(Object.keys(headersOut).length ? { headers: headersOut } : {}),
      };
      runnable[name] = { url: expandNow(s.url), headers: headersNow };
      if (type === undefined)
        notes.push(
          `server "${rawName}" has no type; taken as Streamable HTTP (toolbus does not speak the old SSE transport)`,
        );
    } else {
      // Not convertible (the legacy SSE transport, or an unknown shape): kept whole as a comment, and said so.
      notes.push(
        `server "${rawName}" (type ${type ?? 'unknown'}) was NOT converted: toolbus connects to stdio and Streamable HTTP servers only; it is kept as a comment in the config`,
      );
      comments.push({
        path: ['upstreams'],
        text: ` NOT CONVERTED: .mcp.json server "${rawName}" (type ${type ?? 'unknown'}; toolbus speaks stdio and Streamable HTTP only). If it also serves Streamable HTTP, add it with its /mcp URL:\n ${JSON.stringify(withoutValues(s)).replace(/\n/g, ' ')}`,
      });
      continue;
    }
    const text = [from, extraNote].filter(Boolean).join('\n');
    if (text) comments.push({ path: ['upstreams', name], text });
  }
  return {
    config: {
      server: { host: '127.0.0.1', port: 7410 },
      store: { kind: 'sqlite', path: '.toolbus/state.db' },
      agents: [{ id: 'agent-1', token: `\${env:TOOLBUS_AGENT_1_TOKEN}`, tenant: 'default', tools: ['*'], weight: 1 }],
      upstreams,
    },
    envVars: [...envVars],
    comments,
    notes,
    runnable,
  };
}

interface ToolAnnotations {
  readOnlyHint?: boolean;
  destructiveHint?: boolean;
  idempotentHint?: boolean;
  openWorldHint?: boolean;
}

/** Each tool's policy from its annotations, and the comment that says where it came from. */
export function policiesFromTools(
  tools: Record<string, unknown>[],
): { name: string; policy: Record<string, unknown>; comment: string }[] {
  return tools
    .filter((t) => typeof t.name === 'string')
    .map((t) => {
      const a = (t.annotations as ToolAnnotations | undefined) ?? {};
      const hints = Object.entries(a)
        .filter(([k]) => k.endsWith('Hint'))
        .map(([k, v]) => `${k}=${String(v)}`)
        .join(', ');
      if (a.readOnlyHint === true)
        return { name: t.name as string, policy: { kind: 'read' }, comment: ` read: the server says ${hints}` };
      const why = hints ? `the server says ${hints}` : 'no annotations, so assumed a write';
      return {
        name: t.name as string,
        policy: { kind: 'write', idempotency: a.idempotentHint === true ? 'optional' : 'required' },
        comment:
          ` write (${why}). REVIEW: without a lease it locks the whole upstream;` +
          ` add one per entity (lease: ["item:{/id}"]) or make it kind: read`,
      };
    });
}

async function readTools(
  runnable: Conversion['runnable'],
  timeoutMs: number,
): Promise<Map<string, Record<string, unknown>[] | string>> {
  const logger = pino({ level: 'silent' });
  const out = new Map<string, Record<string, unknown>[] | string>();
  await Promise.all(
    Object.entries(runnable).map(async ([name, raw]) => {
      let conn: UpstreamConnection | undefined;
      try {
        // Validated like any upstream (names and defaults); the values are the client's, never written anywhere.
        const { config } = parseConfig(
          JSON.stringify({ upstreams: { [name]: { ...raw, connectTimeoutMs: timeoutMs } } }),
          {
            secretsOptional: true,
          },
        );
        conn = new UpstreamConnection(name, config.upstreams[name]!, { logger });
        await conn.start();
        if (conn.state !== 'ready') {
          out.set(name, `could not start it (${conn.state}); run toolbus check once its environment is set`);
          return;
        }
        out.set(name, await listAllTools(conn));
      } catch (err) {
        out.set(name, (err as Error).message.split('\n').slice(0, 3).join(' '));
      } finally {
        await conn?.close().catch(() => {});
      }
    }),
  );
  return out;
}

function nodeAt(doc: Document, path: string[]): YAMLMap | Pair | undefined {
  const parent = doc.getIn(path.slice(0, -1), true);
  if (!isMap(parent)) return undefined;
  return (parent as YAMLMap).items.find((p) => isScalar(p.key) && (p.key as Scalar).value === path[path.length - 1]);
}

export function renderConfig(
  conv: Conversion,
  source: string,
  tools?: Map<string, Record<string, unknown>[] | string>,
) {
  const upstreams = conv.config.upstreams as Record<string, Record<string, unknown>>;
  const toolComments: { path: string[]; text: string }[] = [];
  for (const [name, got] of tools ?? []) {
    const u = upstreams[name];
    if (!u) continue;
    if (typeof got === 'string') {
      toolComments.push({ path: ['upstreams', name], text: ` tools not read: ${got}` });
      continue;
    }
    const policies = policiesFromTools(got);
    u.tools = Object.fromEntries(policies.map((p) => [p.name, p.policy]));
    for (const p of policies) toolComments.push({ path: ['upstreams', name, 'tools', p.name], text: p.comment });
  }
  const doc = new Document(conv.config);
  doc.commentBefore =
    ` converted from ${source} by toolbus init; see docs/config.md and docs/operating.md.\n` +
    ' Review every tool policy below: kinds come from what each server says about its tools.';
  for (const c of [...conv.comments, ...toolComments]) {
    const node = nodeAt(doc, c.path);
    if (!node) continue;
    const pair = node as Pair;
    if (c.path[2] === 'tools' && c.path.length === 4 && isMap(pair.value)) (pair.value as YAMLMap).flow = true;
    const key = pair.key as Scalar | undefined;
    if (key && isScalar(key)) key.commentBefore = key.commentBefore ? `${key.commentBefore}\n${c.text}` : c.text;
  }
  return doc.toString({ lineWidth: 0 });
}

export async function runInit(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      from: { type: 'string' },
      out: { type: 'string' },
      force: { type: 'boolean' },
      'no-connect': { type: 'boolean', default: false },
      timeout: { type: 'string' },
    },
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
  const conv = convertMcpJson(readFileSync(values.from, 'utf8'));
  const tools = values['no-connect']
    ? undefined
    : await readTools(conv.runnable, Number(values.timeout ?? 10_000) || 10_000);
  writeFileSync(out, renderConfig(conv, values.from, tools));
  const n = Object.keys(conv.config.upstreams as object).length;
  process.stdout.write(`wrote ${out} with ${n} upstreams\n`);
  for (const [name, got] of tools ?? []) {
    process.stdout.write(
      typeof got === 'string'
        ? `  ${name}: tools not read (${got})\n`
        : `  ${name}: ${got.length} tools written as policies to review\n`,
    );
  }
  for (const note of conv.notes) process.stdout.write(`note: ${note}\n`);
  process.stdout.write(
    `set these environment variables before toolbus serve: ${['TOOLBUS_AGENT_1_TOKEN', ...conv.envVars].join(' ')}\n`,
  );
  return 0;
}
