// Admission control for one upstream: its rate cap (a GCRA bucket in the state store, shared by every replica), its
// concurrency cap (calls in flight from this replica), and the fair queue in front of both.
//
// When a call cannot go at once it waits in its agent's own FIFO lane; lanes are served by deficit round robin
// weighted by the agent's weight (drr-lanes.ts), so a flooding agent cannot starve the others. A call that would
// wait longer than queueWaitMs (or past its deadline) is turned away at once with an estimate of when a retry would
// get through. Time is read and scheduled through an injected Clock (clock.ts), so tests move it exactly.
//
// The hot path (nothing queued, a slot free) makes at most one store call and no queue bookkeeping. Otherwise a
// single dispatch loop per queue takes tokens one at a time and sleeps on one timer when the bucket refuses.
import { BusError } from '../errors.js';
import type { RateStore, TakeTokenResult } from '../store/contract.js';
import { type BucketState, takeFromBucket } from '../store/gcra.js';
import { type Clock, type ClockTimer, systemClock } from './clock.js';
import { DrrLanes, type Lane, laneWeight, type Waiter } from './drr-lanes.js';

export interface RateLimit {
  perSecond: number;
  burst: number;
}

export interface AdmissionQueueOptions {
  /** The upstream's name, for messages. */
  upstream: string;
  /** Absent: no rate cap, only the concurrency cap. */
  rate?: RateLimit;
  /** Calls in flight at once from this replica. */
  maxConcurrency: number;
  /** Longest a call may wait in the queue before it is turned away. */
  queueWaitMs: number;
  /** Calls one agent may have waiting at once; more are turned away at once. */
  maxQueuePerAgent: number;
  store: RateStore;
  /** The bucket's name in the store; replicas that share it share the rate. */
  bucket: string;
  /** Time: the real one unless a test moves its own. */
  clock?: Clock;
  /** Called on every admission with how long the call waited (0 on the fast path). */
  onWait?: (agentId: string, waitedMs: number) => void;
  /**
   * Called when the store fails to answer a token request. The queue then paces by an in-process bucket of the same
   * rate, so reads keep flowing within this replica's share instead of failing or running unbounded.
   */
  onStoreError?: (err: unknown) => void;
}

export interface AdmissionRequest {
  agentId: string;
  weight: number;
  /** Epoch ms by which the call must finish; the call never waits in the queue past it. */
  deadline: number;
  signal?: AbortSignal;
}

/** The right to send one call upstream. Release it when the call is over, however it ended. */
export interface Permit {
  /** Frees the concurrency slot; calling it again does nothing. */
  release(): void;
}

export interface AdmissionSnapshot {
  inFlight: number;
  queued: number;
  perAgent: Record<string, { queued: number; admitted: number }>;
}

class AdmissionPermit implements Permit {
  private released = false;

  constructor(
    private readonly onRelease: (grantedAt: number) => void,
    private readonly grantedAt: number,
  ) {}

  release(): void {
    if (this.released) return;
    this.released = true;
    this.onRelease(this.grantedAt);
  }
}

/** Paces calls while the store cannot be reached: the store's own GCRA rule (gcra.ts), kept in this process. */
class LocalBucket {
  private state: BucketState | undefined;

  constructor(private readonly rate: RateLimit) {}

  take(now: number): TakeTokenResult {
    const { result, next } = takeFromBucket(this.state, now, this.rate.perSecond, this.rate.burst);
    if (next) this.state = next;
    return result;
  }
}

/** setTimeout's largest delay; a longer one would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Smoothing of the observed call duration used to estimate waits when the concurrency cap is what binds. */
const SERVICE_EWMA = 0.2;

export class AdmissionQueue {
  readonly upstream: string;
  private rate: RateLimit | undefined;
  private intervalMs: number;
  private maxConcurrency: number;
  private queueWaitMs: number;
  private maxQueuePerAgent: number;
  private readonly store: RateStore;
  private readonly bucket: string;
  private readonly clock: Clock;
  private readonly onWait: ((agentId: string, waitedMs: number) => void) | undefined;
  private readonly onStoreError: ((err: unknown) => void) | undefined;
  private fallback: LocalBucket | undefined;

  private inFlight = 0;
  /** The calls waiting, one lane per agent. */
  private readonly lanes = new DrrLanes<Permit>();

  /** Upstream pushback (429 / Retry-After): nothing goes before this. */
  private pausedUntil = 0;
  /** The bucket refused a token: asking again before this would be refused too. */
  private rateFreeAt = 0;
  /** max(pausedUntil, rateFreeAt), kept so the fast path reads one field. */
  private holdUntil = 0;

  private pumping = false;
  private timer: ClockTimer | undefined;
  private timerAt = 0;
  /** Mean time a permit is held, learned from releases; 0 until the first release. */
  private serviceMs = 0;
  private closed: Error | undefined;

  constructor(opts: AdmissionQueueOptions) {
    this.upstream = opts.upstream;
    this.rate = opts.rate;
    this.intervalMs = opts.rate ? 1000 / opts.rate.perSecond : 0;
    this.maxConcurrency = Math.max(1, Math.floor(opts.maxConcurrency));
    this.queueWaitMs = opts.queueWaitMs;
    this.maxQueuePerAgent = Math.max(0, Math.floor(opts.maxQueuePerAgent));
    this.store = opts.store;
    this.bucket = opts.bucket;
    this.clock = opts.clock ?? systemClock;
    this.onWait = opts.onWait;
    this.onStoreError = opts.onStoreError;
    this.fallback = opts.rate ? new LocalBucket(opts.rate) : undefined;
  }

  /**
   * A live reload changed the upstream's rate cap, concurrency cap or queue limits: they apply from the next
   * admission on. Waiting calls keep their place; permits held stay valid.
   */
  retune(opts: Pick<AdmissionQueueOptions, 'rate' | 'maxConcurrency' | 'queueWaitMs' | 'maxQueuePerAgent'>): void {
    const rateChanged = JSON.stringify(opts.rate) !== JSON.stringify(this.rate);
    this.rate = opts.rate;
    this.intervalMs = opts.rate ? 1000 / opts.rate.perSecond : 0;
    this.maxConcurrency = Math.max(1, Math.floor(opts.maxConcurrency));
    this.queueWaitMs = opts.queueWaitMs;
    this.maxQueuePerAgent = Math.max(0, Math.floor(opts.maxQueuePerAgent));
    if (rateChanged) {
      // The old bucket's refusal says nothing about the new cap.
      this.fallback = opts.rate ? new LocalBucket(opts.rate) : undefined;
      this.rateFreeAt = 0;
      this.holdUntil = this.pausedUntil;
    }
    this.pump();
  }

  /**
   * Resolves when the call may go: a rate token was taken and a concurrency slot is held. Rejects with a
   * `rate_limited` BusError (queue_full, queue_wait_exceeded, rate_paused) or, when aborted, with the signal's reason.
   */
  admit(req: AdmissionRequest): Promise<Permit> {
    if (req.signal?.aborted) return Promise.reject(req.signal.reason);
    if (this.closed) return Promise.reject(this.closed);
    const now = this.clock.now();
    const lane = this.lanes.laneOf(req.agentId, req.weight, now);
    if (this.lanes.size === 0 && this.inFlight < this.maxConcurrency && now >= this.holdUntil) {
      this.inFlight++;
      if (!this.rate) return Promise.resolve(this.fastGrant(lane, req.agentId, now));
      const fastLane = lane;
      return this.store.takeToken(this.bucket, this.rate.perSecond, this.rate.burst).then(
        (taken) => this.afterFastToken(taken, fastLane, req, now),
        (err: unknown) => {
          this.onStoreError?.(err);
          return this.afterFastToken(this.fallback!.take(this.clock.now()), fastLane, req, now);
        },
      );
    }
    return this.enqueue(lane, req, now);
  }

  /**
   * A permit now, without waiting and without the store, or undefined: only when the upstream has no rate cap,
   * nothing is queued, a slot is free and nothing holds the queue. Lets a write persist `dispatched` in the same
   * store step as its claim, knowing nothing stands between that step and the upstream.
   */
  tryAdmitNow(agentId: string, weight: number): Permit | undefined {
    const now = this.clock.now();
    if (
      this.rate ||
      this.closed ||
      this.lanes.size > 0 ||
      this.inFlight >= this.maxConcurrency ||
      now < this.holdUntil
    ) {
      return undefined;
    }
    this.inFlight++;
    return this.fastGrant(this.lanes.laneOf(agentId, weight, now), agentId, now);
  }

  /** Upstream pushback (429 / Retry-After): admit nothing for `ms`, here at once and in every replica via the store. */
  pause(ms: number): void {
    if (!(ms > 0)) return;
    const until = this.clock.now() + ms;
    if (until > this.pausedUntil) {
      this.pausedUntil = until;
      this.holdUntil = Math.max(this.holdUntil, until);
    }
    // Without a rate the bucket is never read, so only this replica's pause would matter.
    if (this.rate) this.store.pauseBucket(this.bucket, ms).catch((err: unknown) => this.onStoreError?.(err));
  }

  snapshot(): AdmissionSnapshot {
    return { inFlight: this.inFlight, queued: this.lanes.size, perAgent: this.lanes.perAgent() };
  }

  /** Turns away every waiting call (default: upstream_unavailable) and every later one; permits held stay valid. */
  close(reason?: Error): void {
    if (this.closed) return;
    this.closed =
      reason ??
      new BusError('upstream_unavailable', 'upstream_closing', `Upstream ${this.upstream} is shutting down.`, {
        retryAfterMs: 1000,
      });
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    for (const waiter of this.lanes.waiting()) {
      this.remove(waiter);
      waiter.reject(this.closed);
    }
  }

  // ---- fast path ----

  private fastGrant(lane: Lane<Permit>, agentId: string, now: number): Permit {
    lane.admitted++;
    this.onWait?.(agentId, 0);
    return new AdmissionPermit(this.onRelease, now);
  }

  private afterFastToken(
    taken: TakeTokenResult,
    lane: Lane<Permit>,
    req: AdmissionRequest,
    arrivedAt: number,
  ): Promise<Permit> {
    if (taken.ok) {
      if (req.signal?.aborted) {
        // The token is spent; the slot is not.
        this.inFlight--;
        if (this.lanes.size > 0) this.pump();
        throw req.signal.reason;
      }
      return Promise.resolve(this.fastGrant(lane, req.agentId, this.clock.now()));
    }
    this.inFlight--;
    this.holdForRate(taken.retryAfterMs);
    return this.enqueue(lane, req, arrivedAt);
  }

  // ---- queue ----

  private enqueue(lane: Lane<Permit>, req: AdmissionRequest, arrivedAt: number): Promise<Permit> {
    if (this.closed) return Promise.reject(this.closed);
    const now = this.clock.now();
    const weight = laneWeight(req.weight);
    lane.weight = weight;
    const position = lane.waiters.length;
    const budget = Math.min(this.queueWaitMs - (now - arrivedAt), req.deadline - now);
    if (position >= this.maxQueuePerAgent) {
      return Promise.reject(
        this.turnAway(
          'queue_full',
          `Agent ${req.agentId} already has ${position} calls waiting for ${this.upstream}.`,
          lane,
          position,
          now,
        ),
      );
    }
    const estimate = this.estimateWaitMs(lane, position, now);
    if (budget <= 0 || estimate > budget) {
      return Promise.reject(this.turnAway(this.waitCode(now), this.waitMessage(budget, estimate), lane, position, now));
    }

    return new Promise<Permit>((resolve, reject) => {
      const waiter: Waiter<Permit> = {
        lane,
        arrivedAt,
        signal: req.signal,
        resolve,
        reject,
        timer: undefined,
        onAbort: undefined,
      };
      waiter.timer = this.clock.setTimeout(() => this.expire(waiter), Math.min(Math.ceil(budget), MAX_TIMER_MS));
      if (req.signal) {
        const signal = req.signal;
        waiter.onAbort = () => {
          if (this.remove(waiter)) reject(signal.reason);
        };
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.lanes.push(waiter);
      this.pump();
    });
  }

  /** A waiter's budget ran out: it leaves with an estimate for its place in line as it stands now. */
  private expire(waiter: Waiter<Permit>): void {
    waiter.timer = undefined;
    const position = waiter.lane.waiters.indexOf(waiter);
    if (position < 0) return;
    const now = this.clock.now();
    const err = this.turnAway(
      this.waitCode(now),
      `Waited ${now - waiter.arrivedAt} ms in the queue for ${this.upstream} without getting through.`,
      waiter.lane,
      position,
      now,
    );
    this.remove(waiter);
    waiter.reject(err);
  }

  private remove(waiter: Waiter<Permit>): boolean {
    if (!this.lanes.remove(waiter)) return false;
    this.settle(waiter);
    return true;
  }

  private settle(waiter: Waiter<Permit>): void {
    if (waiter.timer) this.clock.clearTimeout(waiter.timer);
    if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
  }

  private pump(): void {
    if (this.pumping || this.closed) return;
    this.pumping = true;
    void this.dispatch();
  }

  /** The one dispatch loop of this queue: never two at once (pump guards it), never spinning (it sleeps on holds). */
  private async dispatch(): Promise<void> {
    try {
      while (this.lanes.size > 0 && this.inFlight < this.maxConcurrency && !this.closed) {
        const now = this.clock.now();
        if (now < this.holdUntil) {
          this.wakeAfter(this.holdUntil - now);
          return;
        }
        // The slot is held while the token is fetched, so a release cannot hand it out twice.
        this.inFlight++;
        if (this.rate) {
          const taken = await this.takeToken(this.rate);
          if (!taken.ok) {
            this.inFlight--;
            this.holdForRate(taken.retryAfterMs);
            continue;
          }
        }
        const waiter = this.lanes.next();
        if (!waiter) {
          // Every waiter left while the token was on its way; the token is lost, never the slot.
          this.inFlight--;
          return;
        }
        this.grant(waiter);
      }
    } finally {
      this.pumping = false;
    }
  }

  private takeToken(rate: RateLimit): Promise<TakeTokenResult> {
    return this.store.takeToken(this.bucket, rate.perSecond, rate.burst).catch((err: unknown) => {
      this.onStoreError?.(err);
      return this.fallback!.take(this.clock.now());
    });
  }

  private grant(waiter: Waiter<Permit>): void {
    this.settle(waiter);
    const now = this.clock.now();
    waiter.lane.admitted++;
    this.onWait?.(waiter.lane.agentId, now - waiter.arrivedAt);
    waiter.resolve(new AdmissionPermit(this.onRelease, now));
  }

  private readonly onRelease = (grantedAt: number): void => {
    this.inFlight--;
    const held = this.clock.now() - grantedAt;
    this.serviceMs = this.serviceMs === 0 ? held : this.serviceMs + SERVICE_EWMA * (held - this.serviceMs);
    if (this.lanes.size > 0) this.pump();
  };

  private holdForRate(retryAfterMs: number): void {
    // At least 1 ms, so a bucket that answers "0 ms" cannot make the loop spin.
    const until = this.clock.now() + Math.max(1, retryAfterMs);
    if (until > this.rateFreeAt) this.rateFreeAt = until;
    this.holdUntil = Math.max(this.pausedUntil, this.rateFreeAt);
  }

  private wakeAfter(ms: number): void {
    const at = this.clock.now() + ms;
    if (this.timer && this.timerAt <= at) return;
    this.clock.clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = this.clock.setTimeout(this.onTimer, Math.max(1, Math.ceil(ms)));
  }

  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.pump();
  };

  // ---- estimates ----

  /** When the call at `position` would be dispatched: paced by the bucket, or by slots freeing at the observed rate. */
  private estimateWaitMs(lane: Lane<Permit>, position: number, now: number): number {
    const ahead = this.lanes.callsAhead(lane, position);
    const hold = Math.max(0, this.holdUntil - now);
    const rateWait = hold + ahead * this.intervalMs;
    const slotsNeeded = ahead + 1 - (this.maxConcurrency - this.inFlight);
    const slotWait = slotsNeeded > 0 ? (slotsNeeded * this.serviceMs) / this.maxConcurrency : 0;
    return Math.max(rateWait, slotWait);
  }

  /**
   * A call turned away is told to come back when what stands ahead of it now has gone through. Calls turned away
   * together hold no place in line, so telling them all the same moment would bring them back as a herd that mostly
   * fails again: each call of an agent is promised a moment one "fair share" after the previous promise, the share
   * being the agent's weight among the agents seen lately. Retries then return at the pace DRR will serve them.
   */
  private turnAway(code: string, message: string, lane: Lane<Permit>, position: number, now: number): BusError {
    let retryAfterMs = this.estimateWaitMs(lane, position, now);
    // One dispatch's worth of time: a token's interval, or one slot's share of a call's duration.
    const unit = this.rate ? this.intervalMs : this.serviceMs / this.maxConcurrency;
    if (unit > 0) {
      const spacing = (unit * this.lanes.contendingWeight(lane, now)) / lane.weight;
      let at = now + Math.max(retryAfterMs, unit);
      if (at < lane.retryHorizon + spacing) at = lane.retryHorizon + spacing;
      lane.retryHorizon = at;
      retryAfterMs = at - now;
    } else if (retryAfterMs <= 0) {
      // Nothing observed yet (no rate, no call finished): a guess bounded by what the caller would have waited.
      retryAfterMs = Math.min(this.queueWaitMs, 1000);
    }
    return new BusError('rate_limited', code, message, { retryAfterMs: Math.max(1, retryAfterMs) });
  }

  private waitCode(now: number): string {
    return now < this.pausedUntil ? 'rate_paused' : 'queue_wait_exceeded';
  }

  private waitMessage(budget: number, estimate: number): string {
    const why =
      budget <= 0 ? 'no time is left before its deadline' : `it may wait at most ${Math.max(0, Math.round(budget))} ms`;
    return `The call would wait about ${Math.round(estimate)} ms for ${this.upstream}, but ${why}.`;
  }
}
