// Who goes next in an admission queue (fair-queue.ts): one FIFO lane per agent, served by deficit round robin
// weighted by the agent's weight, so a flooding agent cannot starve the others. Also what the lanes say about a
// waiting call's chances: how many calls go before it, and how much weight contends with its agent lately.
// When anything may go at all (rate, concurrency, holds) is the queue's business, not this file's.
import type { ClockTimer } from './clock.js';

/** A call waiting in its agent's lane; the queue resolves or rejects it. */
export interface Waiter<P> {
  readonly lane: Lane<P>;
  readonly arrivedAt: number;
  readonly signal: AbortSignal | undefined;
  resolve: (permit: P) => void;
  reject: (err: unknown) => void;
  timer: ClockTimer | undefined;
  onAbort: (() => void) | undefined;
}

/** One agent's FIFO and its deficit-round-robin state. Lanes outlive their calls so `admitted` keeps counting. */
export interface Lane<P> {
  readonly agentId: string;
  weight: number;
  /** Calls this lane may still send in its current turn; each call costs 1, each turn adds `weight`. */
  deficit: number;
  readonly waiters: Waiter<P>[];
  admitted: number;
  /** Last time this agent asked; agents seen lately share the budget promised to turned-away calls. */
  lastSeen: number;
  /** The latest retry time promised to a call of this lane that was turned away. */
  retryHorizon: number;
}

/** Below this weight a lane's turns would mostly be idle; treat it as this small instead. */
const MIN_WEIGHT = 1e-3;
/** Agents that asked within this window count as contending when spacing out retries. */
const RECENT_MS = 1000;

export function laneWeight(weight: number): number {
  return Number.isFinite(weight) && weight > MIN_WEIGHT ? weight : weight > 0 ? MIN_WEIGHT : 1;
}

export class DrrLanes<P> {
  private readonly lanes = new Map<string, Lane<P>>();
  /** Lanes with waiters, in round-robin order; `cursor` is the lane whose turn it is. */
  private readonly active: Lane<P>[] = [];
  private cursor = 0;
  private turnStarted = false;
  /** Waiters in every lane. */
  size = 0;

  /** The agent's lane (made on first use), marked as seen now. */
  laneOf(agentId: string, weight: number, now: number): Lane<P> {
    let lane = this.lanes.get(agentId);
    if (!lane) {
      lane = {
        agentId,
        weight: laneWeight(weight),
        deficit: 0,
        waiters: [],
        admitted: 0,
        lastSeen: now,
        retryHorizon: 0,
      };
      this.lanes.set(agentId, lane);
    }
    lane.lastSeen = now;
    return lane;
  }

  /** Puts a waiter at the end of its lane. */
  push(waiter: Waiter<P>): void {
    if (waiter.lane.waiters.push(waiter) === 1) this.active.push(waiter.lane);
    this.size++;
  }

  /** Takes a waiter out of its lane (it left: aborted, expired, turned away); false if it was not there. */
  remove(waiter: Waiter<P>): boolean {
    const lane = waiter.lane;
    const i = lane.waiters.indexOf(waiter);
    if (i < 0) return false;
    lane.waiters.splice(i, 1);
    this.size--;
    if (lane.waiters.length === 0) this.deactivate(lane);
    return true;
  }

  /** Deficit round robin: the lane whose turn it is sends while its deficit lasts, then the turn moves on. */
  next(): Waiter<P> | undefined {
    const active = this.active;
    let idleVisits = 0;
    while (active.length > 0) {
      if (this.cursor >= active.length) this.cursor = 0;
      const lane = active[this.cursor]!;
      if (!this.turnStarted) {
        lane.deficit += lane.weight;
        this.turnStarted = true;
      }
      if (lane.deficit >= 1) {
        lane.deficit -= 1;
        const waiter = lane.waiters.shift()!;
        this.size--;
        if (lane.waiters.length === 0) this.deactivate(lane);
        return waiter;
      }
      this.cursor++;
      this.turnStarted = false;
      if (++idleVisits >= active.length) {
        this.skipIdleRounds();
        idleVisits = 0;
      }
    }
    return undefined;
  }

  /** Every waiting call, lane by lane. */
  waiting(): Waiter<P>[] {
    return this.active.flatMap((lane) => [...lane.waiters]);
  }

  /**
   * How many dispatches go before the call at `position` of `lane`, if nothing else arrives: its own lane's earlier
   * calls plus, from every other backlogged lane, the share DRR serves while this lane sends position + 1.
   */
  callsAhead(lane: Lane<P>, position: number): number {
    let ahead = position;
    const rounds = position + 0.5;
    for (const other of this.active) {
      if (other !== lane) ahead += Math.min(other.waiters.length, (rounds * other.weight) / lane.weight);
    }
    return ahead;
  }

  /** The weight of the lane and of every agent waiting or seen within RECENT_MS. */
  contendingWeight(lane: Lane<P>, now: number): number {
    let total = lane.weight;
    for (const other of this.lanes.values()) {
      if (other !== lane && (other.waiters.length > 0 || now - other.lastSeen <= RECENT_MS)) total += other.weight;
    }
    return total;
  }

  perAgent(): Record<string, { queued: number; admitted: number }> {
    const out: Record<string, { queued: number; admitted: number }> = {};
    for (const lane of this.lanes.values())
      out[lane.agentId] = { queued: lane.waiters.length, admitted: lane.admitted };
    return out;
  }

  private deactivate(lane: Lane<P>): void {
    const i = this.active.indexOf(lane);
    if (i < 0) return;
    this.active.splice(i, 1);
    lane.deficit = 0;
    if (i < this.cursor) this.cursor--;
    else if (i === this.cursor) this.turnStarted = false;
  }

  /** A whole round sent nothing (every weight below 1): credit the rounds that would pass idle, all at once. */
  private skipIdleRounds(): void {
    let rounds = Number.POSITIVE_INFINITY;
    for (const lane of this.active) rounds = Math.min(rounds, Math.ceil((1 - lane.deficit) / lane.weight) - 1);
    if (rounds > 0 && Number.isFinite(rounds)) for (const lane of this.active) lane.deficit += rounds * lane.weight;
  }
}
