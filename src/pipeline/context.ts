// What one tool call carries through the pipeline. Built by an agent front (HTTP or stdio), read and extended by
// the stages in order; nothing in it is specific to a transport.
import type { CatalogTool } from '../catalog/catalog.js';
import type { LeaseGrant } from '../store/contract.js';
import type { ServerRequestAsker } from '../upstreams/connection.js';
import type { Permit } from './fair-queue.js';

export type ToolResult = Record<string, unknown>;

export interface AgentIdentity {
  readonly id: string;
  readonly tenant: string;
  readonly weight: number;
  /** The allow-list, compiled. */
  readonly allows: (toolName: string) => boolean;
  /** When the credential that proved this identity expires (ms since epoch); absent for non-expiring tokens. */
  readonly expiresAt?: number;
  /**
   * Names the allow-list when it can differ between two identities of one agent id (JWT agents: the token's tools
   * claim narrows it), so a tool list cached for one token is never shown for another.
   */
  readonly policyKey?: string;
}

/** What a write already holds when it reaches the lease and rate stages (see CallContext.prepared). */
export interface PreparedWrite {
  readonly grants: readonly LeaseGrant[];
  /**
   * The concurrency slot, taken without waiting, when the key was persisted `dispatched` in the same step (only for
   * an upstream with no rate cap); otherwise the rate stage admits the call and forward persists the dispatch.
   */
  readonly permit: Permit | undefined;
}

export interface CallContext {
  /** The authenticated agent (the front resolved it from the bearer token). */
  readonly agent: AgentIdentity;
  /** The name the agent asked for. */
  readonly toolName: string;
  /** Set by the resolve stage. */
  tool: CatalogTool | undefined;
  /** The arguments; after validation, without the idempotency key. */
  args: Record<string, unknown>;
  /** The agent's request `_meta` (progress token, idempotency key for programmatic clients). */
  readonly meta: Record<string, unknown> | undefined;
  /** Idempotency key, if the call carries one (set by validate). */
  key: string | undefined;
  /** Owner id of this call in the store (replica id + sequence). */
  readonly owner: string;
  /** Lease scopes this call holds, fully rendered (set by the lease stage). */
  scopes: string[];
  grants: LeaseGrant[];
  /** Fencing token of the first scope held, forwarded to the upstream. */
  fencingToken: number | undefined;
  readonly startedAt: number;
  /** Epoch ms by which the call must finish; progress may move it up to hardDeadline. */
  deadline: number;
  hardDeadline: number;
  /** Aborted when the agent cancels (notifications/cancelled, closed connection). */
  readonly signal: AbortSignal;
  /** Answers the upstream's sampling/elicitation requests made during this call, when the agent can. */
  readonly asker: ServerRequestAsker | undefined;
  /**
   * A 2026-07-28 multi round-trip retry: the agent's answers and the upstream's own requestState (toolbus's seal
   * already checked and removed by the front), forwarded with the call.
   */
  readonly input: { readonly responses?: unknown; readonly state?: unknown } | undefined;
  /** The agent's `task` parameter (2025-11-25 tasks): forwarded, so a task-required tool runs as a task. */
  readonly task: unknown;
  /** Relays upstream progress notifications to the agent, when the agent asked for progress. */
  readonly onProgress: ((params: Record<string, unknown>) => void) | undefined;
  /**
   * Set by the idempotency stage when the store claimed the key and granted every lease in one step
   * (WriteStore.beginWrite), perhaps persisting `dispatched` too: the lease stage then waits for nothing, and the
   * idempotency stage completes the key and releases these grants in one step as well.
   */
  prepared?: PreparedWrite;
  /** Run by forward right before the first byte goes upstream (idempotency persists `dispatched` here). */
  beforeSend: (() => Promise<void>) | undefined;
  /** True once the request was handed to the upstream transport. */
  dispatched: boolean;
  /** True when the call's own deadline passed while it was with the upstream. */
  timedOut: boolean;
  /** How the call ended, for audit and metrics: ok, replayed, joined, or an error category. */
  outcome: string;
}
