// Prometheus gauges and counters for upstream sessions, read at scrape time from the units: how many sessions each
// upstream has alive (1 for a shared upstream), its cap, and how many were opened and closed (idle or evicted).
// Labels are upstream names only; session keys (agent ids, tenants) would make unbounded label sets.
import { Counter, Gauge, type Registry } from 'prom-client';
import type { UpstreamUnit } from './upstream-unit.js';

export function watchSessions(registry: Registry, units: () => Iterable<UpstreamUnit>): void {
  new Gauge({
    name: 'toolbus_upstream_sessions',
    help: 'Upstream sessions alive (processes for stdio), by upstream; the listing session of per-agent modes aside',
    labelNames: ['upstream', 'sharing'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const u of units()) this.set({ upstream: u.name, sharing: u.sharing }, u.sessionCount);
    },
  });
  new Gauge({
    name: 'toolbus_upstream_max_sessions',
    help: 'Cap on upstream sessions alive per replica (maxSessions)',
    labelNames: ['upstream'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const u of units()) this.set({ upstream: u.name }, u.maxSessions);
    },
  });
  new Counter({
    name: 'toolbus_upstream_sessions_closed_total',
    help: 'Upstream sessions closed, by reason (idle: sessionIdleMs without calls; evicted: made room at maxSessions)',
    labelNames: ['upstream', 'reason'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const u of units()) {
        const c = u.sessionCounts;
        this.inc({ upstream: u.name, reason: 'idle' }, c.idle);
        this.inc({ upstream: u.name, reason: 'evicted' }, c.evicted);
      }
    },
  });
  new Counter({
    name: 'toolbus_upstream_sessions_opened_total',
    help: 'Upstream sessions opened (the first call of an agent or tenant, or the first after its session closed)',
    labelNames: ['upstream'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const u of units()) this.inc({ upstream: u.name }, u.sessionCounts.opened);
    },
  });
}
