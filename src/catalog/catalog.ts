// The catalog: every upstream's tools under their exposed names, with the policy the pipeline enforces
// (kind, key rule, lease templates, timeout) and the tightened schema agents see and the bus validates.

import type { ValidateFunction } from 'ajv';
import { RE2JS } from 're2js';
import type { ToolPolicy, UpstreamConfig } from '../config/schema.js';
import { type HeaderDeclaration, headerDeclarations } from './mcp-param-headers.js';
import { compileValidator, tightenSchema } from './schema-tools.js';

export type ToolKind = 'read' | 'write';
export type KeyRule = 'required' | 'optional' | 'off';

export const KEY_PROPERTY = 'idempotency_key';
/** The lease template that stands for the whole upstream (the default for a write with no lease configured). */
export const WHOLE_UPSTREAM = '*';
export const KEY_META = 'toolbus/idempotency-key';
export const KEY_PATTERN = /^[A-Za-z0-9._:-]{8,255}$/;

export interface CatalogTool {
  readonly name: string;
  readonly upstream: string;
  readonly upstreamTool: string;
  readonly kind: ToolKind;
  readonly keyRule: KeyRule;
  /** Scope templates (the whole-upstream default is the template `{upstream}`); empty: the write takes no lease. */
  readonly lease: readonly string[];
  readonly leaseIsWholeUpstream: boolean;
  readonly onUnknown: 'fail' | 'retry';
  readonly timeoutMs: number;
  readonly hardTimeoutMs: number;
  /** The upstream's own schema declares idempotency_key: forward it (end-to-end dedupe). */
  readonly forwardKey: boolean;
  /** The definition agents see in tools/list. */
  readonly definition: Record<string, unknown>;
  /** Arguments the 2026-07-28 revision mirrors in `Mcp-Param-*` headers (the schema's `x-mcp-header`). */
  readonly headerDeclarations: HeaderDeclaration[];
  /** Validates the arguments without the key. */
  readonly validate: ValidateFunction;
}

export interface CatalogWarning {
  tool: string;
  message: string;
}

export interface UpstreamListing {
  tools: Record<string, unknown>[];
}

function resolveKind(
  policy: ToolPolicy | undefined,
  upstream: UpstreamConfig,
  tool: Record<string, unknown>,
): ToolKind {
  if (policy?.kind) return policy.kind;
  const annotations = tool.annotations as Record<string, unknown> | undefined;
  if (upstream.trustAnnotations && annotations?.readOnlyHint === true) return 'read';
  return 'write';
}

const KEY_DESCRIPTION =
  'Idempotency key for this operation (8-255 characters of A-Z a-z 0-9 . _ : -). Derive it from the logical ' +
  'operation, e.g. "create-ticket:issue-1234". Reuse the SAME key when retrying the same operation, so it runs at ' +
  'most once; use a NEW key for a new operation.';

function exposedSchema(validated: Record<string, unknown>, keyRule: KeyRule, kind: ToolKind): Record<string, unknown> {
  if (kind === 'read' || keyRule === 'off') return validated;
  const properties = { ...((validated.properties as Record<string, unknown> | undefined) ?? {}) };
  properties[KEY_PROPERTY] = {
    type: 'string',
    minLength: 8,
    maxLength: 255,
    pattern: KEY_PATTERN.source,
    description: KEY_DESCRIPTION,
  };
  const out: Record<string, unknown> = { ...validated, properties };
  if (keyRule === 'required') {
    const req = Array.isArray(validated.required) ? (validated.required as string[]) : [];
    out.required = [...new Set([...req, KEY_PROPERTY])];
  }
  return out;
}

export class Catalog {
  private readonly tools = new Map<string, CatalogTool>();
  /** Upstreams whose tool list has been read at least once. */
  private readonly loaded = new Set<string>();
  readonly warnings: CatalogWarning[] = [];

  isLoaded(upstream: string): boolean {
    return this.loaded.has(upstream);
  }

  get size(): number {
    return this.tools.size;
  }

  get(name: string): CatalogTool | undefined {
    return this.tools.get(name);
  }

  /** The tool an upstream calls `upstreamTool`, whatever name it is exposed under on /mcp. */
  byUpstreamName(upstream: string, upstreamTool: string): CatalogTool | undefined {
    for (const t of this.tools.values()) if (t.upstream === upstream && t.upstreamTool === upstreamTool) return t;
    return undefined;
  }

  all(): IterableIterator<CatalogTool> {
    return this.tools.values();
  }

  /** Replaces one upstream's tools (on connect and on tools/list_changed). */
  setUpstream(name: string, cfg: UpstreamConfig, listing: UpstreamListing): void {
    this.loaded.add(name);
    for (const [k, t] of this.tools) if (t.upstream === name) this.tools.delete(k);
    for (let i = this.warnings.length - 1; i >= 0; i--) {
      if (this.warnings[i]?.tool.startsWith(`${name}__`)) this.warnings.splice(i, 1);
    }
    for (const tool of listing.tools) {
      const upstreamTool = String(tool.name);
      const policy = cfg.tools[upstreamTool];
      if (policy?.hidden) continue;
      const exposed = policy?.rename ?? `${name}__${upstreamTool}`;
      const warn = (message: string) => this.warnings.push({ tool: exposed, message });
      if (!/^[A-Za-z0-9_-]+$/.test(exposed)) {
        warn(`tool name ${JSON.stringify(upstreamTool)} has characters model APIs reject; rename it in config`);
        continue;
      }
      const other = this.tools.get(exposed);
      if (other) {
        warn(`exposed name collides with ${other.upstream}/${other.upstreamTool}; rename one of them`);
        continue;
      }
      // Claude Code prefixes tools with mcp__<server>__; model APIs cap names at 64 characters.
      if (exposed.length + 'mcp__toolbus__'.length > 64) {
        warn(
          `name is ${exposed.length} characters: with a client prefix like mcp__toolbus__ it passes the 64-character cap; rename it`,
        );
      }
      const kind = resolveKind(policy, cfg, tool);
      const keyRule: KeyRule = kind === 'read' ? 'off' : (policy?.idempotency ?? 'required');
      const upstreamSchema = (tool.inputSchema as Record<string, unknown> | undefined) ?? { type: 'object' };
      const forwardKey = Boolean((upstreamSchema.properties as Record<string, unknown> | undefined)?.[KEY_PROPERTY]);
      let base = upstreamSchema;
      if (forwardKey) {
        // The key is validated by the bus's own rule; the rest of the schema validates the other arguments.
        const props = { ...(upstreamSchema.properties as Record<string, unknown>) };
        delete props[KEY_PROPERTY];
        const req = Array.isArray(upstreamSchema.required)
          ? (upstreamSchema.required as string[]).filter((r) => r !== KEY_PROPERTY)
          : undefined;
        base = { ...upstreamSchema, properties: props, ...(req ? { required: req } : {}) };
      }
      const tightened = tightenSchema(base, policy?.schema as Record<string, unknown> | undefined);
      let validate: ValidateFunction;
      try {
        // Refuses pathological schemas (remote $ref, depth, size) before compiling; cached per distinct schema.
        const compiled = compileValidator(tightened);
        validate = compiled.validate;
        for (const p of compiled.droppedPatterns)
          warn(`pattern ${JSON.stringify(p.slice(0, 80))} cannot run in linear time (RE2): it is not enforced`);
      } catch (err) {
        warn(`hidden: its input schema cannot be used (${(err as Error).message})`);
        continue;
      }
      // No `lease` key: the safe default, the whole upstream. An explicit empty list: no lease at all (for upstreams
      // that serialize their own writes).
      const lease = kind === 'write' ? (policy?.lease ?? null) : [];
      if (kind === 'write' && lease === null) {
        warn(
          `write tool with no lease configured: it locks the whole upstream "${name}"; set tools.${upstreamTool}.lease to a finer scope`,
        );
      }
      const timeoutMs = policy?.timeoutMs ?? cfg.timeoutMs;
      const definition: Record<string, unknown> = {
        ...tool,
        name: exposed,
        inputSchema: exposedSchema(tightened, keyRule, kind),
      };
      this.tools.set(exposed, {
        name: exposed,
        upstream: name,
        upstreamTool,
        kind,
        keyRule,
        lease: lease ?? [WHOLE_UPSTREAM],
        leaseIsWholeUpstream: lease === null,
        onUnknown: policy?.onUnknown ?? 'fail',
        timeoutMs,
        hardTimeoutMs: Math.round(timeoutMs * cfg.progressExtendsUpTo),
        forwardKey,
        definition,
        headerDeclarations: headerDeclarations(tool.inputSchema),
        validate,
      });
    }
    for (const toolName of Object.keys(cfg.tools)) {
      if (!listing.tools.some((t) => t.name === toolName)) {
        this.warnings.push({
          tool: `${name}__${toolName}`,
          message: 'configured, but the upstream does not offer this tool',
        });
      }
    }
  }

  removeUpstream(name: string): void {
    this.loaded.delete(name);
    for (const [k, t] of this.tools) if (t.upstream === name) this.tools.delete(k);
  }
}

/**
 * Compiles an agent's allow-list globs (`*` any run of characters, `?` one character) to one test. It runs on RE2
 * (re2js), in time linear in the name: globs may come from an identity provider's token, and `*a*a*a*...` on a
 * backtracking engine takes seconds per name.
 */
export function toolMatcher(globs: readonly string[]): (name: string) => boolean {
  const parts = globs.map((g) =>
    g
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.'),
  );
  const re = RE2JS.compile(`^(?:${parts.join('|')})$`);
  return (name) => re.matches(name);
}
