// One upstream's runtime, built and closed as a unit: its admission queue (rate cap, concurrency, fair queue), its
// circuit breaker and its sessions. In `shared` mode there is one connection for every agent, as before. In
// `per-agent` and `per-tenant` mode each agent id (or tenant) gets a session of its own from a SessionPool, opened on
// first use and closed when idle, each with its own supervision (restarts) and breaker, while the queue, and so the
// rate limit, stays one for the whole upstream. Those modes also keep one listing session that only ever lists tools
// (it never sees a tool call nor an agent's resources), so the catalog is known before any agent calls and does not
// depend on which agent came first.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { UpstreamConfig } from '../config/schema.js';
import type { AgentIdentity } from '../pipeline/context.js';
import type { AdmissionQueue } from '../pipeline/fair-queue.js';
import { type BreakerState, CircuitBreaker } from './circuit-breaker.js';
import { type Root, type ServerRequestAsker, UpstreamConnection, type UpstreamState } from './connection.js';
import type { UpstreamAuth } from './oauth/upstream-auth.js';
import { configForSession, ensureSessionCwd, LISTING_KEY, sharingProblems } from './session-config.js';
import { type SessionInfo, SessionPool } from './session-pool.js';

export type SharingMode = UpstreamConfig['sharing'];

/** The connection one call goes over, and the breaker that hears of its failures. */
export interface UpstreamSession {
  readonly connection: UpstreamConnection;
  readonly breaker: CircuitBreaker;
  /** Ends this call's use of the session (an idle session may then be closed). */
  release(): void;
}

interface PooledSession {
  readonly connection: UpstreamConnection;
  readonly breaker: CircuitBreaker;
}

export interface UpstreamUnitOptions {
  logger: Logger;
  /** OAuth upstreams: the one token holder every session of this upstream uses. */
  auth?: UpstreamAuth | undefined;
  maxMessageBytes: number;
  queue: AdmissionQueue;
  /** A session's upstream sent a notification (tools/list_changed and the like). */
  /** The roots an agent's client gives (asked on one of its session streams), or undefined when it cannot be asked. */
  agentRoots?: (agentId: string) => Promise<readonly Root[] | undefined>;
  /** `deliveredTo`: the agent a log message already went to, on its call's stream. */
  onNotification: (method: string, params?: Record<string, unknown>, deliveredTo?: string) => void;
  /** A session's connection restarted (supervision). */
  onRestart: () => void;
  /** A circuit breaker of this upstream changed state (logged and counted by the bus). */
  onBreakerChange?: (state: BreakerState, previous: BreakerState) => void;
  now?: () => number;
}

export class UpstreamUnit {
  /** The shared connection (shared mode) or the listing session (other modes). */
  readonly connection: UpstreamConnection;
  /** The breaker of `connection`; per-agent and per-tenant sessions have one each. */
  readonly breaker: CircuitBreaker;
  readonly queue: AdmissionQueue;
  private readonly pool: SessionPool<PooledSession> | undefined;
  private readonly closing = new Set<Promise<void>>();
  private readonly stopSweep: (() => void) | undefined;
  private cfg: UpstreamConfig;

  constructor(
    readonly name: string,
    cfg: UpstreamConfig,
    private readonly opts: UpstreamUnitOptions,
  ) {
    const problems = sharingProblems(name, cfg);
    if (problems.length > 0) throw new Error(problems.join('; '));
    this.cfg = cfg;
    this.queue = opts.queue;
    const listing = { agent: LISTING_KEY, tenant: LISTING_KEY };
    this.connection = this.connect(cfg.sharing === 'shared' ? cfg : configForSession(cfg, listing), 'listing', true);
    this.breaker = this.newBreaker();
    if (cfg.sharing !== 'shared') {
      this.pool = new SessionPool<PooledSession>({
        upstream: name,
        maxSessions: cfg.maxSessions,
        idleMs: cfg.sessionIdleMs,
        ...(opts.now ? { now: opts.now } : {}),
        open: (key) => this.openSession(key),
        close: (s, key, reason) => this.closeSession(s, key, reason),
      });
      const every = Math.max(50, Math.min(30_000, Math.floor(cfg.sessionIdleMs / 4)));
      const timer = setInterval(() => this.pool?.sweep(), every);
      timer.unref();
      this.stopSweep = () => clearInterval(timer);
    }
  }

  get sharing(): SharingMode {
    return this.cfg.sharing;
  }

  get leaseWaitMs(): number {
    return this.cfg.leaseWaitMs;
  }

  get queueWaitMs(): number {
    return this.cfg.queueWaitMs;
  }

  /** The session key of an agent: its id, its tenant, or one key for everyone. */
  keyOf(agent: AgentIdentity): string {
    return this.cfg.sharing === 'per-agent' ? agent.id : agent.tenant;
  }

  /**
   * The session a call of `agent` goes over. Opens it on the agent's first use (waiting for the process to start);
   * waits while all maxSessions are busy, until `waitUntil`, then refuses with upstream_unavailable (sessions_full).
   */
  async sessionFor(agent: AgentIdentity, opts: { waitUntil: number; signal?: AbortSignal }): Promise<UpstreamSession> {
    if (!this.pool) return { connection: this.connection, breaker: this.breaker, release: () => {} };
    this.noteAgent(agent);
    const lease = await this.pool.acquire(this.keyOf(agent), opts);
    try {
      const { connection } = lease.session;
      if (lease.opened) {
        // Evicted sessions finish exiting first, so the processes alive never outnumber maxSessions; but never past
        // the call's wait (a child that keeps its pipes open after SIGKILL must not hold every later session).
        await Promise.race([
          Promise.all(this.closing),
          sleep(Math.max(0, opts.waitUntil - Date.now()), undefined, { ref: false }),
        ]);
        await connection.start();
      } else if (connection.state === 'connecting') {
        await connection.ready(Math.max(0, opts.waitUntil - Date.now()));
      }
      return { ...lease.session, release: () => lease.release() };
    } catch (err) {
      lease.release();
      throw err;
    }
  }

  /**
   * A resources/prompts request of an agent. Reads (resources/read, prompts/get) go over the agent's own session, so
   * isolation holds through resources too. Listings go over the agent's session when it has one; otherwise over the
   * listing session, which shows what a fresh session would (it never sees a call), so that an agent listing
   * resources does not start a process on every per-agent upstream.
   */
  async directoryRequest(
    agent: AgentIdentity,
    method: string,
    params: Record<string, unknown> | undefined,
    signal: AbortSignal,
    asker?: ServerRequestAsker,
  ): Promise<Record<string, unknown>> {
    const opts = { signal, agentId: agent.id, ...(asker ? { asker } : {}) };
    if (!this.pool || (method.endsWith('/list') && !this.pool.peek(this.keyOf(agent))))
      return this.connection.request(method, params, opts);
    const session = await this.sessionFor(agent, { waitUntil: Date.now() + this.cfg.queueWaitMs, signal });
    try {
      return await session.connection.request(method, params, opts);
    } finally {
      session.release();
    }
  }

  private vars(key: string): { agent: string; tenant: string } {
    // per-agent keys are agent ids; an agent's tenant is fixed by config, but the key alone does not say it, so the
    // tenant is looked up from the last agent seen for the key.
    return this.cfg.sharing === 'per-agent'
      ? { agent: key, tenant: this.tenantOfKey.get(key) ?? key }
      : { agent: key, tenant: key };
  }

  private readonly tenantOfKey = new Map<string, string>();

  /** Remembers an agent's tenant before its session opens, for `{tenant}` in a per-agent upstream. */
  private noteAgent(agent: AgentIdentity): void {
    if (this.cfg.sharing === 'per-agent') this.tenantOfKey.set(agent.id, agent.tenant);
  }

  private openSession(key: string): PooledSession {
    const cfg = configForSession(this.cfg, this.vars(key));
    const connection = this.connect(cfg, key);
    this.opts.logger.info({ session: key }, 'upstream session opened');
    return { connection, breaker: this.newBreaker() };
  }

  private closeSession(s: PooledSession, key: string, reason: string): void {
    this.opts.logger.info({ session: key, reason }, 'upstream session closed');
    const done = s.connection.close().catch(() => {});
    this.closing.add(done);
    void done.finally(() => this.closing.delete(done));
  }

  /** `listing`: the shared or listing connection, which the bus itself watches (never an agent's own session). */
  private connect(cfg: UpstreamConfig, session: string, listing = false): UpstreamConnection {
    const cwdProblem = ensureSessionCwd(this.cfg, cfg);
    if (cwdProblem) this.opts.logger.warn({ err: cwdProblem, session }, 'cannot create the session working directory');
    // A per-agent session may see its own agent's roots (narrowed to the config's); nobody else's session does.
    const rootsOf = this.opts.agentRoots;
    const ownRoots = this.cfg.sharing === 'per-agent' && !listing && rootsOf ? () => rootsOf(session) : undefined;
    const connection = new UpstreamConnection(this.name, cfg, {
      logger: this.opts.logger.child({ session }),
      maxMessageBytes: this.opts.maxMessageBytes,
      auth: this.opts.auth,
      ...(ownRoots ? { agentRoots: ownRoots } : {}),
    });
    // The bus listens to the listing/shared connection itself (state, restarts, notifications).
    if (!listing) {
      connection.on('restart', () => this.opts.onRestart());
      connection.on('notification', (method: string, params?: Record<string, unknown>, deliveredTo?: string) =>
        this.opts.onNotification(method, params, deliveredTo),
      );
    }
    return connection;
  }

  private newBreaker(): CircuitBreaker {
    return new CircuitBreaker({
      failures: this.cfg.circuitBreaker.failures,
      openMs: this.cfg.circuitBreaker.openMs,
      ...(this.opts.onBreakerChange ? { onChange: this.opts.onBreakerChange } : {}),
    });
  }

  start(): Promise<void> {
    return this.connection.start();
  }

  /**
   * A live reload changed only policy (tools, rate and concurrency caps, queue and lease waits, timeouts, breaker):
   * applied in place, no connection is touched, so the upstream keeps its process and its state.
   */
  retune(cfg: UpstreamConfig): void {
    this.cfg = {
      ...cfg,
      sharing: this.cfg.sharing,
      maxSessions: this.cfg.maxSessions,
      sessionIdleMs: this.cfg.sessionIdleMs,
    };
    this.queue.retune({
      ...(cfg.rateLimit ? { rate: cfg.rateLimit } : {}),
      maxConcurrency: cfg.maxConcurrency,
      queueWaitMs: cfg.queueWaitMs,
      maxQueuePerAgent: cfg.maxQueuePerAgent,
    });
    this.breaker.retune(cfg.circuitBreaker);
    if (this.pool) for (const [, s] of this.pool.sessions()) s.breaker.retune(cfg.circuitBreaker);
  }

  /** Live credential rotation for the listing/shared connection and every live session (each blue/green). */
  async reconfigure(cfg: UpstreamConfig): Promise<void> {
    const prev = this.cfg;
    if (
      cfg.sharing !== prev.sharing ||
      cfg.maxSessions !== prev.maxSessions ||
      cfg.sessionIdleMs !== prev.sessionIdleMs
    ) {
      // The pool is built for these; secrets still rotate now, the rest waits for a restart.
      this.opts.logger.warn('sharing, maxSessions and sessionIdleMs change only with a restart; keeping the old ones');
      cfg = { ...cfg, sharing: prev.sharing, maxSessions: prev.maxSessions, sessionIdleMs: prev.sessionIdleMs };
    }
    const problems = sharingProblems(this.name, cfg);
    if (problems.length > 0) throw new Error(problems.join('; '));
    this.cfg = cfg;
    const listing = { agent: LISTING_KEY, tenant: LISTING_KEY };
    await this.connection.reconfigure(cfg.sharing === 'shared' ? cfg : configForSession(cfg, listing));
    if (!this.pool) return;
    const results = await Promise.allSettled(
      [...this.pool.sessions()].map(([key, s]) => s.connection.reconfigure(configForSession(cfg, this.vars(key)))),
    );
    const failed = results.filter((r) => r.status === 'rejected').length;
    if (failed > 0) throw new Error(`${failed} session(s) kept their old connection`);
  }

  /** Sessions alive now (the listing session aside). */
  get sessionCount(): number {
    return this.pool ? this.pool.size : this.connection.state === 'closed' ? 0 : 1;
  }

  get maxSessions(): number {
    return this.pool ? this.pool.maxSessions : 1;
  }

  /** The live session of an agent, if any, without using it (tests, dashboard). */
  sessionOf(agent: AgentIdentity): UpstreamConnection | undefined {
    return this.pool ? this.pool.peek(this.keyOf(agent))?.connection : this.connection;
  }

  /** For the dashboard: keys are agent ids or tenants, which any viewer of the dashboard already sees. */
  sessionList(): (SessionInfo & { state: UpstreamState; pid: number | null; restarts: number })[] {
    if (!this.pool) return [];
    return this.pool.list().map((info) => {
      const c = this.pool?.peek(info.key)?.connection;
      return { ...info, state: c?.state ?? 'closed', pid: c?.pid ?? null, restarts: c?.restartCount ?? 0 };
    });
  }

  get sessionCounts(): { opened: number; idle: number; evicted: number } {
    return this.pool ? { ...this.pool.counts } : { opened: 1, idle: 0, evicted: 0 };
  }

  async close(): Promise<void> {
    this.stopSweep?.();
    this.pool?.close();
    await Promise.all([this.connection.close().catch(() => {}), ...this.closing]);
  }
}
