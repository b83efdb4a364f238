// In-process wake-ups keyed by scope, and the wait loop every store uses for waitForKey.
// A waiter registers before it reads, so a transition between its read and its sleep still wakes it (no lost
// wake-up); it also re-reads when the owner's record would expire (a dead owner never signals) and, for stores
// shared with other processes, on a slow poll in case a pub/sub message was missed.
import type { KeyRecord } from './contract.js';
import { isSettled } from './key-rules.js';

export class ScopeSignals {
  private readonly listeners = new Map<string, Set<() => void>>();

  on(scope: string, fn: () => void): () => void {
    let set = this.listeners.get(scope);
    if (!set) {
      set = new Set();
      this.listeners.set(scope, set);
    }
    set.add(fn);
    return () => {
      const s = this.listeners.get(scope);
      if (!s) return;
      s.delete(fn);
      if (s.size === 0) this.listeners.delete(scope);
    };
  }

  notify(scope: string): void {
    const set = this.listeners.get(scope);
    if (!set) return;
    for (const fn of [...set]) fn();
  }

  has(scope: string): boolean {
    return this.listeners.has(scope);
  }

  /** Wakes every listener (close: waiters re-read, fail, and leave). */
  notifyAll(): void {
    for (const scope of [...this.listeners.keys()]) this.notify(scope);
  }
}

/** A read of a key together with the store clock's time of that read. */
export interface TimedRead {
  record: KeyRecord | null;
  now: number;
}

export interface SettleWait {
  scope: string;
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  signals: ScopeSignals;
  read: () => Promise<TimedRead>;
  /** Called once before the waiter starts sleeping (Redis: subscribe); a read follows it. */
  prepare?: () => Promise<void>;
  /** Re-read at least this often (stores shared with other processes). */
  pollMs?: number;
}

/** Resolves with the record once it is settled (completed, unknown, absent), or with the latest read at timeout/abort. */
export async function waitUntilSettled(w: SettleWait): Promise<KeyRecord | null> {
  const deadline = Date.now() + w.timeoutMs;
  let last = await w.read();
  if (isSettled(last.record) || w.timeoutMs <= 0 || w.signal?.aborted) return last.record;
  let dirty = false;
  let wake: (() => void) | undefined;
  const poke = () => {
    dirty = true;
    wake?.();
  };
  const off = w.signals.on(w.scope, poke);
  w.signal?.addEventListener('abort', poke, { once: true });
  try {
    if (w.prepare) {
      await w.prepare();
      dirty = true;
    }
    for (;;) {
      if (dirty) {
        dirty = false;
        last = await w.read();
        if (isSettled(last.record)) return last.record;
      }
      const left = deadline - Date.now();
      if (left <= 0 || w.signal?.aborted) return last.record;
      // +1: wake just after the owner's expiry, when the record already reads as expired.
      const untilExpiry = last.record ? last.record.expiresAt - last.now + 1 : left;
      const delay = Math.max(1, Math.min(left, untilExpiry, w.pollMs ?? Number.POSITIVE_INFINITY));
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          dirty = true;
          resolve();
        }, delay);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
        if (dirty) wake();
      });
      wake = undefined;
    }
  } finally {
    off();
    w.signal?.removeEventListener('abort', poke);
  }
}
