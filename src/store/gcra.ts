// GCRA (generic cell rate algorithm) for the in-process stores; the Redis rate script computes the same on Redis'
// clock. A bucket is its theoretical arrival time (tat) plus a pause-until set by upstream pushback.
//
// With interval I = 1000/perSecond and burst B, a call at `now` is admitted when max(tat, now) + I - B·I <= now, and
// then tat becomes max(tat, now) + I. That admits B calls at once and one per I after, so any window T sees at most
// B + perSecond·T calls. A refused call changes nothing and learns the exact wait until it would be admitted.
//
// A pause admits nothing until it ends and then restarts at the steady rate, not with a full burst: the upstream that
// just pushed back is not hit by B calls at once. It is folded in as tat >= pausedUntil + (B-1)·I.
import type { TakeTokenResult } from './contract.js';

export interface BucketState {
  tat: number;
  pausedUntil: number;
}

export function takeFromBucket(
  state: BucketState | undefined,
  now: number,
  perSecond: number,
  burst: number,
): { result: TakeTokenResult; next?: BucketState } {
  if (!(perSecond > 0)) return { result: { ok: false, retryAfterMs: 1000 } };
  const interval = 1000 / perSecond;
  const size = Math.max(1, Math.floor(burst));
  const pausedUntil = state?.pausedUntil ?? 0;
  const tat = Math.max(state?.tat ?? 0, pausedUntil > 0 ? pausedUntil + (size - 1) * interval : 0);
  const next = Math.max(tat, now) + interval;
  const admitAt = next - size * interval;
  if (admitAt > now) return { result: { ok: false, retryAfterMs: Math.max(1, Math.ceil(admitAt - now)) } };
  return { result: { ok: true }, next: { tat: next, pausedUntil } };
}

export function pauseBucketState(state: BucketState | undefined, now: number, ms: number): BucketState {
  return { tat: state?.tat ?? 0, pausedUntil: Math.max(state?.pausedUntil ?? 0, now + Math.max(0, ms)) };
}

/** After this instant the bucket is as good as new and its state can be dropped. */
export function bucketIdleAt(state: BucketState): number {
  return Math.max(state.tat, state.pausedUntil);
}
