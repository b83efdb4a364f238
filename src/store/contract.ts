// The state-store contract: idempotency records, write leases, rate buckets and the audit trail.
// It speaks the domain only (no driver types), so memory, SQLite and Redis implement the same promises and one
// test suite (test/contract/store-contract.ts) holds every implementation to them.
//
// Time: every expiry is judged by the store's own clock (Date.now() in-process; Redis TIME in Redis), never by a
// caller's, so several replicas agree on what has expired.

export type KeyState = 'claimed' | 'dispatched' | 'completed' | 'unknown';

export interface KeyRecord {
  state: KeyState;
  /** SHA-256 of the canonical arguments without the key. */
  fingerprint: string;
  /** Who owns the record now (a replica id plus a call id); meaningful for claimed/dispatched. */
  owner: string;
  /** Increases on every change of ownership; every transition is a compare-and-set on (owner, fence). */
  fence: number;
  /** The stored tool result, as the exact JSON text sent to the first caller (completed only). */
  result?: string;
  /** Store-clock time (ms) at which the record expires: claims/dispatches are renewed by their owner. */
  expiresAt: number;
}

export type ClaimOutcome =
  /** The caller now owns the key: it was absent/expired, a dead owner's claim, or an `unknown` re-run was allowed. */
  | { kind: 'claimed'; fence: number; tookOver: boolean }
  /** Somebody else's record: the caller decides (mismatch, join, replay, outcome_unknown). */
  | { kind: 'existing'; record: KeyRecord };

export interface ClaimRequest {
  /** `(tenant, exposed tool name, key)` joined by the caller into one opaque string. */
  scope: string;
  fingerprint: string;
  owner: string;
  claimTtlMs: number;
  /** Tool is `onUnknown: retry`: an `unknown` record with the same fingerprint is taken over instead of returned. */
  retryUnknown: boolean;
  /**
   * How long the record lives as `unknown` if its owner dies after dispatch (its expiry turns it unknown); pass
   * `idempotency.ttlMs`. Default 24 h.
   */
  unknownTtlMs?: number;
}

export interface KeyStore {
  /**
   * Atomically: absent or expired → `claimed` by `owner`. A `claimed` record past its expiry (owner died before
   * sending) is taken over. A `dispatched` record past its expiry becomes `unknown` (and is returned as such, or
   * taken over when `retryUnknown` and fingerprints match). One winner under any concurrency.
   */
  claimKey(req: ClaimRequest): Promise<ClaimOutcome>;
  /** claimed → dispatched, persisted before the first byte goes upstream. */
  markDispatched(scope: string, owner: string, fence: number, ttlMs: number): Promise<boolean>;
  /** Extends a claimed/dispatched record's expiry while its owner is alive. */
  renewKey(scope: string, owner: string, fence: number, ttlMs: number): Promise<boolean>;
  /** claimed|dispatched → completed with the result; lives `ttlMs`. */
  completeKey(scope: string, owner: string, fence: number, result: string, ttlMs: number): Promise<boolean>;
  /** dispatched → unknown (outcome lost); lives `ttlMs`. */
  markUnknown(scope: string, owner: string, fence: number, ttlMs: number): Promise<boolean>;
  /** Deletes a claim that never went upstream, so the retry runs normally. */
  releaseKey(scope: string, owner: string, fence: number): Promise<boolean>;
  getKey(scope: string): Promise<KeyRecord | null>;
  /**
   * Resolves with the record once it is no longer claimed/dispatched by a live owner (completed, unknown, deleted →
   * null), or with its latest state when `timeoutMs` passes or `signal` aborts. Woken by the owner's transition
   * (in-process event or pub/sub), not by polling alone.
   */
  waitForKey(scope: string, timeoutMs: number, signal?: AbortSignal): Promise<KeyRecord | null>;
}

/**
 * A keyed, leased write done in as few store operations as the store allows: `beginWrite` claims the key, takes
 * every lease scope that is free now and (when asked) persists `dispatched`, in one transaction or script;
 * `finishWrite` completes the key and releases the leases in one. A write whose scopes are busy falls back to
 * acquireLease (waiting its turn) and markDispatched, so the combined operations never change what is promised.
 */
export interface BeginWriteRequest extends ClaimRequest {
  /** Lease scopes (sorted, distinct), granted to `owner` only if every one is free with nobody waiting: all or none. */
  leases: readonly string[];
  leaseTtlMs: number;
  /**
   * Persist `dispatched` too (expiring after `claimTtlMs`), when every lease was granted: the caller sends upstream
   * right away. False leaves the key `claimed`.
   */
  dispatch: boolean;
}

export type BeginWriteOutcome =
  | { kind: 'existing'; record: KeyRecord }
  | {
      kind: 'claimed';
      fence: number;
      tookOver: boolean;
      /** The leases granted, in the order asked; null when a scope was busy (none was taken). */
      grants: LeaseGrant[] | null;
      /** True when the key was persisted `dispatched` in the same step. */
      dispatched: boolean;
    };

export interface FinishWriteRequest {
  scope: string;
  owner: string;
  fence: number;
  result: string;
  ttlMs: number;
  /** Released in the same step, with no lock-delay (a call that finished normally). */
  grants: readonly LeaseGrant[];
}

export interface WriteStore {
  beginWrite(req: BeginWriteRequest): Promise<BeginWriteOutcome>;
  /** claimed|dispatched → completed (a compare-and-set on owner and fence) and every grant released; true if completed. */
  finishWrite(req: FinishWriteRequest): Promise<boolean>;
}

export interface LeaseGrant {
  scope: string;
  holder: string;
  /** Fencing token: strictly increasing per scope across grants, restarts and replicas. */
  token: number;
}

export interface LeaseStore {
  /**
   * Waits its turn (FIFO per scope) and grants the lease for `ttlMs`. Rejects with LeaseWaitTimeout after `waitMs`,
   * or with the signal's reason when aborted; in both cases the waiter leaves the queue.
   */
  acquireLease(
    scope: string,
    holder: string,
    opts: { ttlMs: number; waitMs: number; signal?: AbortSignal },
  ): Promise<LeaseGrant>;
  renewLease(grant: LeaseGrant, ttlMs: number): Promise<boolean>;
  /** Releases; with `blockForMs` > 0 the scope stays blocked that long (lock-delay after a timed-out holder). */
  releaseLease(grant: LeaseGrant, blockForMs?: number): Promise<void>;
  /** Leases held now and their waiters, for the dashboard. */
  listLeases(): Promise<{ scope: string; holder: string; token: number; expiresAt: number; waiters: number }[]>;
}

export class LeaseWaitTimeout extends Error {
  constructor(
    readonly scope: string,
    /** A fair guess of when the scope frees up, for `retryAfterMs`. */
    readonly retryAfterMs: number,
  ) {
    super(`waited too long for lease ${scope}`);
    this.name = 'LeaseWaitTimeout';
  }
}

export type TakeTokenResult = { ok: true } | { ok: false; retryAfterMs: number };

export interface RateStore {
  /**
   * GCRA on the store clock: admits one call for `bucket` if the budget `burst + perSecond·T` allows it now;
   * otherwise consumes nothing and says how long until one would be admitted.
   */
  takeToken(bucket: string, perSecond: number, burst: number): Promise<TakeTokenResult>;
  /** Upstream pushback (429 / Retry-After): admit nothing in `bucket` for `ms`. */
  pauseBucket(bucket: string, ms: number): Promise<void>;
}

export interface AuditEntry {
  at: number;
  agent: string;
  tenant: string;
  tool: string;
  key: string | null;
  scopes: string[];
  fencingToken: number | null;
  /** `ok`, `replayed`, `joined`, or an error category. */
  outcome: string;
  durationMs: number;
}

export interface AuditStore {
  /**
   * Records an entry. Stores may batch entries for a few milliseconds (one transaction or round trip per batch):
   * the audit trail is a record for people, not a guarantee, so a crash may lose the last batch. A query sees every
   * entry appended before it.
   */
  appendAudit(entry: AuditEntry): Promise<void>;
  queryAudit(q: { sinceMs?: number; tool?: string; limit?: number }): Promise<AuditEntry[]>;
}

export interface StateStore extends KeyStore, WriteStore, LeaseStore, RateStore, AuditStore {
  readonly kind: 'memory' | 'sqlite' | 'redis';
  /** Opaque sealed blobs and named locks (upstream OAuth tokens: see src/upstreams/oauth/). */
  readonly vault: VaultStore;
  /** Requests sent to a remote store so far (one per command or pipeline); undefined for in-process stores. */
  readonly roundTrips?: number;
  /** Throws StoreUnavailable when the backing store cannot be reached. */
  ping(): Promise<void>;
  /**
   * For a store owned by this process alone (SQLite holds an exclusive lock on its file): settle the previous
   * incarnation's records at once (claimed → deleted, dispatched → unknown) instead of waiting for expiry.
   * Returns how many records were settled. Stores shared by replicas do nothing.
   */
  settleAbandoned(unknownTtlMs: number): Promise<{ released: number; unknown: number }>;
  close(): Promise<void>;
}

/** Thrown by any store method when the backing store is unreachable; the pipeline maps it to store_unavailable. */
export class StoreUnavailable extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreUnavailable';
  }
}

// ---- Vault: opaque blobs by name with compare-and-set, and named locks with a TTL ------------------------------
// Used by upstream OAuth (src/upstreams/oauth/): the blob is already encrypted by its caller, the store never sees a
// token in clear. Implementations live in vault-memory.ts, vault-sqlite.ts and vault-redis.ts.

export interface VaultBlob {
  value: string;
  /** Increases on every write; 0 never occurs (it means "absent" to putBlob). */
  version: number;
}

export interface VaultStore {
  getBlob(name: string): Promise<VaultBlob | null>;
  /**
   * Writes `value` if the stored version is still `expectedVersion` (0: only if absent). Returns the new version, or
   * null when somebody else wrote in between (the caller re-reads).
   */
  putBlob(name: string, value: string, expectedVersion: number): Promise<number | null>;
  /** Deletes whatever is stored under `name`. */
  deleteBlob(name: string): Promise<void>;
  /** Takes the named lock for `ttlMs` if free or expired (store clock); true when `holder` now has it. */
  tryLock(name: string, holder: string, ttlMs: number): Promise<boolean>;
  /** Frees the lock if `holder` still has it. */
  unlock(name: string, holder: string): Promise<void>;
}
