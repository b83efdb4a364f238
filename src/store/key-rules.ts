// The rules of an idempotency record as pure functions of (stored row, request, store-clock now), shared by the
// in-process stores (memory, SQLite). The Redis Lua scripts in redis-scripts.ts implement the same rules; the
// contract suite holds all three to them.
//
// Expiry is judged lazily, so no timer has to run for a record to change state:
// - a `claimed` row past its expiresAt belongs to a dead owner: it reads as absent and the next claim takes it over
//   (fence + 1) while the row lingers (CLAIM_LINGER_MS), or starts afresh (fence 1) once it is gone;
// - a `dispatched` row past its expiresAt E reads as `unknown` until E + its unknown TTL, then as absent;
// - `completed`/`unknown` rows past their expiresAt read as absent.
import type { ClaimOutcome, ClaimRequest, KeyRecord } from './contract.js';

export const DEFAULT_UNKNOWN_TTL_MS = 24 * 3600_000;
/** How long an expired claim's row is kept so that a takeover continues its fence instead of restarting at 1. */
export const CLAIM_LINGER_MS = 60_000;

/** A record as stored: the public part plus how long it lives as `unknown` should its dispatch expire. */
export interface StoredKey extends KeyRecord {
  unknownTtlMs: number;
}

export function publicRecord(row: StoredKey): KeyRecord {
  const rec: KeyRecord = {
    state: row.state,
    fingerprint: row.fingerprint,
    owner: row.owner,
    fence: row.fence,
    expiresAt: row.expiresAt,
  };
  if (row.result !== undefined) rec.result = row.result;
  return rec;
}

/** The record as callers see it at `now` (expired dispatches read as unknown; anything else expired as absent). */
export function viewKey(row: StoredKey | undefined, now: number): KeyRecord | null {
  if (!row) return null;
  if (row.expiresAt > now) return publicRecord(row);
  if (row.state !== 'dispatched') return null;
  const unknownUntil = row.expiresAt + row.unknownTtlMs;
  return unknownUntil > now ? { ...publicRecord(row), state: 'unknown', expiresAt: unknownUntil } : null;
}

/** When the stored row can be deleted: no read or claim would see it any more. */
export function rowGoneAt(row: StoredKey): number {
  if (row.state === 'claimed') return row.expiresAt + CLAIM_LINGER_MS;
  if (row.state === 'dispatched') return row.expiresAt + row.unknownTtlMs;
  return row.expiresAt;
}

export function isSettled(rec: KeyRecord | null): boolean {
  return rec === null || rec.state === 'completed' || rec.state === 'unknown';
}

/** What a claim does: the outcome, and the row to write (`undefined`: leave the stored row as it is). */
export function decideClaim(
  row: StoredKey | undefined,
  req: ClaimRequest,
  now: number,
): { outcome: ClaimOutcome; write?: StoredKey } {
  const unknownTtlMs = req.unknownTtlMs ?? DEFAULT_UNKNOWN_TTL_MS;
  const claim = (fence: number, tookOver: boolean) => ({
    outcome: { kind: 'claimed', fence, tookOver } as const,
    write: {
      state: 'claimed',
      fingerprint: req.fingerprint,
      owner: req.owner,
      fence,
      expiresAt: now + req.claimTtlMs,
      unknownTtlMs,
    } satisfies StoredKey,
  });
  if (!row || now >= rowGoneAt(row)) return claim(1, false);
  // The owner died before sending: nothing went upstream, so whoever comes next runs it, with its own arguments.
  if (row.state === 'claimed' && row.expiresAt <= now) return claim(row.fence + 1, true);
  const view = viewKey(row, now);
  if (view === null) return claim(1, false);
  if (view.state === 'unknown' && req.retryUnknown && view.fingerprint === req.fingerprint) {
    return claim(row.fence + 1, true);
  }
  if (view.state !== row.state) {
    // Persist the dispatch that expired into `unknown`, so the row says what every reader already sees.
    return {
      outcome: { kind: 'existing', record: view },
      write: { ...row, state: 'unknown', expiresAt: view.expiresAt },
    };
  }
  return { outcome: { kind: 'existing', record: view } };
}

export type KeyTransition =
  | { op: 'dispatch'; ttlMs: number }
  | { op: 'renew'; ttlMs: number }
  | { op: 'complete'; result: string; ttlMs: number }
  | { op: 'unknown'; ttlMs: number }
  | { op: 'release' };

const FROM: Record<KeyTransition['op'], readonly string[]> = {
  dispatch: ['claimed'],
  renew: ['claimed', 'dispatched'],
  complete: ['claimed', 'dispatched'],
  unknown: ['dispatched'],
  // A call that learns after persisting its dispatch that nothing was sent (refused before the first byte) may
  // release too.
  release: ['claimed', 'dispatched'],
};

/**
 * The compare-and-set every transition is: the row must be live, in a state the transition starts from, and owned
 * by (owner, fence). Returns the row to write, 'delete', or null when refused.
 */
export function applyTransition(
  row: StoredKey | undefined,
  owner: string,
  fence: number,
  t: KeyTransition,
  now: number,
): StoredKey | 'delete' | null {
  if (!row || row.owner !== owner || row.fence !== fence || row.expiresAt <= now) return null;
  if (!FROM[t.op].includes(row.state)) return null;
  switch (t.op) {
    case 'dispatch':
      return { ...row, state: 'dispatched', expiresAt: now + t.ttlMs };
    case 'renew':
      return { ...row, expiresAt: now + t.ttlMs };
    case 'complete':
      return { ...row, state: 'completed', result: t.result, expiresAt: now + t.ttlMs };
    case 'unknown':
      return { ...row, state: 'unknown', expiresAt: now + t.ttlMs };
    case 'release':
      return 'delete';
  }
}

/** Transitions after which a joined caller has its answer (the record left claimed/dispatched). */
export function settles(t: KeyTransition): boolean {
  return t.op === 'complete' || t.op === 'unknown' || t.op === 'release';
}
