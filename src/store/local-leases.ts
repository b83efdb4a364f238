// Write leases for a store owned by one process (memory, SQLite): waiters queue FIFO per scope in this process,
// while the lease rows and the fencing-token counter live wherever the store keeps them (a Map, or SQLite tables so
// that a restart still sees held leases and never issues a smaller token).
//
// A scope is free when it has no row or its row has expired; a released lease with a lock-delay keeps a row with no
// holder until the delay ends. One timer per waiting scope wakes the queue when the current row expires.
import { type LeaseGrant, LeaseWaitTimeout } from './contract.js';

export interface LeaseRow {
  /** '' while the scope is blocked after a release with a lock-delay. */
  holder: string;
  token: number;
  expiresAt: number;
}

/** Where the rows live. Calls are synchronous so that check-then-grant cannot interleave with another grant. */
export interface LeaseRows {
  get(scope: string): LeaseRow | undefined;
  /** Issues the next fencing token and writes the row, atomically. */
  grant(scope: string, holder: string, expiresAt: number): number;
  put(scope: string, row: LeaseRow): void;
  remove(scope: string): void;
  all(): [string, LeaseRow][];
}

interface Waiter {
  holder: string;
  ttlMs: number;
  resolve: (grant: LeaseGrant) => void;
  reject: (err: unknown) => void;
  cleanup: () => void;
}

export class LocalLeases {
  private readonly queues = new Map<string, Waiter[]>();
  private readonly expiryTimers = new Map<string, NodeJS.Timeout>();

  constructor(
    private readonly rows: LeaseRows,
    private readonly now: () => number = Date.now,
  ) {}

  acquire(
    scope: string,
    holder: string,
    opts: { ttlMs: number; waitMs: number; signal?: AbortSignal },
  ): Promise<LeaseGrant> {
    const { signal } = opts;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const queue = this.queues.get(scope);
    if (!queue && this.isFree(scope)) return Promise.resolve(this.grant(scope, holder, opts.ttlMs));
    if (opts.waitMs <= 0) return Promise.reject(new LeaseWaitTimeout(scope, this.retryAfter(scope)));
    return new Promise<LeaseGrant>((resolve, reject) => {
      const leave = () => {
        const q = this.queues.get(scope);
        const i = q ? q.indexOf(waiter) : -1;
        if (q && i >= 0) q.splice(i, 1);
        if (q && q.length === 0) this.queues.delete(scope);
        waiter.cleanup();
        // The head may have left: the next one might go now.
        this.pump(scope);
      };
      const timer = setTimeout(() => {
        leave();
        reject(new LeaseWaitTimeout(scope, this.retryAfter(scope)));
      }, opts.waitMs);
      const onAbort = () => {
        leave();
        reject(signal?.reason);
      };
      const waiter: Waiter = {
        holder,
        ttlMs: opts.ttlMs,
        resolve,
        reject,
        cleanup: () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      if (queue) queue.push(waiter);
      else this.queues.set(scope, [waiter]);
      this.pump(scope);
    });
  }

  /**
   * Grants every scope at once if each is free with nobody waiting, else grants none (never waits). Synchronous, so
   * a store can run it inside the transaction that also claims the key.
   */
  tryAcquireAll(scopes: readonly string[], holder: string, ttlMs: number): LeaseGrant[] | null {
    for (const scope of scopes) if (this.queues.has(scope) || !this.isFree(scope)) return null;
    return scopes.map((scope) => this.grant(scope, holder, ttlMs));
  }

  renew(grant: LeaseGrant, ttlMs: number): boolean {
    const row = this.rows.get(grant.scope);
    const now = this.now();
    if (!row || row.holder !== grant.holder || row.token !== grant.token || row.expiresAt <= now) return false;
    this.rows.put(grant.scope, { ...row, expiresAt: now + ttlMs });
    return true;
  }

  release(grant: LeaseGrant, blockForMs = 0): void {
    const row = this.rows.get(grant.scope);
    if (!row || row.holder !== grant.holder || row.token !== grant.token) return;
    if (blockForMs > 0)
      this.rows.put(grant.scope, { holder: '', token: row.token, expiresAt: this.now() + blockForMs });
    else this.rows.remove(grant.scope);
    // The next waiter is served once the caller's step is over: a release made inside a store step (a batch of the
    // SQLite group commit, journaled at its end) may still be undone, and a waiter must never hold a grant that was.
    // Newcomers meanwhile see the queue and wait behind it.
    if (this.queues.has(grant.scope)) queueMicrotask(() => this.pump(grant.scope));
  }

  list(): { scope: string; holder: string; token: number; expiresAt: number; waiters: number }[] {
    const now = this.now();
    return this.rows
      .all()
      .filter(([, row]) => row.holder !== '' && row.expiresAt > now)
      .map(([scope, row]) => ({ scope, ...row, waiters: this.queues.get(scope)?.length ?? 0 }));
  }

  /** Fails every waiter (the store is closing) and stops the timers. */
  close(reason: unknown): void {
    for (const timer of this.expiryTimers.values()) clearTimeout(timer);
    this.expiryTimers.clear();
    const queues = [...this.queues.values()];
    this.queues.clear();
    for (const q of queues) {
      for (const w of q) {
        w.cleanup();
        w.reject(reason);
      }
    }
  }

  private isFree(scope: string): boolean {
    const row = this.rows.get(scope);
    return !row || row.expiresAt <= this.now();
  }

  /** A fair guess of when the scope frees: when its current row expires (a held lease is renewed, so often later). */
  private retryAfter(scope: string): number {
    let row: LeaseRow | undefined;
    try {
      row = this.rows.get(scope);
    } catch {
      row = undefined;
    }
    return Math.max(1, row ? Math.ceil(row.expiresAt - this.now()) : 1);
  }

  private grant(scope: string, holder: string, ttlMs: number): LeaseGrant {
    const token = this.rows.grant(scope, holder, this.now() + ttlMs);
    return { scope, holder, token };
  }

  /** Grants the head of the queue if the scope is free, else sleeps until the current row expires. */
  private pump(scope: string): void {
    const old = this.expiryTimers.get(scope);
    if (old) {
      clearTimeout(old);
      this.expiryTimers.delete(scope);
    }
    const queue = this.queues.get(scope);
    if (!queue || queue.length === 0) return;
    let row: LeaseRow | undefined;
    try {
      row = this.rows.get(scope);
    } catch (err) {
      // The rows cannot be read (the store failed): nobody in this queue can be served.
      this.queues.delete(scope);
      for (const w of queue) {
        w.cleanup();
        w.reject(err);
      }
      return;
    }
    const now = this.now();
    if (row && row.expiresAt > now) {
      const timer = setTimeout(
        () => {
          this.expiryTimers.delete(scope);
          this.pump(scope);
        },
        row.expiresAt - now + 1,
      );
      this.expiryTimers.set(scope, timer);
      return;
    }
    const head = queue.shift()!;
    if (queue.length === 0) this.queues.delete(scope);
    head.cleanup();
    try {
      head.resolve(this.grant(scope, head.holder, head.ttlMs));
    } catch (err) {
      head.reject(err);
      this.pump(scope);
    }
  }
}
