// The configuration contract: a strict zod schema (unknown keys are errors) with every default visible here.
// Strings may hold `${env:NAME}` / `${file:PATH}` references; they are resolved by load.ts, not here.
import { z } from 'zod';
import { UpstreamOAuthSchema } from '../upstreams/oauth/schema.js';
import { AuthSchema } from './auth-schema.js';

const toolName = /^[A-Za-z0-9_-]+$/;
// An upstream name is the prefix of `{upstream}__{tool}`: it may not hold `__` nor begin or end with `_`, or an
// allow-list glob like `h__*` would also grant an upstream named `h__admin`, and a name could be split two ways.
const upstreamName = /^[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*$/;
const positiveInt = z.number().int().positive();
const nonNegativeInt = z.number().int().nonnegative();

export const RateLimitSchema = z.strictObject({
  perSecond: z.number().positive(),
  burst: positiveInt.default(1),
});

export const ToolPolicySchema = z.strictObject({
  /** read | write; when absent: readOnlyHint (if the upstream is trusted) or else write. */
  kind: z.enum(['read', 'write']).optional(),
  idempotency: z.enum(['required', 'optional', 'off']).optional(),
  /** Scope templates over the validated arguments, e.g. "ticket:{/ticket_id}". */
  lease: z.array(z.string().min(1)).optional(),
  /** JSON Schema merged over the upstream's inputSchema (stricter rules only). */
  schema: z.record(z.string(), z.unknown()).optional(),
  /** Exposed name instead of `{upstream}__{tool}`. */
  rename: z.string().regex(toolName).max(128).optional(),
  onUnknown: z.enum(['fail', 'retry']).default('fail'),
  timeoutMs: positiveInt.optional(),
  /** Hide the tool from every agent. */
  hidden: z.boolean().default(false),
});

const upstreamCommon = {
  rateLimit: RateLimitSchema.optional(),
  maxConcurrency: positiveInt.default(16),
  timeoutMs: positiveInt.default(60_000),
  /** Progress notifications extend a deadline, never past timeoutMs × this factor. */
  progressExtendsUpTo: z.number().min(1).default(3),
  trustAnnotations: z.boolean().default(false),
  queueWaitMs: positiveInt.default(10_000),
  maxQueuePerAgent: positiveInt.default(1000),
  leaseWaitMs: positiveInt.default(10_000),
  connectTimeoutMs: positiveInt.default(10_000),
  circuitBreaker: z
    .strictObject({
      failures: positiveInt.default(5),
      openMs: positiveInt.default(5_000),
    })
    .default({ failures: 5, openMs: 5_000 }),
  restart: z
    .strictObject({
      initialDelayMs: positiveInt.default(200),
      maxDelayMs: positiveInt.default(10_000),
    })
    .default({ initialDelayMs: 200, maxDelayMs: 10_000 }),
  tools: z.record(z.string(), ToolPolicySchema).default({}),
  /** Roots offered to the upstream (roots/list). A shared upstream never gets an agent's roots. */
  roots: z.array(z.strictObject({ uri: z.string().min(1), name: z.string().optional() })).optional(),
  /**
   * Who shares one upstream session (for stdio: one process; for HTTP: one MCP session): everyone (`shared`), each
   * agent id (`per-agent`) or each tenant (`per-tenant`). See docs/sharing.md.
   */
  sharing: z.enum(['shared', 'per-agent', 'per-tenant']).default('shared'),
  /**
   * The protocol revisions toolbus speaks to this upstream (docs/protocol.md). `auto`: HTTP upstreams are asked for
   * both (`server/discover`, then `initialize`) and each agent request goes in the agent's own revision when the
   * upstream has it; a stdio process speaks one revision: 2025-11-25 when it accepts `initialize`, else 2026-07-28.
   */
  protocol: z.enum(['auto', '2025-11-25', '2026-07-28']).default('auto'),
  /** Sessions alive at once per upstream and replica (per-agent and per-tenant only; the listing session aside). */
  maxSessions: positiveInt.default(32),
  /** A session without calls for this long is closed (per-agent and per-tenant only). */
  sessionIdleMs: positiveInt.default(300_000),
};

export const StdioUpstreamSchema = z.strictObject({
  command: z.string().min(1),
  args: z.array(z.string()).default([]),
  env: z.record(z.string(), z.string()).default({}),
  cwd: z.string().optional(),
  ...upstreamCommon,
});

export const HttpUpstreamSchema = z.strictObject({
  url: z.url(),
  headers: z.record(z.string(), z.string()).default({}),
  /** OAuth 2.1 for a remote upstream (DESIGN.md section 15; src/upstreams/oauth/). */
  oauth: UpstreamOAuthSchema.optional(),
  ...upstreamCommon,
});

export const UpstreamSchema = z.union([StdioUpstreamSchema, HttpUpstreamSchema]);

export const AgentSchema = z
  .strictObject({
    id: z.string().regex(/^[A-Za-z0-9_.-]+$/),
    token: z.string().min(1).optional(),
    /** Hex SHA-256 of the token, so the token itself need not be stored in config. */
    tokenSha256: z
      .string()
      .regex(/^[0-9a-fA-F]{64}$/)
      .optional(),
    tenant: z.string().min(1).default('default'),
    tools: z.array(z.string().min(1)).default(['*']),
    weight: z.number().positive().default(1),
  })
  .refine((a) => (a.token === undefined) !== (a.tokenSha256 === undefined), {
    message: 'an agent needs exactly one of token or tokenSha256',
  });

export const StoreSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('memory') }),
  z.strictObject({ kind: z.literal('sqlite'), path: z.string().min(1).default('.toolbus/state.db') }),
  z.strictObject({
    kind: z.literal('redis'),
    url: z.string().min(1).default('redis://127.0.0.1:6379/0'),
    prefix: z.string().default('toolbus:'),
  }),
]);

/**
 * Caps on what one request or one upstream message may cost (DESIGN.md section 16). Each has a default that no
 * ordinary client comes near; every cap answers with a structured error for that request alone.
 */
export const LimitsSchema = z.strictObject({
  /** Nesting depth of a JSON-RPC request body (objects and arrays). */
  maxJsonDepth: positiveInt.default(64),
  /** A JSON-RPC id is an integer or a string of at most this many characters. */
  maxIdLength: positiveInt.default(256),
  /** Requests in one JSON-RPC batch. */
  maxBatch: positiveInt.default(64),
  /** Bytes of the response to one HTTP request (a batch counts as one). */
  maxResponseBytes: positiveInt.default(16 * 1024 * 1024),
  /** Tool, prompt and resource names longer than this are not_found before any lookup or storage. */
  maxNameLength: positiveInt.default(128),
  /** Nesting depth of a tool call's arguments. */
  maxArgumentDepth: positiveInt.default(32),
  /** Bytes of a tool call's arguments as JSON. */
  maxArgumentBytes: positiveInt.default(1024 * 1024),
  /** Bytes of one message from an upstream; a larger result fails that call alone. */
  maxUpstreamMessageBytes: positiveInt.default(16 * 1024 * 1024),
  /** Stateful sessions per agent; beyond it the least recently used idle one is closed, else the request is refused. */
  maxSessionsPerAgent: positiveInt.default(64),
  /** Open TCP connections to the agent front (half-open ones included). */
  maxConnections: positiveInt.default(4096),
  /** A connection must send its request headers within this time. */
  headersTimeoutMs: positiveInt.default(10_000),
  /** Refreshes of one upstream's catalog per second, however many list_changed notifications it sends. */
  catalogRefreshPerSecond: z.number().positive().default(4),
});

const limitDefaults = LimitsSchema.parse({});

export const ConfigSchema = z.strictObject({
  server: z
    .strictObject({
      host: z.string().default('127.0.0.1'),
      port: nonNegativeInt.max(65535).default(7410),
      /** Host header names accepted (DNS-rebinding guard); loopback names always are. */
      allowedHosts: z.array(z.string()).default([]),
      /** Origin values accepted; requests without Origin are accepted (non-browser clients). */
      allowedOrigins: z.array(z.string()).default([]),
      maxBodyBytes: positiveInt.default(4 * 1024 * 1024),
      dashboard: z.boolean().default(true),
      /** Idle stateful sessions (no request, no open stream) are closed after this long. */
      sessionIdleMs: positiveInt.default(5 * 60_000),
      /** Bearer token for the dashboard API; required when the bus binds a non-loopback address. */
      adminToken: z.string().min(16).optional(),
      /** On SIGTERM, calls in flight get this long to finish before they are cut (and their outcome recorded). */
      shutdownGraceMs: nonNegativeInt.default(10_000),
    })
    .default({
      host: '127.0.0.1',
      port: 7410,
      allowedHosts: [],
      allowedOrigins: [],
      maxBodyBytes: 4 * 1024 * 1024,
      dashboard: true,
      sessionIdleMs: 5 * 60_000,
      shutdownGraceMs: 10_000,
    }),
  limits: LimitsSchema.default(limitDefaults),
  store: StoreSchema.default({ kind: 'sqlite', path: '.toolbus/state.db' }),
  /** What reads do while the store is unreachable: keep flowing (default) or fail closed too. */
  readsWhenStoreDown: z.enum(['allow', 'deny']).default('allow'),
  idempotency: z
    .strictObject({
      ttlMs: positiveInt.default(24 * 3600_000),
      joinTimeoutMs: positiveInt.default(2_000),
      claimTtlMs: positiveInt.default(30_000),
    })
    .default({ ttlMs: 24 * 3600_000, joinTimeoutMs: 2_000, claimTtlMs: 30_000 }),
  leases: z
    .strictObject({
      ttlMs: positiveInt.default(30_000),
      lockDelayMs: nonNegativeInt.default(1_000),
    })
    .default({ ttlMs: 30_000, lockDelayMs: 1_000 }),
  logging: z
    .strictObject({
      level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    })
    .default({ level: 'info' }),
  agents: z.array(AgentSchema).default([]),
  /** JWT access tokens (OIDC), toolbus-signed short-lived tokens, per-agent policy: see auth-schema.ts. */
  auth: AuthSchema.default({ agents: {}, groups: {} }),
  upstreams: z.record(
    z.string().regex(upstreamName, 'an upstream name is letters, digits and "-", with single "_" between them'),
    UpstreamSchema,
  ),
});

export type Config = z.infer<typeof ConfigSchema>;
export type UpstreamConfig = z.infer<typeof UpstreamSchema>;
export type StdioUpstreamConfig = z.infer<typeof StdioUpstreamSchema>;
export type HttpUpstreamConfig = z.infer<typeof HttpUpstreamSchema>;
export type Limits = z.infer<typeof LimitsSchema>;
export type AgentConfig = z.infer<typeof AgentSchema>;
export type ToolPolicy = z.infer<typeof ToolPolicySchema>;
export type StoreConfig = z.infer<typeof StoreSchema>;

export function isStdioUpstream(u: UpstreamConfig): u is StdioUpstreamConfig {
  return 'command' in u;
}
