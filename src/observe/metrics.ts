// Prometheus metrics (prom-client), one registry per bus. Labels are tool, upstream, agent and outcome names from
// config and catalog: never argument values, keys or secrets.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/** Live values read when /metrics is scraped, so the gauges are always true. */
export interface LiveGauges {
  sessions: () => number;
  upstreams: () => Iterable<{ name: string; queued: number; inFlight: number }>;
}

export class Metrics {
  readonly registry = new Registry();
  private live: LiveGauges | undefined;
  private readonly calls = new Counter({
    name: 'toolbus_calls_total',
    help: 'Tool calls by tool and outcome (ok, replayed, joined, or an error category)',
    labelNames: ['tool', 'outcome'] as const,
    registers: [this.registry],
  });
  private readonly latency = new Histogram({
    name: 'toolbus_call_duration_seconds',
    help: 'Tool call latency at the bus, by tool',
    labelNames: ['tool'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  private readonly replays = new Counter({
    name: 'toolbus_replays_total',
    help: 'Idempotent replays served from the store',
    labelNames: ['tool'] as const,
    registers: [this.registry],
  });
  private readonly joins = new Counter({
    name: 'toolbus_joins_total',
    help: 'Calls that joined a running call with the same key',
    labelNames: ['tool'] as const,
    registers: [this.registry],
  });
  private readonly mismatches = new Counter({
    name: 'toolbus_idempotency_mismatches_total',
    help: 'Keys reused with other arguments',
    labelNames: ['tool'] as const,
    registers: [this.registry],
  });
  private readonly leaseWaits = new Histogram({
    name: 'toolbus_lease_wait_seconds',
    help: 'Time writes waited for their leases, by upstream',
    labelNames: ['upstream'] as const,
    buckets: [0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  private readonly queueWaits = new Histogram({
    name: 'toolbus_queue_wait_seconds',
    help: 'Time calls waited in the fair queue, by upstream',
    labelNames: ['upstream'] as const,
    buckets: [0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  /** Upstream OAuth: token requests (refreshes, client-credentials grants) made by this replica. */
  readonly upstreamTokenRequests = new Counter({
    name: 'toolbus_upstream_token_requests_total',
    help: 'OAuth token requests (refresh or client credentials) this replica made, by upstream',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  });
  private readonly queueDepth = new Gauge({
    name: 'toolbus_queue_depth',
    help: 'Calls waiting in the fair queue, by upstream',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
    collect: () => this.collectUpstreams(),
  });
  private readonly inFlight = new Gauge({
    name: 'toolbus_calls_in_flight',
    help: 'Calls admitted to an upstream and not yet answered',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
    collect: () => this.collectUpstreams(),
  });
  private readonly restarts = new Counter({
    name: 'toolbus_upstream_restarts_total',
    help: 'Upstream connection restarts',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  });
  readonly upstreamUp = new Gauge({
    name: 'toolbus_upstream_up',
    help: '1 while the upstream connection is ready',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  });
  private readonly sessions = new Gauge({
    name: 'toolbus_agent_sessions',
    help: 'Open stateful agent sessions',
    registers: [this.registry],
    collect: () => {
      if (this.live) this.sessions.set(this.live.sessions());
    },
  });

  private readonly agentCalls = new Counter({
    name: 'toolbus_agent_calls_total',
    help: 'Tool calls by agent and outcome',
    labelNames: ['agent', 'outcome'] as const,
    registers: [this.registry],
  });
  private readonly breakerTransitions = new Counter({
    name: 'toolbus_circuit_breaker_transitions_total',
    help: 'Circuit breaker state changes, by upstream and the state entered',
    labelNames: ['upstream', 'state'] as const,
    registers: [this.registry],
  });
  private readonly breakerState = new Gauge({
    name: 'toolbus_circuit_breaker_open',
    help: 'Circuit breaker state by upstream: 0 closed, 0.5 half-open, 1 open',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  /** Where the live gauges (sessions, queue depth, calls in flight) read their values at scrape time. */
  watchLive(live: LiveGauges): void {
    this.live = live;
  }

  private collectUpstreams(): void {
    if (!this.live) return;
    this.queueDepth.reset();
    this.inFlight.reset();
    for (const u of this.live.upstreams()) {
      this.queueDepth.set({ upstream: u.name }, u.queued);
      this.inFlight.set({ upstream: u.name }, u.inFlight);
    }
  }

  /** Counts requests to a remote store (Redis), read from the store when scraped. */
  watchStore(roundTrips: () => number | undefined): void {
    new Counter({
      name: 'toolbus_store_round_trips_total',
      help: 'Requests sent to the state store (remote stores only)',
      registers: [this.registry],
      collect() {
        const n = roundTrips();
        if (n !== undefined) {
          this.reset();
          this.inc(n);
        }
      },
    });
  }

  call(tool: string, outcome: string, seconds: number): void {
    this.calls.inc({ tool, outcome });
    this.latency.observe({ tool }, seconds);
    if (outcome === 'idempotency_mismatch') this.mismatches.inc({ tool });
  }
  agentCall(agent: string, outcome: string): void {
    this.agentCalls.inc({ agent, outcome });
  }
  breaker(upstream: string, state: 'closed' | 'open' | 'half-open'): void {
    this.breakerTransitions.inc({ upstream, state });
    this.breakerState.set({ upstream }, state === 'open' ? 1 : state === 'half-open' ? 0.5 : 0);
  }
  replay(tool: string): void {
    this.replays.inc({ tool });
  }
  join(tool: string): void {
    this.joins.inc({ tool });
  }
  leaseWait(upstream: string, ms: number): void {
    this.leaseWaits.observe({ upstream }, ms / 1000);
  }
  queueWait(upstream: string, ms: number): void {
    this.queueWaits.observe({ upstream }, ms / 1000);
  }
  restart(upstream: string): void {
    this.restarts.inc({ upstream });
  }
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
