// A clock that moves only when the test says so (src/pipeline/clock.ts): time-dependent behaviour is then checked to
// the millisecond instead of with sleeps and generous bounds.
import type { Clock, ClockTimer } from '../../src/pipeline/clock.js';

interface Scheduled {
  at: number;
  fn: () => void;
}

type FakeTimer = { readonly __timer: true; readonly id: number };

/** Lets pending promise continuations run (a real turn of the event loop; no time passes on the fake clock). */
export const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class FakeClock implements Clock {
  private t: number;
  private seq = 0;
  private readonly timers = new Map<number, Scheduled>();

  constructor(start = 1_700_000_000_000) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): ClockTimer {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    const timer: FakeTimer = { __timer: true, id };
    return timer;
  }

  clearTimeout(timer: ClockTimer | undefined): void {
    if (timer && '__timer' in timer) this.timers.delete((timer as FakeTimer).id);
  }

  /** Timers still pending. */
  get pending(): number {
    return this.timers.size;
  }

  /**
   * Moves time forward by `ms`: every timer due meanwhile fires at its own moment, in order, and the promise chains
   * it starts settle before the next one fires.
   */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await settle();
      let nextId: number | undefined;
      let next: Scheduled | undefined;
      for (const [id, s] of this.timers) {
        if (s.at <= end && (!next || s.at < next.at)) {
          nextId = id;
          next = s;
        }
      }
      if (!next || nextId === undefined) break;
      this.timers.delete(nextId);
      this.t = next.at;
      next.fn();
    }
    this.t = end;
    await settle();
  }
}
