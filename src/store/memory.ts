// The in-process state store: everything in Maps, nothing survives the process. For tests and throwaway runs.
// It follows the same rules as the durable stores (key-rules.ts, gcra.ts, local-leases.ts).
import {
  type AuditEntry,
  type BeginWriteOutcome,
  type BeginWriteRequest,
  type ClaimOutcome,
  type ClaimRequest,
  type FinishWriteRequest,
  type KeyRecord,
  type LeaseGrant,
  type StateStore,
  StoreUnavailable,
  type TakeTokenResult,
} from './contract.js';
import { type BucketState, bucketIdleAt, pauseBucketState, takeFromBucket } from './gcra.js';
import {
  applyTransition,
  decideClaim,
  type KeyTransition,
  rowGoneAt,
  type StoredKey,
  settles,
  viewKey,
} from './key-rules.js';
import { KeyTransitions } from './key-transitions.js';
import { type LeaseRow, LocalLeases } from './local-leases.js';
import { beginWriteLocally, finishWriteLocally, type KeyRows } from './local-writes.js';
import { ScopeSignals, waitUntilSettled } from './scope-signals.js';
import { MemoryVault } from './vault-memory.js';

/** The audit trail keeps this many newest entries. */
export const MEMORY_AUDIT_CAP = 10_000;
const SWEEP_EVERY_MS = 60_000;
/** A bucket idle this long after its last admission is forgotten (it is then as good as new anyway). */
const BUCKET_IDLE_MS = 60_000;
/** A query without a limit returns at most this many entries. */
export const DEFAULT_AUDIT_LIMIT = 1000;

export class MemoryStore extends KeyTransitions implements StateStore {
  readonly kind = 'memory' as const;
  readonly vault = new MemoryVault();
  private readonly keys = new Map<string, StoredKey>();
  private readonly leaseRows = new Map<string, LeaseRow>();
  private readonly buckets = new Map<string, BucketState>();
  private audit: AuditEntry[] = [];
  private lastToken = 0;
  private closed = false;
  private readonly signals = new ScopeSignals();
  private readonly leases: LocalLeases;
  private readonly sweeper: NodeJS.Timeout;
  private readonly keyRows: KeyRows = {
    get: (scope) => this.keys.get(scope),
    put: (scope, row) => this.keys.set(scope, row),
  };

  constructor() {
    super();
    this.leases = new LocalLeases({
      get: (scope) => this.leaseRows.get(scope),
      grant: (scope, holder, expiresAt) => {
        const token = ++this.lastToken;
        this.leaseRows.set(scope, { holder, token, expiresAt });
        return token;
      },
      put: (scope, row) => this.leaseRows.set(scope, row),
      remove: (scope) => this.leaseRows.delete(scope),
      all: () => [...this.leaseRows.entries()],
    });
    this.sweeper = setInterval(() => this.sweep(), SWEEP_EVERY_MS);
    this.sweeper.unref();
  }

  async claimKey(req: ClaimRequest): Promise<ClaimOutcome> {
    this.assertOpen();
    const { outcome, write } = decideClaim(this.keys.get(req.scope), req, Date.now());
    if (write) this.keys.set(req.scope, write);
    return outcome;
  }

  async beginWrite(req: BeginWriteRequest): Promise<BeginWriteOutcome> {
    this.assertOpen();
    return beginWriteLocally(req, Date.now(), this.keyRows, this.leases);
  }

  async finishWrite(req: FinishWriteRequest): Promise<boolean> {
    this.assertOpen();
    const done = finishWriteLocally(req, Date.now(), this.keyRows, this.leases);
    if (done) this.signals.notify(req.scope);
    return done;
  }

  async getKey(scope: string): Promise<KeyRecord | null> {
    this.assertOpen();
    return viewKey(this.keys.get(scope), Date.now());
  }

  waitForKey(scope: string, timeoutMs: number, signal?: AbortSignal): Promise<KeyRecord | null> {
    return waitUntilSettled({
      scope,
      timeoutMs,
      signal,
      signals: this.signals,
      read: async () => {
        this.assertOpen();
        const now = Date.now();
        return { record: viewKey(this.keys.get(scope), now), now };
      },
    });
  }

  acquireLease(
    scope: string,
    holder: string,
    opts: { ttlMs: number; waitMs: number; signal?: AbortSignal },
  ): Promise<LeaseGrant> {
    if (this.closed) return Promise.reject(closedError());
    return this.leases.acquire(scope, holder, opts);
  }

  async renewLease(grant: LeaseGrant, ttlMs: number): Promise<boolean> {
    this.assertOpen();
    return this.leases.renew(grant, ttlMs);
  }

  async releaseLease(grant: LeaseGrant, blockForMs?: number): Promise<void> {
    this.assertOpen();
    this.leases.release(grant, blockForMs);
  }

  async listLeases(): Promise<{ scope: string; holder: string; token: number; expiresAt: number; waiters: number }[]> {
    this.assertOpen();
    return this.leases.list();
  }

  async takeToken(bucket: string, perSecond: number, burst: number): Promise<TakeTokenResult> {
    this.assertOpen();
    const { result, next } = takeFromBucket(this.buckets.get(bucket), Date.now(), perSecond, burst);
    if (next) this.buckets.set(bucket, next);
    return result;
  }

  async pauseBucket(bucket: string, ms: number): Promise<void> {
    this.assertOpen();
    this.buckets.set(bucket, pauseBucketState(this.buckets.get(bucket), Date.now(), ms));
  }

  async appendAudit(entry: AuditEntry): Promise<void> {
    this.assertOpen();
    this.audit.push({ ...entry, scopes: [...entry.scopes] });
    if (this.audit.length > MEMORY_AUDIT_CAP * 1.1) this.audit = this.audit.slice(-MEMORY_AUDIT_CAP);
  }

  /** Oldest first (newest last); with a limit, the newest `limit` matching entries. */
  async queryAudit(q: { sinceMs?: number; tool?: string; limit?: number }): Promise<AuditEntry[]> {
    this.assertOpen();
    const limit = q.limit ?? DEFAULT_AUDIT_LIMIT;
    const out: AuditEntry[] = [];
    for (let i = this.audit.length - 1; i >= 0 && out.length < limit; i--) {
      const e = this.audit[i]!;
      if (q.sinceMs !== undefined && e.at < q.sinceMs) continue;
      if (q.tool !== undefined && e.tool !== q.tool) continue;
      out.push({ ...e, scopes: [...e.scopes] });
    }
    return out.reverse();
  }

  async ping(): Promise<void> {
    this.assertOpen();
  }

  /** Nothing outlives the process, so there is nothing to settle. */
  async settleAbandoned(_unknownTtlMs: number): Promise<{ released: number; unknown: number }> {
    return { released: 0, unknown: 0 };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweeper);
    this.leases.close(closedError());
    this.signals.notifyAll();
  }

  protected override transition(scope: string, owner: string, fence: number, t: KeyTransition): Promise<boolean> {
    this.assertOpen();
    const next = applyTransition(this.keys.get(scope), owner, fence, t, Date.now());
    if (next === null) return Promise.resolve(false);
    if (next === 'delete') this.keys.delete(scope);
    else this.keys.set(scope, next);
    if (settles(t)) this.signals.notify(scope);
    return Promise.resolve(true);
  }

  private sweep(): void {
    const now = Date.now();
    for (const [scope, row] of this.keys) if (rowGoneAt(row) <= now) this.keys.delete(scope);
    for (const [scope, row] of this.leaseRows) if (row.expiresAt <= now) this.leaseRows.delete(scope);
    for (const [bucket, state] of this.buckets)
      if (bucketIdleAt(state) + BUCKET_IDLE_MS <= now) this.buckets.delete(bucket);
  }

  private assertOpen(): void {
    if (this.closed) throw closedError();
  }
}

function closedError(): StoreUnavailable {
  return new StoreUnavailable('the state store is closed');
}
