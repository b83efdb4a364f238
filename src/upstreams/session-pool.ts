// The sessions of one upstream in per-agent or per-tenant mode, keyed by agent id or tenant. A session opens on its
// key's first use, closes after idleMs without calls, and at most maxSessions are alive at once. When the pool is
// full, a new key takes the place of the least recently used idle session (no calls in flight); when every session
// is busy, the call waits, first come first served, until one becomes idle, and is turned away once it would wait
// past its limit. Nothing here knows what a session is: the unit passes `open` and `close`, and time is an input
// (`now`, `schedule`), so the rules can be tested without sleeping.
import { BusError } from '../errors.js';

export interface SessionPoolOptions<S> {
  /** Sessions alive at once. */
  maxSessions: number;
  /** A session with no calls for this long is closed by the next sweep. */
  idleMs: number;
  /** Creates the session of a key (it may still be connecting: the caller waits for that itself). */
  open: (key: string) => S;
  /** Ends a session; called once per session, never while a call holds it. */
  close: (session: S, key: string, reason: 'idle' | 'evicted' | 'shutdown') => void;
  /** The upstream's name, for messages. */
  upstream: string;
  now?: () => number;
  /** Runs fn after ms; returns a cancel function. */
  schedule?: (fn: () => void, ms: number) => () => void;
}

/** One use of a session: release it when the call is over, however it ended. */
export interface SessionLease<S> {
  readonly session: S;
  readonly key: string;
  /** True when this acquire opened the session (the first call of the key, or the first after it closed). */
  readonly opened: boolean;
  release(): void;
}

export interface AcquireOptions {
  /** Epoch ms (by the pool's clock) after which a waiting acquire gives up. */
  waitUntil: number;
  signal?: AbortSignal;
}

interface Entry<S> {
  readonly key: string;
  readonly session: S;
  /** Calls holding the session now. */
  busy: number;
  /** When the last call released it (or it opened). */
  lastUsed: number;
}

interface Waiter<S> {
  readonly key: string;
  resolve: (lease: SessionLease<S>) => void;
  reject: (err: unknown) => void;
  cancel: () => void;
}

export interface SessionInfo {
  key: string;
  busy: number;
  idleForMs: number;
}

/** How soon a refused caller is asked to come back: sessions free up as calls finish, usually within a second. */
const FULL_RETRY_AFTER_MS = 1000;

function defaultSchedule(fn: () => void, ms: number): () => void {
  const t = setTimeout(fn, ms);
  t.unref();
  return () => clearTimeout(t);
}

export class SessionPool<S> {
  private readonly entries = new Map<string, Entry<S>>();
  private readonly waiters: Waiter<S>[] = [];
  private readonly now: () => number;
  private readonly schedule: (fn: () => void, ms: number) => () => void;
  private closed = false;
  /** Sessions opened and closed since start, by reason (for metrics). */
  readonly counts = { opened: 0, idle: 0, evicted: 0 };

  constructor(private readonly opts: SessionPoolOptions<S>) {
    this.now = opts.now ?? Date.now;
    this.schedule = opts.schedule ?? defaultSchedule;
  }

  get size(): number {
    return this.entries.size;
  }

  get maxSessions(): number {
    return this.opts.maxSessions;
  }

  get waiting(): number {
    return this.waiters.length;
  }

  /** The live session of a key, without using it (for tests and the dashboard). */
  peek(key: string): S | undefined {
    return this.entries.get(key)?.session;
  }

  sessions(): Iterable<[string, S]> {
    return [...this.entries.values()].map((e) => [e.key, e.session] as [string, S]);
  }

  list(): SessionInfo[] {
    const now = this.now();
    return [...this.entries.values()].map((e) => ({
      key: e.key,
      busy: e.busy,
      idleForMs: e.busy > 0 ? 0 : now - e.lastUsed,
    }));
  }

  /** The session of `key`, opened if need be; waits while the pool is full of busy sessions. */
  acquire(key: string, opts: AcquireOptions): Promise<SessionLease<S>> {
    if (this.closed) return Promise.reject(this.unavailable('the upstream is shutting down'));
    const now = this.now();
    const taken = this.take(key, now);
    if (taken) return Promise.resolve(taken);
    if (opts.signal?.aborted) return Promise.reject(opts.signal.reason);
    const waitMs = opts.waitUntil - now;
    if (waitMs <= 0) return Promise.reject(this.full());
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        waiter.cancel();
        reject(opts.signal?.reason);
      };
      const cancelTimer = this.schedule(() => {
        waiter.cancel();
        reject(this.full());
      }, waitMs);
      const waiter: Waiter<S> = {
        key,
        resolve: (lease) => {
          waiter.cancel();
          resolve(lease);
        },
        reject,
        cancel: () => {
          cancelTimer();
          opts.signal?.removeEventListener('abort', onAbort);
          const i = this.waiters.indexOf(waiter);
          if (i !== -1) this.waiters.splice(i, 1);
        },
      };
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** Hands out the key's session, opening one (in a free slot, or in place of the LRU idle session), or undefined. */
  private take(key: string, now: number): SessionLease<S> | undefined {
    const existing = this.entries.get(key);
    if (existing) return this.lease(existing, false);
    if (this.entries.size >= this.opts.maxSessions) {
      const victim = this.leastRecentlyUsedIdle();
      if (!victim) return undefined;
      this.remove(victim, 'evicted');
    }
    const entry: Entry<S> = { key, session: this.opts.open(key), busy: 0, lastUsed: now };
    this.entries.set(key, entry);
    this.counts.opened++;
    return this.lease(entry, true);
  }

  private lease(entry: Entry<S>, opened: boolean): SessionLease<S> {
    entry.busy++;
    let released = false;
    return {
      session: entry.session,
      key: entry.key,
      opened,
      release: () => {
        if (released) return;
        released = true;
        entry.busy--;
        entry.lastUsed = this.now();
        if (entry.busy === 0) this.pump();
      },
    };
  }

  private leastRecentlyUsedIdle(): Entry<S> | undefined {
    let best: Entry<S> | undefined;
    for (const e of this.entries.values()) if (e.busy === 0 && (!best || e.lastUsed < best.lastUsed)) best = e;
    return best;
  }

  /** Serves waiters, in arrival order, as far as sessions allow. */
  private pump(): void {
    let i = 0;
    while (i < this.waiters.length) {
      const w = this.waiters[i]!;
      const lease = this.take(w.key, this.now());
      if (lease)
        w.resolve(lease); // removes itself from the list
      else i++;
    }
  }

  private remove(entry: Entry<S>, reason: 'idle' | 'evicted' | 'shutdown'): void {
    if (this.entries.get(entry.key) !== entry) return;
    this.entries.delete(entry.key);
    if (reason !== 'shutdown') this.counts[reason]++;
    this.opts.close(entry.session, entry.key, reason);
  }

  /** Closes every session idle for idleMs or longer. Run on a timer by the unit; by hand in tests. */
  sweep(): void {
    const now = this.now();
    for (const e of [...this.entries.values()])
      if (e.busy === 0 && now - e.lastUsed >= this.opts.idleMs) this.remove(e, 'idle');
  }

  /** Closes a key's session at once if no call holds it (a session that must be replaced, e.g. its config changed). */
  closeIdle(key: string): boolean {
    const e = this.entries.get(key);
    if (!e || e.busy > 0) return false;
    this.remove(e, 'evicted');
    this.pump();
    return true;
  }

  /** Refuses waiters and new calls and closes every session (in-flight calls are the caller's to settle). */
  close(): void {
    this.closed = true;
    for (const w of [...this.waiters]) {
      w.cancel();
      w.reject(this.unavailable('the upstream is shutting down'));
    }
    for (const e of [...this.entries.values()]) this.remove(e, 'shutdown');
  }

  private full(): BusError {
    return this.unavailable(
      `all ${this.opts.maxSessions} sessions are busy (maxSessions); nothing was sent`,
      'sessions_full',
    );
  }

  private unavailable(why: string, code = 'upstream_closing'): BusError {
    return new BusError('upstream_unavailable', code, `Upstream ${this.opts.upstream}: ${why}.`, {
      retryAfterMs: FULL_RETRY_AFTER_MS,
    });
  }
}
