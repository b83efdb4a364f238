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
  /**
   * Aborted when the agent cancels (notifications/cancelled, closed connection), or by `abort` when the call's
   * deadline passes with the upstream (`timedOut` is set first, so the two read apart).
   */
  readonly signal: AbortSignal;
  /** Aborts `signal`: one controller per call, so the forward stage needs none of its own for the deadline. */
  readonly abort: (reason: Error) => void;
  /** Answers the upstream's sampling/elicitation requests made during this call, when the agent can. */
  readonly asker: ServerRequestAsker | undefined;
  /**
   * A 2026-07-28 multi round-trip retry: the agent's answers and the upstream's own requestState (toolbus's seal
   * already checked and removed by the front), forwarded with the call.
   */
  readonly input: { readonly responses?: unknown; readonly state?: unknown } | undefined;
  /** The agent's `task` parameter (2025-11-25 tasks): forwarded, so a task-required tool runs as a task. */
  readonly task: unknown;
  /** Relays the upstream's log messages during this call to the agent's call stream (see generation.ts). */
  readonly onLog: { readonly agentId: string; write(params: Record<string, unknown>): void } | undefined;
  /** Relays upstream progress notifications to the agent, when the agent asked for progress. */
  readonly onProgress: ((params: Record<string, unknown>) => void) | undefined;
  /**
   * Set by the idempotency stage when the store claimed the key and granted every lease in one step
   * (WriteStore.beginWrite), perhaps persisting `dispatched` too: the lease stage then waits for nothing, and the
   * idempotency stage completes the key and releases these grants in one step as well.
   */
  prepared?: PreparedWrite;
  /** Whether the call's bytes went upstream, and what must happen right before they do. */
  readonly dispatch: Dispatch;
  /** True when the call's own deadline passed while it was with the upstream. */
  timedOut: boolean;
  /** How the call ended, for audit and metrics: ok, replayed, joined, or an error category. */
  outcome: string;
}

/**
 * The moment a call goes upstream, as one typed object instead of hooks on the context: the idempotency stage guards
 * it (persisting `dispatched` first, and refusing when its claim was lost), the forward stage passes it and says
 * whether the bytes were written, and the stages that settle a key read the outcome.
 */
export class Dispatch {
  private guard: (() => Promise<void>) | undefined;
  private written = false;

  /** Runs `guard` right before the first byte goes upstream; a guard that throws stops the send. */
  guardWith(guard: () => Promise<void>): void {
    this.guard = guard;
  }

  async beforeSend(): Promise<void> {
    await this.guard?.();
  }

  /** The request was handed to the upstream transport. */
  markSent(): void {
    this.written = true;
  }

  /** The request was refused before the upstream did anything with it: for the key, as if never sent. */
  markNotDone(): void {
    this.written = false;
  }

  /** True once the request was handed to the upstream, unless it was then refused untouched. */
  get sent(): boolean {
    return this.written;
  }
}
