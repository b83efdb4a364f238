// Leases on Redis, for several replicas at once: a lease is one string (holder, token, expiry, waiters flag), its
// waiters a sorted set in arrival order with a heartbeat each, and every step one Lua script judged by Redis' clock.
// A waiter sleeps until the pub/sub message that names it as the new head (redis-link.ts), the expiry of the lease
// it waits for, or a slow poll that also refreshes its heartbeat; a waiter whose replica died drops out of the queue
// when its heartbeat lapses. Grants in one step with a key claim are begin-write's (redis.ts).
import { randomUUID } from 'node:crypto';
import { type LeaseGrant, LeaseWaitTimeout } from './contract.js';
import { ms, type RedisLink } from './redis-link.js';
import { LEASE_ACQUIRE, LEASE_LEAVE, LEASE_RELEASE, LEASE_RENEW } from './redis-scripts.js';

/** Lease waiters re-try (and so refresh their heartbeat) at least this often... */
const LEASE_POLL_MS = 1000;
/** ...and a waiter not heard from for this long (its replica died) loses its place in the queue. */
const LEASE_HEARTBEAT_TTL_MS = 3500;
/** The fencing-token counter outlives any lease by far; tokens also never fall behind Redis' clock in µs. */
export const TOKEN_COUNTER_TTL_MS = 400 * 24 * 3600_000;

type LeaseReply = [1, number, number] | [0, number, 0 | 1];

export class RedisLeases {
  constructor(
    private readonly link: RedisLink,
    private readonly replicaId: string,
  ) {}

  /** The lease, waiting in the scope's queue up to `waitMs` (LeaseWaitTimeout after), or the signal's reason. */
  async acquire(
    scope: string,
    holder: string,
    opts: { ttlMs: number; waitMs: number; signal?: AbortSignal },
  ): Promise<LeaseGrant> {
    const { signal } = opts;
    this.link.assertOpen();
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
    const off = this.link.leaseSignals.on(waiter, poke);
    signal?.addEventListener('abort', poke, { once: true });
    try {
      for (;;) {
        this.link.assertOpen();
        dirty = false;
        const r = (await this.link.eval(
          LEASE_ACQUIRE,
          [
            this.link.keys.lease(scope),
            this.link.keys.leaseQueue(scope),
            this.link.keys.leaseHeartbeats(scope),
            this.link.keys.leaseIndex(),
            this.link.keys.tokenCounter(),
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
          await this.link.subscribe();
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
          if (dirty || signal?.aborted || this.link.closed) wake();
        });
        wake = undefined;
      }
    } catch (err) {
      if (queued) {
        await this.link
          .eval(
            LEASE_LEAVE,
            [this.link.keys.leaseQueue(scope), this.link.keys.leaseHeartbeats(scope)],
            [waiter, this.link.leaseChannel, scope],
            true,
          )
          .then(
            (head) => {
              if (head) this.link.leaseSignals.notify(head as string);
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

  async renew(grant: LeaseGrant, ttlMs: number): Promise<boolean> {
    const r = await this.link.eval(
      LEASE_RENEW,
      [this.link.keys.lease(grant.scope), this.link.keys.leaseIndex()],
      [grant.holder, String(grant.token), ms(ttlMs), grant.scope],
    );
    return r === 1;
  }

  async release(grant: LeaseGrant, blockForMs = 0): Promise<void> {
    const head = (await this.link.eval(
      LEASE_RELEASE,
      [this.link.keys.lease(grant.scope), this.link.keys.leaseIndex(), this.link.keys.leaseQueue(grant.scope)],
      [grant.holder, String(grant.token), ms(blockForMs), this.link.leaseChannel, grant.scope],
    )) as string;
    // A waiter in this process need not wait for the pub/sub round trip.
    if (head) this.link.leaseSignals.notify(head);
  }

  /** Held leases (not lock-delays) and how many waiters each has; a snapshot, not atomic across scopes. */
  async list(): Promise<{ scope: string; holder: string; token: number; expiresAt: number; waiters: number }[]> {
    return this.link.command(async () => {
      const [sec, us] = await this.link.client.time();
      const now = Number(sec) * 1000 + Math.floor(Number(us) / 1000);
      // Expired members (holders that died) are trimmed here and on every acquire that waited.
      await this.link.client.zremrangebyscore(this.link.keys.leaseIndex(), '-inf', now);
      const scopes = await this.link.client.zrangebyscore(this.link.keys.leaseIndex(), `(${now}`, '+inf');
      if (scopes.length === 0) return [];
      const pipe = this.link.client.pipeline();
      for (const scope of scopes) {
        pipe.get(this.link.keys.lease(scope));
        pipe.zcard(this.link.keys.leaseQueue(scope));
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
}
