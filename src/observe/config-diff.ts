// What a reload changed, in names only (agent ids, upstream names, top-level sections), for the one log line a reload
// writes. Values never appear: they may be secrets, and the redactor only knows the secrets it has seen.
import type { Config } from '../config/schema.js';

export interface ConfigChange {
  agentsAdded: string[];
  agentsRemoved: string[];
  agentsChanged: string[];
  upstreamsAdded: string[];
  upstreamsRemoved: string[];
  upstreamsChanged: string[];
  /** Other top-level sections that differ (server, store, limits, auth, …). */
  sections: string[];
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export function describeConfigChange(prev: Config, next: Config): ConfigChange {
  const before = new Map(prev.agents.map((a) => [a.id, a]));
  const after = new Map(next.agents.map((a) => [a.id, a]));
  const ups = (c: Config) => Object.keys(c.upstreams);
  return {
    agentsAdded: [...after.keys()].filter((id) => !before.has(id)),
    agentsRemoved: [...before.keys()].filter((id) => !after.has(id)),
    agentsChanged: [...after.keys()].filter((id) => before.has(id) && !same(before.get(id), after.get(id))),
    upstreamsAdded: ups(next).filter((n) => !(n in prev.upstreams)),
    upstreamsRemoved: ups(prev).filter((n) => !(n in next.upstreams)),
    upstreamsChanged: ups(next).filter((n) => n in prev.upstreams && !same(prev.upstreams[n], next.upstreams[n])),
    sections: (Object.keys(next) as (keyof Config)[]).filter(
      (k) => k !== 'agents' && k !== 'upstreams' && !same(prev[k], next[k]),
    ),
  };
}

/** True when nothing at all changed (a touched file, a SIGHUP with no edit). */
export function isNoChange(c: ConfigChange): boolean {
  return Object.values(c).every((v) => v.length === 0);
}
