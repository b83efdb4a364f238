// The combined write operations (contract.ts, WriteStore) for the in-process stores: the same rules as claimKey,
// the lease table and the key transitions, applied in one step. The store runs each inside one transaction
// (SQLite) or one synchronous turn (memory), so nothing interleaves.
import type { BeginWriteOutcome, BeginWriteRequest, FinishWriteRequest } from './contract.js';
import { applyTransition, decideClaim, type StoredKey } from './key-rules.js';
import type { LocalLeases } from './local-leases.js';

export interface KeyRows {
  get(scope: string): StoredKey | undefined;
  put(scope: string, row: StoredKey): void;
}

export function beginWriteLocally(
  req: BeginWriteRequest,
  now: number,
  keys: KeyRows,
  leases: LocalLeases,
): BeginWriteOutcome {
  const { outcome, write } = decideClaim(keys.get(req.scope), req, now);
  if (outcome.kind === 'existing' || !write) {
    if (write) keys.put(req.scope, write);
    return outcome as BeginWriteOutcome;
  }
  const grants = leases.tryAcquireAll(req.leases, req.owner, req.leaseTtlMs);
  const dispatched = req.dispatch && grants !== null;
  keys.put(req.scope, dispatched ? { ...write, state: 'dispatched' } : write);
  return { ...outcome, grants, dispatched };
}

/** Completes the key (compare-and-set) and releases the grants; true when the key was completed. */
export function finishWriteLocally(req: FinishWriteRequest, now: number, keys: KeyRows, leases: LocalLeases): boolean {
  const next = applyTransition(
    keys.get(req.scope),
    req.owner,
    req.fence,
    { op: 'complete', result: req.result, ttlMs: req.ttlMs },
    now,
  );
  if (next !== null && next !== 'delete') keys.put(req.scope, next);
  for (const g of req.grants) leases.release(g);
  return next !== null;
}
