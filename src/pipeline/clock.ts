// Time for the parts whose behaviour depends on it (the admission queue's waits, holds and expiries): read and
// scheduled through one object, so a test can move time forward exactly instead of sleeping on the real one.

export interface Clock {
  /** Epoch ms. */
  now(): number;
  /** Runs `fn` once, `ms` from now; the handle cancels it. */
  setTimeout(fn: () => void, ms: number): ClockTimer;
  clearTimeout(timer: ClockTimer | undefined): void;
}

/** A pending timer of a Clock (a Node timeout on the real one). */
export type ClockTimer = { readonly __timer: true } | NodeJS.Timeout;

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (timer) => clearTimeout(timer as NodeJS.Timeout | undefined),
};
