// What the stages need from the rest of the bus, as narrow interfaces, so stages stay small and testable.
import type { Logger } from 'pino';
import type { Catalog } from '../catalog/catalog.js';
import type { Config } from '../config/schema.js';
import type { Metrics } from '../observe/metrics.js';
import type { StateStore } from '../store/contract.js';
import type { CircuitBreaker } from '../upstreams/circuit-breaker.js';
import type { UpstreamConnection } from '../upstreams/connection.js';
import type { AdmissionQueue } from './fair-queue.js';

export interface UpstreamRuntime {
  readonly name: string;
  readonly connection: UpstreamConnection;
  readonly queue: AdmissionQueue;
  readonly breaker: CircuitBreaker;
  readonly leaseWaitMs: number;
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
