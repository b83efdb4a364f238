// The shared state store: several bus replicas on one Redis (ioredis). Every decision is one Lua script
// (redis-scripts.ts) judged by Redis' clock; waiting is woken by pub/sub on a dedicated subscriber connection, with a
// slow poll as a safety net for a missed message. Made for a single Redis (or Sentinel), not Redis Cluster: the
// lease script touches several keys that Cluster could place on different nodes.
//
// When Redis is unreachable, every method rejects within about a second with StoreUnavailable (no offline queue, a
// command timeout), and the client reconnects by itself when Redis is back.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import {
  type AuditEntry,
  type BeginWriteOutcome,
  type BeginWriteRequest,
  type ClaimOutcome,
  type ClaimRequest,
  type FinishWriteRequest,
  type KeyRecord,
  type KeyState,
  type LeaseGrant,
  LeaseWaitTimeout,
  type StateStore,
  StoreUnavailable,
  type TakeTokenResult,
} from './contract.js';
import { CLAIM_LINGER_MS, DEFAULT_UNKNOWN_TTL_MS, type KeyTransition, type StoredKey, viewKey } from './key-rules.js';
import { RedisAuditTrail } from './redis-audit.js';
import {
  ALL_SCRIPTS,
  BEGIN_WRITE,
  FINISH_WRITE,
  KEY_CLAIM,
  KEY_GET,
  KEY_MOVE,
  LEASE_ACQUIRE,
  LEASE_LEAVE,
  LEASE_RELEASE,
  LEASE_RENEW,
  type LuaScript,
  RATE_PAUSE,
  RATE_TAKE,
} from './redis-scripts.js';
import { ScopeSignals, waitUntilSettled } from './scope-signals.js';
import { RedisVault } from './vault-redis.js';

/** Longest time a command may take before the store counts as unreachable. */
const COMMAND_TIMEOUT_MS = 1000;
/** Joined callers re-read at least this often, in case a pub/sub message was lost (e.g. during a reconnect). */
const KEY_POLL_MS = 1000;
/** Lease waiters re-try (and so refresh their heartbeat) at least this often... */
const LEASE_POLL_MS = 1000;
/** ...and a waiter not heard from for this long (its replica died) loses its place in the queue. */
const LEASE_HEARTBEAT_TTL_MS = 3500;
/** The fencing-token counter outlives any lease by far; tokens also never fall behind Redis' clock in µs. */
const TOKEN_COUNTER_TTL_MS = 400 * 24 * 3600_000;

/** Reply errors that mean Redis cannot serve now (loading, failing over, out of memory), not a bug in a script. */
const UNAVAILABLE_REPLY = /^(LOADING|BUSY|MASTERDOWN|READONLY|CLUSTERDOWN|TRYAGAIN|NOREPLICAS|OOM|NOAUTH|WRONGPASS)/;

function toStoreError(err: unknown): unknown {
  if (err instanceof StoreUnavailable) return err;
  const e = err as Error;
  if (e?.name === 'ReplyError' && !UNAVAILABLE_REPLY.test(e.message)) return err;
  return new StoreUnavailable(`Redis unreachable: ${e?.message ?? String(err)}`, { cause: err });
}

function closedError(): StoreUnavailable {
  return new StoreUnavailable('the state store is closed');
}

/** Redis takes whole milliseconds (PEXPIRE refuses fractions). */
const ms = (n: number) => Math.max(0, Math.ceil(n));

type LeaseReply = [1, number, number] | [0, number, 0 | 1];

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
  private readonly client: Redis;
  private subscriber: Redis | undefined;
  private subscribed: Promise<void> | undefined;
  private readonly keySignals = new ScopeSignals();
  private readonly leaseSignals = new ScopeSignals();
  private readonly audit: RedisAuditTrail;
  /** One per command or MULTI pipeline sent (a NOSCRIPT fallback adds a second); exposed as a metric. */
  roundTrips = 0;
  /** When begin-write should next refresh the lease index's TTL (a day long; refreshed once a minute). */
  private indexTtlAt = 0;
  private readonly prefix: string;
  private readonly replicaId: string;
  private readonly keyChannel: string;
  private readonly leaseChannel: string;
  private closed = false;
  readonly vault: RedisVault;

  constructor(opts: RedisStoreOptions) {
    this.prefix = opts.prefix;
    this.replicaId = opts.replicaId;
    this.keyChannel = `${opts.prefix}key-events`;
    this.leaseChannel = `${opts.prefix}lease-events`;
    this.client = new Redis(opts.url, {
      lazyConnect: true,
      // Fail fast instead of queueing while disconnected: a write must be refused, not left hanging.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: COMMAND_TIMEOUT_MS,
      connectTimeout: COMMAND_TIMEOUT_MS,
      retryStrategy: (times) => Math.min(50 * 2 ** times, 1000),
    });
    // Failures surface through the commands that hit them; the event itself only needs a listener.
    this.client.on('error', () => {});
    this.vault = new RedisVault(this.client, opts.prefix);
    this.audit = new RedisAuditTrail(this.client, `${opts.prefix}audit`, (fn) => this.command(fn, true));
    // ioredis runs each by EVALSHA and loads it on NOSCRIPT (first use, or after Redis restarted).
    for (const script of ALL_SCRIPTS) {
      this.client.defineCommand(script.name, {
        lua: script.lua,
        ...(script.keys === undefined ? {} : { numberOfKeys: script.keys }),
      });
    }
  }

  /** Connects, waiting at most about a second: a bus may start while Redis is down and serve reads meanwhile. */
  async connect(): Promise<void> {
    await this.client.connect().catch(() => {});
  }

  async claimKey(req: ClaimRequest): Promise<ClaimOutcome> {
    const r = (await this.eval(
      KEY_CLAIM,
      [this.key(req.scope)],
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
    const keys = [this.key(req.scope), this.tokenCounter(), this.leaseIndex()];
    for (const scope of req.leases) keys.push(this.lease(scope), this.leaseQueue(scope));
    const r = (await this.eval(BEGIN_WRITE, keys, [
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
    const keys = [this.key(req.scope), this.leaseIndex(), this.audit.key];
    const args: (string | number)[] = [
      req.owner,
      req.fence,
      req.result,
      ms(req.ttlMs),
      this.keyChannel,
      req.scope,
      this.leaseChannel,
      audit?.json ?? '',
      audit?.maxItems ?? 0,
      audit?.refreshTtl ? audit.ttlMs : 0,
    ];
    for (const g of req.grants) {
      keys.push(this.lease(g.scope), this.leaseQueue(g.scope));
      args.push(String(g.token), g.scope);
    }
    let r: [number, ...string[]];
    try {
      r = (await this.eval(FINISH_WRITE, keys, args)) as [number, ...string[]];
    } catch (err) {
      audit?.settle(err);
      throw err;
    }
    audit?.settle();
    // Joined callers and lease waiters in this process need not wait for the pub/sub round trip.
    if (r[0] === 1) this.keySignals.notify(req.scope);
    for (const head of r.slice(1)) if (head) this.leaseSignals.notify(head as string);
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
      signals: this.keySignals,
      read: () => this.readKey(scope, true),
      prepare: () => this.subscribe(),
      pollMs: KEY_POLL_MS,
    });
  }

  async acquireLease(
    scope: string,
    holder: string,
    opts: { ttlMs: number; waitMs: number; signal?: AbortSignal },
  ): Promise<LeaseGrant> {
    const { signal } = opts;
    this.assertOpen();
    signal?.throwIfAborted();
    const waiter = `${this.replicaId}:${randomUUID()}`;
    const deadline = Date.now() + opts.waitMs;
    const queueUp = opts.waitMs > 0 ? '1' : '0';
    let queued = false;
    let subscribed = false;
    let dirty = false;
    let wake: (() => void) | undefined;
    const poke = () => {
      dirty = true;
      wake?.();
    };
    // Lease wake-ups name the waiter that reached the head of its queue, not the scope: one wake per grant.
    const off = this.leaseSignals.on(waiter, poke);
    signal?.addEventListener('abort', poke, { once: true });
    try {
      for (;;) {
        this.assertOpen();
        dirty = false;
        const r = (await this.eval(
          LEASE_ACQUIRE,
          [
            this.lease(scope),
            this.leaseQueue(scope),
            this.leaseHeartbeats(scope),
            this.leaseIndex(),
            this.tokenCounter(),
          ],
          [waiter, holder, ms(opts.ttlMs), LEASE_HEARTBEAT_TTL_MS, scope, queueUp, TOKEN_COUNTER_TTL_MS],
        )) as LeaseReply;
        if (r[0] === 1) return { scope, holder, token: Number(r[1]) };
        queued = queueUp === '1';
        signal?.throwIfAborted();
        const left = deadline - Date.now();
        if (left <= 0) throw new LeaseWaitTimeout(scope, Math.max(1, Number(r[1])));
        if (!subscribed) {
          // Subscribe, then try again at once: a release between the try and the subscription is not lost.
          subscribed = true;
          await this.subscribe();
          continue;
        }
        // A held lease frees at its expiry at the latest; otherwise the head is about to go (or is dead and
        // drops out when its heartbeat lapses).
        const untilFree = r[2] === 1 ? Number(r[1]) + 1 : LEASE_POLL_MS;
        const delay = Math.max(1, Math.min(left, untilFree, LEASE_POLL_MS));
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delay);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
          if (dirty || signal?.aborted || this.closed) wake();
        });
        wake = undefined;
      }
    } catch (err) {
      if (queued) {
        await this.eval(
          LEASE_LEAVE,
          [this.leaseQueue(scope), this.leaseHeartbeats(scope)],
          [waiter, this.leaseChannel, scope],
          true,
        ).then(
          (head) => {
            if (head) this.leaseSignals.notify(head as string);
          },
          () => {},
        );
      }
      throw err;
    } finally {
      off();
      signal?.removeEventListener('abort', poke);
    }
  }

  async renewLease(grant: LeaseGrant, ttlMs: number): Promise<boolean> {
    const r = await this.eval(
      LEASE_RENEW,
      [this.lease(grant.scope), this.leaseIndex()],
      [grant.holder, String(grant.token), ms(ttlMs), grant.scope],
    );
    return r === 1;
  }

  async releaseLease(grant: LeaseGrant, blockForMs = 0): Promise<void> {
    const head = (await this.eval(
      LEASE_RELEASE,
      [this.lease(grant.scope), this.leaseIndex(), this.leaseQueue(grant.scope)],
      [grant.holder, String(grant.token), ms(blockForMs), this.leaseChannel, grant.scope],
    )) as string;
    // A waiter in this process need not wait for the pub/sub round trip.
    if (head) this.leaseSignals.notify(head);
  }

  /** Held leases (not lock-delays) and how many waiters each has; a snapshot, not atomic across scopes. */
  async listLeases(): Promise<{ scope: string; holder: string; token: number; expiresAt: number; waiters: number }[]> {
    return this.command(async () => {
      const [sec, us] = await this.client.time();
      const now = Number(sec) * 1000 + Math.floor(Number(us) / 1000);
      // Expired members (holders that died) are trimmed here and on every acquire that waited.
      await this.client.zremrangebyscore(this.leaseIndex(), '-inf', now);
      const scopes = await this.client.zrangebyscore(this.leaseIndex(), `(${now}`, '+inf');
      if (scopes.length === 0) return [];
      const pipe = this.client.pipeline();
      for (const scope of scopes) {
        pipe.get(this.lease(scope));
        pipe.zcard(this.leaseQueue(scope));
      }
      const replies = (await pipe.exec()) ?? [];
      const out: { scope: string; holder: string; token: number; expiresAt: number; waiters: number }[] = [];
      scopes.forEach((scope, i) => {
        const [errL, lease] = replies[2 * i] ?? [];
        const [errQ, waiters] = replies[2 * i + 1] ?? [];
        if (errL || errQ) throw errL ?? errQ;
        // holder, token, expiresAt, waiters flag (src/store/lua/includes/lease-record.lua)
        const [holder, token, ex] = typeof lease === 'string' ? lease.split('\n') : [];
        if (!holder || Number(ex) <= now) return;
        out.push({ scope, holder, token: Number(token), expiresAt: Number(ex), waiters: Number(waiters) });
      });
      return out;
    });
  }

  async takeToken(bucket: string, perSecond: number, burst: number): Promise<TakeTokenResult> {
    const r = (await this.eval(RATE_TAKE, [this.bucket(bucket)], [perSecond, burst])) as number[];
    return r[0] === 1 ? { ok: true } : { ok: false, retryAfterMs: Number(r[1]) };
  }

  async pauseBucket(bucket: string, pauseMs: number): Promise<void> {
    await this.eval(RATE_PAUSE, [this.bucket(bucket)], [ms(pauseMs)]);
  }

  appendAudit(entry: AuditEntry): Promise<void> {
    if (this.closed) return Promise.reject(closedError());
    return this.audit.append(entry);
  }

  queryAudit(q: { sinceMs?: number; tool?: string; limit?: number }): Promise<AuditEntry[]> {
    return this.audit.query(q);
  }

  async ping(): Promise<void> {
    await this.command(() => this.client.ping());
  }

  /** Replicas share this store: nobody can tell a dead replica's records from a live one's, so expiry settles them. */
  async settleAbandoned(_unknownTtlMs: number): Promise<{ released: number; unknown: number }> {
    return { released: 0, unknown: 0 };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.audit.flush().catch(() => {});
    this.closed = true;
    // Waiters wake, find the store closed, and leave.
    this.keySignals.notifyAll();
    this.leaseSignals.notifyAll();
    // Let woken lease waiters send their leave before QUIT, which Redis then processes after it.
    await new Promise((r) => setImmediate(r));
    const quit = async (c: Redis) => {
      if (c.status === 'ready') {
        await Promise.race([c.quit().catch(() => {}), new Promise((r) => setTimeout(r, COMMAND_TIMEOUT_MS).unref())]);
      }
      c.disconnect();
    };
    await Promise.all([quit(this.client), this.subscriber ? quit(this.subscriber) : Promise.resolve()]);
  }

  private transition(scope: string, owner: string, fence: number, t: KeyTransition): Promise<boolean> {
    return this.eval(
      KEY_MOVE,
      [this.key(scope)],
      [
        t.op,
        owner,
        fence,
        'ttlMs' in t ? ms(t.ttlMs) : 0,
        t.op === 'complete' ? t.result : '',
        this.keyChannel,
        scope,
        CLAIM_LINGER_MS,
      ],
    ).then((r) => {
      if (r === 1 && (t.op === 'complete' || t.op === 'unknown' || t.op === 'release')) this.keySignals.notify(scope);
      return r === 1;
    });
  }

  /** `watch`: the caller waits for the record to settle, so its owner must publish the transition that does. */
  private async readKey(scope: string, watch: boolean): Promise<{ record: KeyRecord | null; now: number }> {
    const r = (await this.eval(KEY_GET, [this.key(scope)], [watch ? '1' : '0'])) as (string | number | null)[];
    const now = Number(r[0]);
    if (typeof r[1] !== 'string') return { record: null, now };
    const row: StoredKey = { ...keyFields(r, 1), unknownTtlMs: Number(r[6]) };
    if (typeof r[7] === 'string') row.result = r[7];
    return { record: viewKey(row, now), now };
  }

  /** Subscribes the dedicated connection once; a failure is retried by the next waiter (the poll covers meanwhile). */
  private subscribe(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (!this.subscribed) {
      const sub = this.subscriber ?? this.client.duplicate();
      if (!this.subscriber) {
        this.subscriber = sub;
        sub.on('error', () => {});
        sub.on('message', (channel: string, scope: string) => {
          if (channel === this.keyChannel) this.keySignals.notify(scope);
          else if (channel === this.leaseChannel) this.leaseSignals.notify(scope); // a waiter id (see LEASE_RELEASE)
        });
      }
      this.subscribed = (async () => {
        if (sub.status === 'wait') await sub.connect();
        await sub.subscribe(this.keyChannel, this.leaseChannel);
      })().catch(() => {
        this.subscribed = undefined;
      });
    }
    return this.subscribed;
  }

  /** Runs a script defined on the client (EVALSHA; ioredis loads it on NOSCRIPT). */
  private eval(script: LuaScript, keys: string[], args: (string | number)[], evenIfClosed = false): Promise<unknown> {
    return this.command(() => {
      const run = (this.client as unknown as Record<string, (...a: (string | number)[]) => Promise<unknown>>)[
        script.name
      ]!;
      return script.keys === undefined
        ? run.call(this.client, keys.length, ...keys, ...args)
        : run.call(this.client, ...keys, ...args);
    }, evenIfClosed);
  }

  private async command<T>(fn: () => Promise<T>, evenIfClosed = false): Promise<T> {
    if (!evenIfClosed) this.assertOpen();
    this.roundTrips++;
    try {
      return await fn();
    } catch (err) {
      throw toStoreError(err);
    }
  }

  private indexTtlDue(): boolean {
    const now = Date.now();
    if (now < this.indexTtlAt) return false;
    this.indexTtlAt = now + 60_000;
    return true;
  }

  private assertOpen(): void {
    if (this.closed) throw closedError();
  }

  private key(scope: string): string {
    return `${this.prefix}key:${scope}`;
  }
  private lease(scope: string): string {
    return `${this.prefix}lease:${scope}`;
  }
  private leaseQueue(scope: string): string {
    return `${this.prefix}lease-q:${scope}`;
  }
  private leaseHeartbeats(scope: string): string {
    return `${this.prefix}lease-hb:${scope}`;
  }
  private leaseIndex(): string {
    return `${this.prefix}lease-index`;
  }
  private tokenCounter(): string {
    return `${this.prefix}lease-seq`;
  }
  private bucket(name: string): string {
    return `${this.prefix}rate:${name}`;
  }
}
