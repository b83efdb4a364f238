// The shared state store: several bus replicas on one Redis (ioredis). Every decision is one Lua script
// (redis-scripts.ts) judged by Redis' clock; waiting is woken by pub/sub on a dedicated subscriber connection, with a
// slow poll as a safety net for a missed message. Made for a single Redis (or Sentinel), not Redis Cluster: the
// lease script touches several keys that Cluster could place on different nodes.
//
// When Redis is unreachable, every method rejects within about a second with StoreUnavailable (no offline queue, a
// command timeout), and the client reconnects by itself when Redis is back.
//
// This file holds the rules for keys, combined writes and rate buckets; the connection, its scripts and pub/sub are
// redis-link.ts, leases redis-leases.ts, the audit trail redis-audit.ts and the vault vault-redis.ts.
import type {
  AuditEntry,
  BeginWriteOutcome,
  BeginWriteRequest,
  ClaimOutcome,
  ClaimRequest,
  FinishWriteRequest,
  KeyRecord,
  KeyState,
  LeaseGrant,
  StateStore,
  TakeTokenResult,
} from './contract.js';
import { CLAIM_LINGER_MS, DEFAULT_UNKNOWN_TTL_MS, type KeyTransition, type StoredKey, viewKey } from './key-rules.js';
import { RedisAuditTrail } from './redis-audit.js';
import { RedisLeases, TOKEN_COUNTER_TTL_MS } from './redis-leases.js';
import { closedError, ms, RedisLink } from './redis-link.js';
import { BEGIN_WRITE, FINISH_WRITE, KEY_CLAIM, KEY_GET, KEY_MOVE, RATE_PAUSE, RATE_TAKE } from './redis-scripts.js';
import { waitUntilSettled } from './scope-signals.js';
import { RedisVault } from './vault-redis.js';

/** Joined callers re-read at least this often, in case a pub/sub message was lost (e.g. during a reconnect). */
const KEY_POLL_MS = 1000;
/** A key record as the scripts return it: state, fingerprint, owner, fence, expiresAt from `r[at]` on. */
function keyFields(r: readonly unknown[], at: number): KeyRecord {
  return {
    state: r[at] as KeyState,
    fingerprint: String(r[at + 1]),
    owner: String(r[at + 2]),
    fence: Number(r[at + 3]),
    expiresAt: Number(r[at + 4]),
  };
}

/** {'existing', state, fingerprint, owner, fence, expiresAt, result|nil} → the record. */
function existingRecord(r: unknown[]): KeyRecord {
  const record = keyFields(r, 1);
  if (typeof r[6] === 'string') record.result = r[6];
  return record;
}

export interface RedisStoreOptions {
  url: string;
  prefix: string;
  replicaId: string;
}

export async function openRedisStore(opts: RedisStoreOptions): Promise<RedisStore> {
  const store = new RedisStore(opts);
  await store.connect();
  return store;
}

export class RedisStore implements StateStore {
  readonly kind = 'redis' as const;
  private readonly link: RedisLink;
  private readonly leases: RedisLeases;
  private readonly audit: RedisAuditTrail;
  /** When begin-write should next refresh the lease index's TTL (a day long; refreshed once a minute). */
  private indexTtlAt = 0;
  readonly vault: RedisVault;

  constructor(opts: RedisStoreOptions) {
    this.link = new RedisLink(opts.url, opts.prefix);
    this.leases = new RedisLeases(this.link, opts.replicaId);
    this.vault = new RedisVault(this.link.client, opts.prefix);
    this.audit = new RedisAuditTrail(this.link.client, this.link.keys.audit(), (fn) => this.link.command(fn, true));
  }

  /** Round trips to Redis so far (a metric). */
  get roundTrips(): number {
    return this.link.roundTrips;
  }

  /** Connects, waiting at most about a second: a bus may start while Redis is down and serve reads meanwhile. */
  connect(): Promise<void> {
    return this.link.connect();
  }

  async claimKey(req: ClaimRequest): Promise<ClaimOutcome> {
    const r = (await this.link.eval(
      KEY_CLAIM,
      [this.link.keys.key(req.scope)],
      [
        req.fingerprint,
        req.owner,
        ms(req.claimTtlMs),
        req.retryUnknown ? '1' : '0',
        ms(req.unknownTtlMs ?? DEFAULT_UNKNOWN_TTL_MS),
        CLAIM_LINGER_MS,
      ],
    )) as [string, ...unknown[]];
    if (r[0] === 'claimed') return { kind: 'claimed', fence: Number(r[1]), tookOver: r[2] === 1 };
    return { kind: 'existing', record: existingRecord(r) };
  }

  async beginWrite(req: BeginWriteRequest): Promise<BeginWriteOutcome> {
    const keys = [this.link.keys.key(req.scope), this.link.keys.tokenCounter(), this.link.keys.leaseIndex()];
    for (const scope of req.leases) keys.push(this.link.keys.lease(scope), this.link.keys.leaseQueue(scope));
    const r = (await this.link.eval(BEGIN_WRITE, keys, [
      req.fingerprint,
      req.owner,
      ms(req.claimTtlMs),
      req.retryUnknown ? '1' : '0',
      ms(req.unknownTtlMs ?? DEFAULT_UNKNOWN_TTL_MS),
      CLAIM_LINGER_MS,
      ms(req.leaseTtlMs),
      req.dispatch ? '1' : '0',
      TOKEN_COUNTER_TTL_MS,
      this.indexTtlDue() ? '1' : '0',
      ...req.leases,
    ])) as [string, ...unknown[]];
    if (r[0] !== 'claimed') return { kind: 'existing', record: existingRecord(r) };
    const grants =
      r[3] === 1 ? req.leases.map((scope, i) => ({ scope, holder: req.owner, token: Number(r[5 + i]) })) : null;
    return { kind: 'claimed', fence: Number(r[1]), tookOver: r[2] === 1, grants, dispatched: r[4] === 1 };
  }

  async finishWrite(req: FinishWriteRequest): Promise<boolean> {
    // Audit entries waiting to be sent ride along: a steady stream of writes needs no round trip for its audit.
    const audit = this.audit.takeForRide();
    const keys = [this.link.keys.key(req.scope), this.link.keys.leaseIndex(), this.audit.key];
    const args: (string | number)[] = [
      req.owner,
      req.fence,
      req.result,
      ms(req.ttlMs),
      this.link.keyChannel,
      req.scope,
      this.link.leaseChannel,
      audit?.json ?? '',
      audit?.maxItems ?? 0,
      audit?.refreshTtl ? audit.ttlMs : 0,
    ];
    for (const g of req.grants) {
      keys.push(this.link.keys.lease(g.scope), this.link.keys.leaseQueue(g.scope));
      args.push(String(g.token), g.scope);
    }
    let r: [number, ...string[]];
    try {
      r = (await this.link.eval(FINISH_WRITE, keys, args)) as [number, ...string[]];
    } catch (err) {
      audit?.settle(err);
      throw err;
    }
    audit?.settle();
    // Joined callers and lease waiters in this process need not wait for the pub/sub round trip.
    if (r[0] === 1) this.link.keySignals.notify(req.scope);
    for (const head of r.slice(1)) if (head) this.link.leaseSignals.notify(head as string);
    return r[0] === 1;
  }

  markDispatched(scope: string, owner: string, fence: number, ttlMs: number): Promise<boolean> {
    return this.transition(scope, owner, fence, { op: 'dispatch', ttlMs });
  }

  renewKey(scope: string, owner: string, fence: number, ttlMs: number): Promise<boolean> {
    return this.transition(scope, owner, fence, { op: 'renew', ttlMs });
  }

  completeKey(scope: string, owner: string, fence: number, result: string, ttlMs: number): Promise<boolean> {
    return this.transition(scope, owner, fence, { op: 'complete', result, ttlMs });
  }

  markUnknown(scope: string, owner: string, fence: number, ttlMs: number): Promise<boolean> {
    return this.transition(scope, owner, fence, { op: 'unknown', ttlMs });
  }

  releaseKey(scope: string, owner: string, fence: number): Promise<boolean> {
    return this.transition(scope, owner, fence, { op: 'release' });
  }

  async getKey(scope: string): Promise<KeyRecord | null> {
    return (await this.readKey(scope, false)).record;
  }

  waitForKey(scope: string, timeoutMs: number, signal?: AbortSignal): Promise<KeyRecord | null> {
    return waitUntilSettled({
      scope,
      timeoutMs,
      signal,
      signals: this.link.keySignals,
      read: () => this.readKey(scope, true),
      prepare: () => this.link.subscribe(),
      pollMs: KEY_POLL_MS,
    });
  }

  acquireLease(
    scope: string,
    holder: string,
    opts: { ttlMs: number; waitMs: number; signal?: AbortSignal },
  ): Promise<LeaseGrant> {
    return this.leases.acquire(scope, holder, opts);
  }

  renewLease(grant: LeaseGrant, ttlMs: number): Promise<boolean> {
    return this.leases.renew(grant, ttlMs);
  }

  releaseLease(grant: LeaseGrant, blockForMs = 0): Promise<void> {
    return this.leases.release(grant, blockForMs);
  }

  listLeases(): Promise<{ scope: string; holder: string; token: number; expiresAt: number; waiters: number }[]> {
    return this.leases.list();
  }

  async takeToken(bucket: string, perSecond: number, burst: number): Promise<TakeTokenResult> {
    const r = (await this.link.eval(RATE_TAKE, [this.link.keys.bucket(bucket)], [perSecond, burst])) as number[];
    return r[0] === 1 ? { ok: true } : { ok: false, retryAfterMs: Number(r[1]) };
  }

  async pauseBucket(bucket: string, pauseMs: number): Promise<void> {
    await this.link.eval(RATE_PAUSE, [this.link.keys.bucket(bucket)], [ms(pauseMs)]);
  }

  appendAudit(entry: AuditEntry): Promise<void> {
    if (this.link.closed) return Promise.reject(closedError());
    return this.audit.append(entry);
  }

  queryAudit(q: { sinceMs?: number; tool?: string; limit?: number }): Promise<AuditEntry[]> {
    return this.audit.query(q);
  }

  async ping(): Promise<void> {
    await this.link.command(() => this.link.client.ping());
  }

  /** Replicas share this store: nobody can tell a dead replica's records from a live one's, so expiry settles them. */
  async settleAbandoned(_unknownTtlMs: number): Promise<{ released: number; unknown: number }> {
    return { released: 0, unknown: 0 };
  }

  async close(): Promise<void> {
    if (this.link.closed) return;
    await this.audit.flush().catch(() => {});
    // Waiters wake, find the store closed, and leave.
    await this.link.close();
  }

  private transition(scope: string, owner: string, fence: number, t: KeyTransition): Promise<boolean> {
    return this.link
      .eval(
        KEY_MOVE,
        [this.link.keys.key(scope)],
        [
          t.op,
          owner,
          fence,
          'ttlMs' in t ? ms(t.ttlMs) : 0,
          t.op === 'complete' ? t.result : '',
          this.link.keyChannel,
          scope,
          CLAIM_LINGER_MS,
        ],
      )
      .then((r) => {
        if (r === 1 && (t.op === 'complete' || t.op === 'unknown' || t.op === 'release'))
          this.link.keySignals.notify(scope);
        return r === 1;
      });
  }

  /** `watch`: the caller waits for the record to settle, so its owner must publish the transition that does. */
  private async readKey(scope: string, watch: boolean): Promise<{ record: KeyRecord | null; now: number }> {
    const r = (await this.link.eval(KEY_GET, [this.link.keys.key(scope)], [watch ? '1' : '0'])) as (
      | string
      | number
      | null
    )[];
    const now = Number(r[0]);
    if (typeof r[1] !== 'string') return { record: null, now };
    const row: StoredKey = { ...keyFields(r, 1), unknownTtlMs: Number(r[6]) };
    if (typeof r[7] === 'string') row.result = r[7];
    return { record: viewKey(row, now), now };
  }

  private indexTtlDue(): boolean {
    const now = Date.now();
    if (now < this.indexTtlAt) return false;
    this.indexTtlAt = now + 60_000;
    return true;
  }
}
