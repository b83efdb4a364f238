// What the dashboard shows, gathered from the running parts. Argument values never appear: tool names, agent ids and
// counts do, and a lease scope (which holds argument values, e.g. `payments:card:4111...`) is shown as its upstream
// and a short hash unless the viewer is an admin.
import { createHash } from 'node:crypto';
import type { RecentEvent } from '../observe/recent.js';
import type { AgentIdentity } from '../pipeline/context.js';
import type { CallInFlight } from '../pipeline/pipeline.js';
import type { StateStore } from '../store/contract.js';
import type { UpstreamUnit } from '../upstreams/upstream-unit.js';

export interface SnapshotSources {
  replicaId: string;
  store: StateStore;
  storeHealthy: () => boolean;
  agents: () => AgentIdentity[];
  sessionsOf: (agentId: string) => number;
  runtimes: () => Iterable<UpstreamUnit>;
  toolCount: (upstream: string) => number;
  inFlight: ReadonlyMap<string, CallInFlight>;
  recent: () => RecentEvent[];
}

/** `tickets:ticket:4711` → `tickets:#1f0c9a2b` (the upstream prefix stays readable; the rest is argument values). */
export function maskScope(scope: string): string {
  const colon = scope.indexOf(':');
  const upstream = colon === -1 ? scope : scope.slice(0, colon);
  if (colon === -1) return scope;
  return `${upstream}:#${createHash('sha256').update(scope).digest('hex').slice(0, 8)}`;
}

export async function dashboardSnapshot(src: SnapshotSources, admin: boolean): Promise<Record<string, unknown>> {
  let leases: Awaited<ReturnType<StateStore['listLeases']>> = [];
  let storeOk = true;
  try {
    leases = await src.store.listLeases();
  } catch {
    storeOk = false;
  }
  const now = Date.now();
  return {
    replica: src.replicaId,
    admin,
    store: { kind: src.store.kind, ok: storeOk && src.storeHealthy() },
    agents: src.agents().map((a) => ({ id: a.id, tenant: a.tenant, weight: a.weight, sessions: src.sessionsOf(a.id) })),
    upstreams: [...src.runtimes()].map((r) => ({
      name: r.name,
      state: r.connection.state,
      pid: r.connection.pid ?? null,
      restarts: r.connection.restartCount,
      breaker: r.breaker.state,
      tools: src.toolCount(r.name),
      ...r.queue.snapshot(),
      // per-agent/per-tenant: one line per live session (keyed by agent id or tenant, both shown above anyway).
      sharing: r.sharing,
      protocols: r.connection.revisions,
      sessions: { live: r.sessionCount, max: r.maxSessions, list: r.sessionList() },
    })),
    // A holder on this replica is shown as its agent and tool; one on another replica by its owner id.
    leases: leases.slice(0, 200).map((l) => {
      const call = src.inFlight.get(l.holder);
      const shown = { ...l, scope: admin ? l.scope : maskScope(l.scope) };
      return call ? { ...shown, agent: call.agent, tool: call.tool } : shown;
    }),
    calls: [...src.inFlight.values()].slice(0, 100).map((c) => ({ ...c, ms: now - c.startedAt })),
    recent: src.recent().slice(0, 50),
  };
}
