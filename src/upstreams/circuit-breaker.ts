// The circuit breaker of one upstream: after enough consecutive transport failures, calls fail fast for a while
// instead of piling onto an upstream that is down; then one probe call at a time finds out whether it is back.
//
// Only transport failures count (connection lost, upstream unreachable), never a tool reporting its own error:
// the caller decides which is which and reports through success() / failure().

export type BreakerState = 'closed' | 'open' | 'half-open';

export type BreakerCheck = { ok: true } | { ok: false; retryAfterMs: number };

export interface CircuitBreakerOptions {
  /** Consecutive transport failures that open the circuit. */
  failures: number;
  /** How long the circuit stays open before a probe is let through. */
  openMs: number;
  /**
   * How long a probe may stay unreported before another probe is allowed (default: openMs). Guards against a probe
   * whose caller never reports (cancelled, timed out), which would otherwise hold the circuit half-open forever.
   */
  probeTimeoutMs?: number;
  now?: () => number;
  onChange?: (state: BreakerState, previous: BreakerState) => void;
}

/** A caller refused while a probe runs is asked back no later than this; the probe usually settles sooner. */
const MAX_PROBE_RETRY_MS = 1000;

export class CircuitBreaker {
  onChange: ((state: BreakerState, previous: BreakerState) => void) | undefined;

  private threshold: number;
  private openMs: number;
  private probeTimeoutMs: number;
  private readonly now: () => number;

  private current: BreakerState = 'closed';
  private consecutiveFailures = 0;
  /** While open: when the first probe may go. */
  private openUntil = 0;
  /** While half-open: when the probe in flight was granted, or undefined when none is. */
  private probeSince: number | undefined;

  constructor(opts: CircuitBreakerOptions) {
    this.threshold = Math.max(1, Math.floor(opts.failures));
    this.openMs = Math.max(0, opts.openMs);
    this.probeTimeoutMs = Math.max(1, opts.probeTimeoutMs ?? opts.openMs);
    this.now = opts.now ?? Date.now;
    this.onChange = opts.onChange;
  }

  /** A live reload changed the thresholds: they apply from the next failure on. */
  retune(opts: { failures: number; openMs: number }): void {
    this.threshold = Math.max(1, Math.floor(opts.failures));
    this.openMs = Math.max(0, opts.openMs);
    this.probeTimeoutMs = Math.max(1, opts.openMs);
  }

  /** The state now; an open circuit whose openMs has passed reads as half-open. */
  get state(): BreakerState {
    this.advance(this.now());
    return this.current;
  }

  /** Ask before sending. In half-open, an `ok` is the single probe: its outcome must be reported. */
  check(): BreakerCheck {
    if (this.current === 'closed') return { ok: true };
    const now = this.now();
    this.advance(now);
    if (this.current === 'open') return { ok: false, retryAfterMs: Math.max(1, this.openUntil - now) };
    // half-open: one probe at a time
    if (this.probeSince === undefined || now - this.probeSince >= this.probeTimeoutMs) {
      this.probeSince = now;
      return { ok: true };
    }
    const probeLeft = this.probeSince + this.probeTimeoutMs - now;
    return { ok: false, retryAfterMs: Math.max(1, Math.min(probeLeft, MAX_PROBE_RETRY_MS)) };
  }

  /** The upstream answered (a tool error is an answer too). */
  success(): void {
    this.consecutiveFailures = 0;
    // A late success from a call sent before the circuit opened proves little; the probe decides.
    if (this.current === 'half-open' && this.probeSince !== undefined) this.moveTo('closed');
  }

  /** A transport failure: nothing came back from the upstream. */
  failure(): void {
    const now = this.now();
    this.advance(now);
    if (this.current === 'closed') {
      this.consecutiveFailures++;
      if (this.consecutiveFailures >= this.threshold) this.open(now);
    } else if (this.current === 'half-open' && this.probeSince !== undefined) {
      this.open(now);
    }
    // While open, failures of calls sent earlier do not extend the pause.
  }

  private open(now: number): void {
    this.openUntil = now + this.openMs;
    this.probeSince = undefined;
    this.moveTo('open');
  }

  private advance(now: number): void {
    if (this.current === 'open' && now >= this.openUntil) {
      this.probeSince = undefined;
      this.moveTo('half-open');
    }
  }

  private moveTo(state: BreakerState): void {
    const previous = this.current;
    if (previous === state) return;
    this.current = state;
    if (state === 'closed') this.consecutiveFailures = 0;
    this.onChange?.(state, previous);
  }
}
