// Stateful agent sessions (2025-era `Mcp-Session-Id`): who owns each, its open notification streams and in-flight
// requests, and the caps that keep one agent from holding the bus's memory: at most `maxPerAgent` sessions per agent
// (a new one closes that agent's least recently used idle session, or is refused), and idle sessions swept after
// `idleMs`. Time comes from an injected clock so expiry can be tested exactly.
import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { AgentIdentity } from '../pipeline/context.js';

export interface Session {
  readonly id: string;
  readonly agent: AgentIdentity;
  /** The upstream of /mcp/{upstream} the session was opened on; undefined for /mcp. */
  readonly endpoint: string | undefined;
  protocolVersion: string;
  /** Set by logging/setLevel: upstream log messages at this level or above are sent to the session's streams. */
  logLevel: string | undefined;
  /** What the agent's client declared in initialize (sampling, elicitation, roots...). */
  clientCapabilities: Record<string, unknown>;
  lastSeen: number;
  /** Open GET streams that receive server notifications. */
  readonly streams: Set<ServerResponse>;
  /** In-flight requests by JSON-RPC id, for notifications/cancelled. */
  readonly inflight: Map<string | number, AbortController>;
}

export interface SessionTableOptions {
  maxPerAgent: number;
  idleMs: number;
  /** Called once when a session ends (its subscriptions go with it). */
  onEnd?: (s: Session) => void;
  now?: () => number;
}

function isIdle(s: Session): boolean {
  return s.inflight.size === 0 && s.streams.size === 0;
}

export class SessionTable {
  private readonly byId = new Map<string, Session>();
  private readonly perAgent = new Map<string, Set<Session>>();
  private readonly now: () => number;

  constructor(private readonly opts: SessionTableOptions) {
    this.now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.byId.size;
  }

  values(): IterableIterator<Session> {
    return this.byId.values();
  }

  countFor(agentId: string): number {
    return this.perAgent.get(agentId)?.size ?? 0;
  }

  /** The session, if it exists and belongs to this agent (another agent's token can neither use nor probe it). */
  lookup(id: string, agent: AgentIdentity): Session | undefined {
    const s = this.byId.get(id);
    if (!s || s.agent.id !== agent.id) return undefined;
    s.lastSeen = this.now();
    return s;
  }

  /** Opens a session, or returns null when the agent is at its cap and none of its sessions is idle. */
  open(agent: AgentIdentity, endpoint?: string): Session | null {
    let mine = this.perAgent.get(agent.id);
    if (mine && mine.size >= this.opts.maxPerAgent) {
      let oldest: Session | undefined;
      for (const s of mine) if (isIdle(s) && (!oldest || s.lastSeen < oldest.lastSeen)) oldest = s;
      if (!oldest) return null;
      this.end(oldest);
      mine = this.perAgent.get(agent.id);
    }
    const session: Session = {
      id: randomUUID(),
      agent,
      endpoint,
      protocolVersion: '',
      logLevel: undefined,
      clientCapabilities: {},
      lastSeen: this.now(),
      streams: new Set(),
      inflight: new Map(),
    };
    this.byId.set(session.id, session);
    if (!mine) {
      mine = new Set();
      this.perAgent.set(agent.id, mine);
    }
    mine.add(session);
    return session;
  }

  end(s: Session): void {
    if (!this.byId.delete(s.id)) return;
    const mine = this.perAgent.get(s.agent.id);
    mine?.delete(s);
    if (mine?.size === 0) this.perAgent.delete(s.agent.id);
    for (const c of s.inflight.values()) c.abort(new Error('session closed'));
    for (const stream of s.streams) stream.end();
    this.opts.onEnd?.(s);
  }

  /** Ends sessions with no request, no stream and no traffic for `idleMs`. Returns how many ended. */
  sweep(): number {
    const cutoff = this.now() - this.opts.idleMs;
    let n = 0;
    for (const s of this.byId.values()) {
      if (s.lastSeen < cutoff && isIdle(s)) {
        this.end(s);
        n++;
      }
    }
    return n;
  }

  /** Ends every session of an agent that is no longer configured (a reload removed it). */
  endAgentsNotIn(active: (agentId: string) => boolean): void {
    for (const s of this.byId.values()) if (!active(s.agent.id)) this.end(s);
  }

  clear(): void {
    for (const s of [...this.byId.values()]) this.end(s);
  }
}
