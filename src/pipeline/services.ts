// What the stages need from the rest of the bus, as narrow interfaces, so stages stay small and testable.
import type { Logger } from 'pino';
import type { Catalog } from '../catalog/catalog.js';
import type { Config } from '../config/schema.js';
import type { Metrics } from '../observe/metrics.js';
import type { StateStore } from '../store/contract.js';
import type { CircuitBreaker } from '../upstreams/circuit-breaker.js';
import type { UpstreamConnection } from '../upstreams/connection.js';
import type { SharingMode, UpstreamSession } from '../upstreams/upstream-unit.js';
import type { AgentIdentity } from './context.js';
import type { AdmissionQueue } from './fair-queue.js';

/** One upstream as the stages see it (built by upstreams/upstream-unit.ts). */
export interface UpstreamRuntime {
  readonly name: string;
  /** The shared connection, or in per-agent/per-tenant mode the listing session (never used for tool calls). */
  readonly connection: UpstreamConnection;
  readonly queue: AdmissionQueue;
  /** The breaker of `connection`; each per-agent/per-tenant session has its own. */
  readonly breaker: CircuitBreaker;
  readonly leaseWaitMs: number;
  readonly sharing: SharingMode;
  /** The session a call of this agent goes over (opened on first use; waits until waitUntil while all are busy). */
  sessionFor(agent: AgentIdentity, opts: { waitUntil: number; signal?: AbortSignal }): Promise<UpstreamSession>;
}

export interface PipelineServices {
  readonly config: () => Config;
  readonly catalog: Catalog;
  readonly store: StateStore;
  readonly upstream: (name: string) => UpstreamRuntime | undefined;
  readonly isAgentActive: (agentId: string) => boolean;
  /** False once the store failed a ping or an operation, until a ping succeeds again. */
  readonly storeHealthy: () => boolean;
  readonly metrics: Metrics;
  readonly logger: Logger;
}
