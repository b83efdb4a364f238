// What the dashboard charts: the last few minutes of each upstream in fixed time buckets (calls, errors, a latency
// histogram for p50/p99, queue depth, lease waits), and per-agent totals since start. In-process only, bounded in
// memory (a fixed ring of buckets per upstream), fed by the call runner and a once-a-second queue sampler. Time is an
// input (`now`), so tests advance a clock instead of sleeping.

/** Latency histogram bounds (ms): geometric, 0.5 ms to about 2 min, 10% apart at worst for a quantile estimate. */
const BOUNDS: number[] = [];
for (let b = 0.5; b < 150_000; b *= 1.2) BOUNDS.push(Math.round(b * 100) / 100);

function bucketOf(ms: number): number {
  // Binary search: the first bound not below ms; the last slot holds everything larger.
  let lo = 0;
  let hi = BOUNDS.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (BOUNDS[mid]! < ms) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The latency under which `q` of the recorded calls fall (upper bound of the histogram slot), or null if none. */
export function quantile(hist: readonly number[], q: number): number | null {
  let total = 0;
  for (const n of hist) total += n;
  if (total === 0) return null;
  const rank = Math.ceil(q * total);
  let seen = 0;
  for (let i = 0; i < hist.length; i++) {
    seen += hist[i]!;
    if (seen >= rank) return BOUNDS[i] ?? BOUNDS[BOUNDS.length - 1]!;
  }
  return BOUNDS[BOUNDS.length - 1]!;
}

interface Bucket {
  start: number;
  calls: number;
  errors: number;
  hist: number[];
  queued: number;
  inFlight: number;
  leaseWaits: number;
  leaseWaitMs: number;
}

export interface CallRecord {
  upstream: string | undefined;
  agent: string;
  tool: string;
  outcome: string;
  durationMs: number;
  /** Time spent waiting for leases (0 when the call took none). */
  leaseWaitMs: number;
  code?: string;
}

export interface AgentTotals {
  calls: number;
  errors: number;
  replays: number;
  totalMs: number;
  lastAt: number;
  byOutcome: Record<string, number>;
}

export interface TimelinePoint {
  t: number;
  calls: number;
  errors: number;
  /** Calls per second over the bucket. */
  rate: number;
  p50: number | null;
  p99: number | null;
  queued: number;
  inFlight: number;
  leaseWaits: number;
}

export interface TimelineOptions {
  bucketMs?: number;
  buckets?: number;
  now?: () => number;
}

/** A lease phase longer than this was a wait for another holder, not just the store round trip. */
const LEASE_WAIT_MS = 5;

const OK_OUTCOMES = new Set(['ok', 'replayed', 'joined']);

export class Timeline {
  readonly bucketMs: number;
  private readonly size: number;
  private readonly now: () => number;
  private readonly rings = new Map<string, Bucket[]>();
  private readonly agents = new Map<string, AgentTotals>();
  private readonly lastErrors = new Map<string, { at: number; tool: string; outcome: string; code?: string }>();

  constructor(opts: TimelineOptions = {}) {
    this.bucketMs = opts.bucketMs ?? 2000;
    this.size = opts.buckets ?? 180;
    this.now = opts.now ?? Date.now;
  }

  private bucket(upstream: string): Bucket {
    const start = Math.floor(this.now() / this.bucketMs) * this.bucketMs;
    let ring = this.rings.get(upstream);
    if (!ring) {
      ring = [];
      this.rings.set(upstream, ring);
    }
    const last = ring[ring.length - 1];
    if (last && last.start === start) return last;
    const fresh: Bucket = {
      start,
      calls: 0,
      errors: 0,
      hist: new Array<number>(BOUNDS.length + 1).fill(0),
      queued: 0,
      inFlight: 0,
      leaseWaits: 0,
      leaseWaitMs: 0,
    };
    ring.push(fresh);
    // Drop what fell out of the window (a quiet upstream has gaps, filled with zeros when read).
    const oldest = start - (this.size - 1) * this.bucketMs;
    while (ring.length > 0 && ring[0]!.start < oldest) ring.shift();
    return fresh;
  }

  record(call: CallRecord): void {
    const ok = OK_OUTCOMES.has(call.outcome);
    if (call.upstream !== undefined) {
      const b = this.bucket(call.upstream);
      b.calls++;
      if (!ok) b.errors++;
      b.hist[bucketOf(call.durationMs)]!++;
      // Taking a free lease costs a store round trip; only a real wait counts.
      if (call.leaseWaitMs >= LEASE_WAIT_MS) {
        b.leaseWaits++;
        b.leaseWaitMs += call.leaseWaitMs;
      }
      if (!ok)
        this.lastErrors.set(call.upstream, {
          at: this.now(),
          tool: call.tool,
          outcome: call.outcome,
          ...(call.code ? { code: call.code } : {}),
        });
    }
    let a = this.agents.get(call.agent);
    if (!a) {
      a = { calls: 0, errors: 0, replays: 0, totalMs: 0, lastAt: 0, byOutcome: {} };
      this.agents.set(call.agent, a);
    }
    a.calls++;
    if (!ok) a.errors++;
    if (call.outcome === 'replayed' || call.outcome === 'joined') a.replays++;
    a.totalMs += call.durationMs;
    a.lastAt = this.now();
    a.byOutcome[call.outcome] = (a.byOutcome[call.outcome] ?? 0) + 1;
  }

  /** A queue sample: the bucket keeps the deepest queue and the most calls in flight seen during it. */
  sampleQueue(upstream: string, queued: number, inFlight: number): void {
    const b = this.bucket(upstream);
    b.queued = Math.max(b.queued, queued);
    b.inFlight = Math.max(b.inFlight, inFlight);
  }

  /** Every bucket of the window for one upstream, oldest first, gaps as zeros. */
  series(upstream: string): TimelinePoint[] {
    const ring = this.rings.get(upstream) ?? [];
    const end = Math.floor(this.now() / this.bucketMs) * this.bucketMs;
    const byStart = new Map(ring.map((b) => [b.start, b]));
    const out: TimelinePoint[] = [];
    for (let i = this.size - 1; i >= 0; i--) {
      const t = end - i * this.bucketMs;
      const b = byStart.get(t);
      // The current bucket is partial: its rate is over the time elapsed so far.
      const span = t === end ? Math.max(1, this.now() - t) : this.bucketMs;
      out.push(
        b
          ? {
              t,
              calls: b.calls,
              errors: b.errors,
              rate: Math.round((b.calls / span) * 1000 * 100) / 100,
              p50: quantile(b.hist, 0.5),
              p99: quantile(b.hist, 0.99),
              queued: b.queued,
              inFlight: b.inFlight,
              leaseWaits: b.leaseWaits,
            }
          : { t, calls: 0, errors: 0, rate: 0, p50: null, p99: null, queued: 0, inFlight: 0, leaseWaits: 0 },
      );
    }
    return out;
  }

  agentTotals(): Record<string, AgentTotals> {
    return Object.fromEntries([...this.agents].map(([k, v]) => [k, { ...v, byOutcome: { ...v.byOutcome } }]));
  }

  lastError(upstream: string): { at: number; tool: string; outcome: string; code?: string } | undefined {
    return this.lastErrors.get(upstream);
  }

  /** What /api/dashboard carries under `timeline`. */
  view(upstreams: readonly string[]): Record<string, unknown> {
    return {
      bucketMs: this.bucketMs,
      now: this.now(),
      upstreams: Object.fromEntries(upstreams.map((u) => [u, this.series(u)])),
      agents: this.agentTotals(),
    };
  }
}
