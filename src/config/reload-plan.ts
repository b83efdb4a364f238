// What a live reload must do to the running upstreams, decided from the two configs alone: which upstreams stop,
// which start, which need a new connection (how they are reached changed) and which take a new policy in place.
// The bus carries the plan out (bus.ts, applyConfig); the log line's names come from observe/config-diff.ts.
import type { Config, UpstreamConfig } from './schema.js';

export type UpstreamAction =
  /** Not running yet: start it. */
  | 'add'
  /** How it is reached changed (command, args, env, cwd, url, headers, oauth, roots): a new connection, blue/green. */
  | 'reconnect'
  /** Only policy changed (tools, caps, waits, timeouts, breaker): applied in place, the process kept. */
  | 'retune';

export interface ReloadPlan {
  /** Upstreams no longer configured: they stop, and their tools go at once. */
  removed: string[];
  /** Upstreams to act on, in the new config's order; unchanged ones are left out. */
  upstreams: { name: string; action: UpstreamAction }[];
  /** What changed for the log line, besides the upstreams: sections that need a restart, agents, limits. */
  notes: string[];
}

/** How an upstream is reached: a change here needs a new connection; anything else is policy, applied in place. */
export function reachOf(u: UpstreamConfig): string {
  const {
    tools,
    rateLimit,
    maxConcurrency,
    timeoutMs,
    progressExtendsUpTo,
    trustAnnotations,
    queueWaitMs,
    maxQueuePerAgent,
    leaseWaitMs,
    circuitBreaker,
    restart,
    connectTimeoutMs,
    ...reach
  } = u;
  return JSON.stringify(reach);
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

export function planReload(prev: Config, next: Config): ReloadPlan {
  const notes: string[] = [];
  for (const key of ['server', 'store'] as const) {
    if (!same(prev[key], next[key])) notes.push(`${key} changed: takes effect after a restart`);
  }
  const removed = Object.keys(prev.upstreams).filter((name) => !Object.hasOwn(next.upstreams, name));
  const upstreams: ReloadPlan['upstreams'] = [];
  for (const [name, ucfg] of Object.entries(next.upstreams)) {
    const old = prev.upstreams[name];
    if (!old) upstreams.push({ name, action: 'add' });
    else if (!same(old, ucfg))
      upstreams.push({ name, action: reachOf(old) === reachOf(ucfg) ? 'retune' : 'reconnect' });
  }
  const before = new Set(prev.agents.map((a) => a.id));
  const after = new Set(next.agents.map((a) => a.id));
  const added = [...after].filter((a) => !before.has(a));
  const gone = [...before].filter((a) => !after.has(a));
  if (added.length + gone.length > 0) notes.push(`agents +[${added.join(',')}] -[${gone.join(',')}]`);
  if (!same(prev.limits, next.limits)) notes.push('limits changed');
  return { removed, upstreams, notes };
}
