// The bus: wires the catalog, pipeline, agent front and admin routes from a loaded config, connects the upstreams
// (one shared connection each), applies a reloaded config live, and starts, drains and stops the whole. What each
// part does lives in its own module: redaction and logging in observe/, the dashboard in dashboard/, catalog refresh
// in catalog/refresher.ts, when to reload in config/live-reload.ts and what a reload changes in config/reload-plan.ts.
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { AgentTable } from './agents/agent-table.js';
import { Authenticator } from './agents/authenticator.js';
import { isUnspecifiedAddress, LOOPBACK_HOSTS } from './agents/hosts.js';
import { HttpFront } from './agents/http-front.js';
import { sharedSealKey } from './agents/request-state.js';
import { aggregateDescription, type RpcDeps, upstreamDescription } from './agents/rpc.js';
import { type DirectoryUpstream, UpstreamDirectory } from './agents/upstream-directory.js';
import { Catalog } from './catalog/catalog.js';
import { CoalescedRefresh } from './catalog/refresher.js';
import { LiveReload } from './config/live-reload.js';
import { type LoadedConfig, loadConfig } from './config/load.js';
import { planReload } from './config/reload-plan.js';
import type { Config, UpstreamConfig } from './config/schema.js';
import { adminRoutes } from './dashboard/routes.js';
import { dashboardSnapshot } from './dashboard/snapshot.js';
import { describeConfigChange, isNoChange } from './observe/config-diff.js';
import { createLogger } from './observe/log.js';
import { Metrics } from './observe/metrics.js';
import { RecentEvents } from './observe/recent.js';
import { SecretRedactor } from './observe/redact.js';
import { Timeline } from './observe/timeline.js';
import { headerValues, startTracing, type Tracer } from './observe/tracing.js';
import { UpstreamTrails } from './observe/upstream-trail.js';
import type { AgentIdentity } from './pipeline/context.js';
import { AdmissionQueue } from './pipeline/fair-queue.js';
import { type CallRunner, createCallRunner } from './pipeline/pipeline.js';
import type { PipelineServices } from './pipeline/services.js';
import type { StateStore } from './store/contract.js';
import { createStore } from './store/index.js';
import type { SqliteStore } from './store/sqlite.js';
import { upstreamAuthFor } from './upstreams/oauth/index.js';
import { watchSessions } from './upstreams/session-metrics.js';
import { UpstreamUnit } from './upstreams/upstream-unit.js';
import { toolbusVersion } from './version.js';

export interface BusOptions {
  host?: string;
  port?: number;
  /** Log destination; defaults to stderr so stdout stays for the one "listening" line. */
  logStream?: NodeJS.WritableStream;
}

export class Bus {
  private loaded: LoadedConfig;
  readonly logger: Logger;
  /** Every configured secret, in every encoding, redacted from all the bus sends and logs. */
  readonly redactor: SecretRedactor;
  readonly metrics = new Metrics();
  readonly recent = new RecentEvents();
  /** The dashboard's charts: the last minutes per upstream and per-agent totals (observe/timeline.ts). */
  readonly timeline = new Timeline();
  /** Each upstream's last stderr lines and connection error, for the dashboard. */
  private readonly trails: UpstreamTrails;
  private tracer: Tracer | undefined;
  private sampler: NodeJS.Timeout | undefined;
  readonly catalog = new Catalog();
  readonly agents: AgentTable;
  private readonly auth: Authenticator;
  readonly replicaId = randomBytes(6).toString('hex');
  private store!: StateStore;
  private readonly runtimes = new Map<string, UpstreamUnit>();
  private front!: HttpFront;
  private directory!: UpstreamDirectory;
  private runner!: CallRunner;
  private toolLists = new Map<string, { tools: Record<string, unknown>[] }>();
  private readonly refreshers = new Map<string, CoalescedRefresh>();
  private seq = 0;
  /** SIGHUP and secret-file changes, one reload at a time (config/live-reload.ts). */
  private readonly live: LiveReload;
  /** Last resort: a rejection nothing handled is a bug, logged loudly, never a reason to stop serving every agent. */
  private readonly onUnhandled = (reason: unknown) =>
    this.logger.error({ err: reason }, 'unhandled rejection (a bug in toolbus; the process keeps serving)');
  address = { host: '127.0.0.1', port: 0 };
  private stopping = false;
  private storeOk = true;
  private storeProbe: NodeJS.Timeout | undefined;

  private constructor(
    loaded: LoadedConfig,
    private readonly opts: BusOptions,
  ) {
    this.loaded = loaded;
    this.redactor = new SecretRedactor(loaded.secrets);
    this.logger = createLogger(loaded.config.logging.level, this.redactor, opts.logStream);
    this.agents = new AgentTable(loaded.config.agents);
    this.auth = new Authenticator(this.agents, loaded.config.auth, this.logger);
    this.trails = new UpstreamTrails({
      redact: (t) => this.redactor.redact(t),
      forward: opts.logStream ?? process.stderr,
      level: loaded.config.logging.level,
    });
    this.live = new LiveReload({
      logger: this.logger,
      files: () => [...(this.loaded.path ? [this.loaded.path] : []), ...this.loaded.secretFiles],
      apply: (reason) => this.applyConfig(reason),
    });
  }

  get config(): Config {
    return this.loaded.config;
  }

  static async start(loaded: LoadedConfig, opts: BusOptions = {}): Promise<Bus> {
    const bus = new Bus(loaded, opts);
    await bus.boot();
    return bus;
  }

  private services(): PipelineServices {
    return {
      config: () => this.loaded.config,
      catalog: this.catalog,
      store: this.store,
      upstream: (name) => this.runtimes.get(name),
      isAgentActive: (id) => this.auth.isActive(id),
      storeHealthy: () => this.storeOk,
      metrics: this.metrics,
      logger: this.logger,
    };
  }

  private async boot(): Promise<void> {
    const cfg = this.loaded.config;
    this.store = await createStore(cfg.store, { replicaId: this.replicaId });
    this.metrics.watchStore(() => this.store.roundTrips);
    if (this.store.kind === 'sqlite') {
      const { lines, droppedBytes } = (this.store as SqliteStore).journalReplay;
      if (droppedBytes > 0) {
        this.logger.warn(
          { replayedLines: lines, droppedBytes },
          'the state journal ended in a line cut short (a power loss?): the changes before it were replayed',
        );
      } else if (lines > 0) this.logger.info({ replayedLines: lines }, 'replayed the state journal of a previous run');
    }
    const settled = await this.store.settleAbandoned(cfg.idempotency.ttlMs);
    if (settled.released + settled.unknown > 0) {
      this.logger.warn(
        settled,
        'settled calls left in flight by a previous run (claims released, dispatched marked unknown)',
      );
    }
    for (const [name, ucfg] of Object.entries(cfg.upstreams)) this.addUpstream(name, ucfg);
    this.directory = new UpstreamDirectory(() => this.directoryUpstreams());
    this.tracer = await this.startTracing();
    const runner = createCallRunner(this.services(), this.recent, {
      timeline: this.timeline,
      ...(this.tracer ? { tracer: this.tracer } : {}),
    });
    this.runner = runner;
    const deps: RpcDeps = {
      catalog: this.catalog,
      runner,
      directory: this.directory,
      newOwner: () => `${this.replicaId}:${++this.seq}`,
      toolListFor: (agent, endpoint) => this.toolListFor(agent, endpoint),
      describe: (endpoint) => {
        if (endpoint === undefined) return aggregateDescription(this.directoryUpstreams());
        const c = this.runtimes.get(endpoint)?.connection;
        return upstreamDescription(c?.serverCapabilities, c?.instructions);
      },
    };
    const host = this.opts.host ?? cfg.server.host;
    const loopbackOnly = LOOPBACK_HOSTS.has(host);
    if (!loopbackOnly && !cfg.server.adminToken && cfg.server.dashboard) {
      this.logger.warn(
        { host },
        'listening beyond loopback without server.adminToken: the dashboard API refuses every request',
      );
    }
    if (isUnspecifiedAddress(host)) this.logger.warn({ host }, 'listening on every interface');
    const redact = (text: string) => this.redactor.redact(text);
    const routes = adminRoutes({
      adminToken: () => this.loaded.config.server.adminToken,
      loopbackOnly,
      dashboardEnabled: () => this.loaded.config.server.dashboard,
      readiness: () => ({
        ready: this.ready,
        upstreams: Object.fromEntries([...this.runtimes.values()].map((r) => [r.name, r.connection.state])),
      }),
      metrics: this.metrics,
      snapshot: (admin) => this.snapshot(admin),
      redact,
      logger: this.logger,
    });
    this.front = new HttpFront({
      requestStateKey: await sharedSealKey(this.store.vault).catch((err: unknown) => {
        // The store is down at start: a key of this process's own; states it seals open only here.
        this.logger.warn({ err: (err as Error).message }, 'request-state key not in the store; using a local one');
        return undefined;
      }),
      host,
      port: this.opts.port ?? cfg.server.port,
      allowedHosts: cfg.server.allowedHosts,
      allowedOrigins: cfg.server.allowedOrigins,
      maxBodyBytes: cfg.server.maxBodyBytes,
      sessionIdleMs: cfg.server.sessionIdleMs,
      limits: cfg.limits,
      auth: this.auth,
      deps,
      logger: this.logger,
      redact,
      hasUpstream: (name) => this.runtimes.has(name),
      subscriptionUpstream: (name) => {
        const r = this.runtimes.get(name);
        return r && { request: (method, params) => r.connection.request(method, params) };
      },
      extraRoutes: routes,
    });
    this.metrics.watchLive({
      sessions: () => this.front.sessions.size,
      upstreams: () =>
        [...this.runtimes.values()].map((r) => {
          const q = r.queue.snapshot();
          return { name: r.name, queued: q.queued, inFlight: q.inFlight };
        }),
    });
    watchSessions(this.metrics.registry, () => this.runtimes.values());
    // Every upstream is tried once before the bus says it is listening; failures keep retrying in the background.
    await Promise.all([...this.runtimes.values()].map((r) => r.connection.start()));
    await Promise.all([...this.refreshers.values()].map((r) => r.runNow()));
    try {
      this.address = await this.front.listen();
    } catch (err) {
      // Nothing may outlive a failed start: the upstreams already running are stopped before the error surfaces.
      await this.stop();
      throw listenError(err, host, this.opts.port ?? cfg.server.port);
    }
    const shownHost = this.address.host.includes(':') ? `[${this.address.host}]` : this.address.host;
    this.auth.setListenUrl(`http://${shownHost}:${this.address.port}/mcp`);
    this.storeProbe = setInterval(() => this.probeStore(), 1000).unref();
    this.sampler = setInterval(() => {
      for (const r of this.runtimes.values()) {
        const q = r.queue.snapshot();
        this.timeline.sampleQueue(r.name, q.queued, q.inFlight);
      }
    }, 1000).unref();
    this.live.start();
    process.on('unhandledRejection', this.onUnhandled);
  }

  /** OpenTelemetry export, only when the standard OTEL_* variables name an OTLP endpoint. */
  private async startTracing(): Promise<Tracer | undefined> {
    // The collector's headers (often a bearer token) are secrets like the config's: an export error that echoes one
    // (a proxy's status line) is scrubbed from the log.
    for (const name of ['OTEL_EXPORTER_OTLP_HEADERS', 'OTEL_EXPORTER_OTLP_TRACES_HEADERS'])
      this.redactor.add(headerValues(process.env[name]));
    let lastReport = 0;
    const { tracer, endpoint, protocol, problem } = await startTracing(toolbusVersion(), (err) => {
      if (Date.now() - lastReport < 60_000) return;
      lastReport = Date.now();
      this.logger.warn({ err: err.message }, 'trace export failed; spans dropped');
    });
    if (problem) this.logger.warn({ problem }, tracer ? 'tracing: a setting was ignored' : 'tracing stays off');
    if (tracer) this.logger.info({ endpoint, protocol }, 'tracing on: exporting OTLP/HTTP');
    return tracer;
  }

  private probeStore(): void {
    this.store.ping().then(
      () => {
        if (!this.storeOk) this.logger.info('state store reachable again');
        this.storeOk = true;
      },
      (err: unknown) => {
        if (this.storeOk)
          this.logger.error({ err: (err as Error).message }, 'state store unreachable: writes are refused');
        this.storeOk = false;
      },
    );
  }

  private addUpstream(name: string, ucfg: UpstreamConfig): void {
    const logger = this.trails.loggerFor(name);
    const auth = upstreamAuthFor(name, ucfg, this.store.vault, this.loaded.baseDir, logger, () =>
      this.metrics.upstreamTokenRequests.inc({ upstream: name }),
    );
    const refresher = new CoalescedRefresh(() => this.refreshTools(name), {
      perSecond: this.loaded.config.limits.catalogRefreshPerSecond,
    });
    this.refreshers.set(name, refresher);
    const queue = new AdmissionQueue({
      upstream: name,
      ...(ucfg.rateLimit ? { rate: ucfg.rateLimit } : {}),
      maxConcurrency: ucfg.maxConcurrency,
      queueWaitMs: ucfg.queueWaitMs,
      maxQueuePerAgent: ucfg.maxQueuePerAgent,
      store: this.store,
      bucket: `rate:${name}`,
      onWait: (_agent: string, waitedMs: number) => this.metrics.queueWait(name, waitedMs),
      onStoreError: (err: unknown) =>
        this.logger.warn({ err, upstream: name }, 'rate store unreachable; pacing locally'),
    });
    const onNotification = (method: string, params?: Record<string, unknown>, deliveredTo?: string) => {
      // A storm of list_changed is merged: one refresh in flight, one pending, a few per second at most.
      if (method === 'notifications/tools/list_changed') refresher.request();
      else if (method === 'notifications/message') this.front?.relayLog(name, params, deliveredTo);
      else if (method === 'notifications/resources/updated') this.front?.relayUpdated(name, params);
      else if (method === 'notifications/resources/list_changed' || method === 'notifications/prompts/list_changed') {
        this.front?.broadcast(method);
      }
    };
    // The queue, breaker and sessions (one shared connection, or one per agent/tenant) of this upstream, as a unit.
    const unit = new UpstreamUnit(name, ucfg, {
      logger,
      auth,
      maxMessageBytes: this.loaded.config.limits.maxUpstreamMessageBytes,
      queue,
      onNotification,
      agentRoots: (agentId) => this.front?.agentRoots(agentId) ?? Promise.resolve(undefined),
      onRestart: () => this.metrics.restart(name),
      onBreakerChange: (state, previous) => {
        this.metrics.breaker(name, state);
        this.logger[state === 'open' ? 'warn' : 'info']({ upstream: name, state, previous }, 'circuit breaker changed');
      },
    });
    const { connection } = unit;
    connection.on('state', (state: string) => {
      this.metrics.upstreamUp.set({ upstream: name }, state === 'ready' ? 1 : 0);
      if (state === 'ready' && !this.stopping) refresher.request();
    });
    connection.on('restart', () => this.metrics.restart(name));
    connection.on('notification', onNotification);
    this.runtimes.set(name, unit);
  }

  /** Re-reads an upstream's tools (on connect and on tools/list_changed) and tells agents when the list changed. */
  private async refreshTools(name: string): Promise<void> {
    const runtime = this.runtimes.get(name);
    if (runtime?.connection.state !== 'ready') return;
    try {
      const tools: Record<string, unknown>[] = [];
      let cursor: unknown;
      for (let page = 0; page < 50; page++) {
        const res = await runtime.connection.request('tools/list', cursor === undefined ? undefined : { cursor });
        tools.push(...((res.tools as Record<string, unknown>[] | undefined) ?? []));
        cursor = res.nextCursor;
        if (typeof cursor !== 'string') break;
      }
      // A reload may have removed or replaced this upstream meanwhile, or changed its policies: read them now.
      const ucfg = this.loaded.config.upstreams[name];
      if (this.runtimes.get(name) !== runtime || !ucfg) return;
      const before = JSON.stringify(
        [...this.catalog.all()].filter((t) => t.upstream === name).map((t) => t.definition),
      );
      this.catalog.setUpstream(name, ucfg, { tools });
      const after = JSON.stringify([...this.catalog.all()].filter((t) => t.upstream === name).map((t) => t.definition));
      for (const w of this.catalog.warnings.filter((x) => x.tool.startsWith(`${name}__`)))
        this.logger.debug(w, 'catalog warning');
      if (before !== after) {
        this.toolLists.clear();
        this.front?.broadcast('notifications/tools/list_changed');
      }
    } catch (err) {
      this.logger.warn({ err, upstream: name }, 'could not list tools of upstream');
    }
  }

  /**
   * tools/list for an agent, cached per policy and endpoint: on /mcp every allowed tool under its exposed name, on
   * /mcp/{upstream} that upstream's allowed tools under their own names.
   */
  private toolListFor(agent: AgentIdentity, endpoint: string | undefined): { tools: Record<string, unknown>[] } {
    const key = `${agent.policyKey ?? agent.id}\u0000${endpoint ?? ''}`;
    let list = this.toolLists.get(key);
    if (!list) {
      const tools = [...this.catalog.all()].filter(
        (t) => agent.allows(t.name) && (endpoint === undefined || t.upstream === endpoint),
      );
      list = {
        tools: tools.map((t) => (endpoint === undefined ? t.definition : { ...t.definition, name: t.upstreamTool })),
      };
      this.toolLists.set(key, list);
    }
    return list;
  }

  private directoryUpstreams(): DirectoryUpstream[] {
    return [...this.runtimes.values()].map((r) => ({
      name: r.name,
      ready: r.connection.state === 'ready',
      capabilities: r.connection.serverCapabilities,
      instructions: r.connection.instructions,
      request: (agent, method, params, signal, asker) => r.directoryRequest(agent, method, params, signal, asker),
      usableBy: (agent) => [...this.catalog.all()].some((t) => t.upstream === r.name && agent.allows(t.name)),
    }));
  }

  /** Tool calls running now (what a drain waits for). */
  get callsInFlight(): number {
    return this.runner?.inFlight.size ?? 0;
  }

  get ready(): boolean {
    return [...this.runtimes.values()].every((r) => r.connection.state === 'ready');
  }

  /** What the dashboard shows. Lease scopes hold argument values: only an admin sees them in clear. */
  async snapshot(admin: boolean): Promise<Record<string, unknown>> {
    const snap = await dashboardSnapshot(
      {
        replicaId: this.replicaId,
        store: this.store,
        storeHealthy: () => this.storeOk,
        agents: () => this.agents.list(),
        sessionsOf: (id) => this.front.sessions.countFor(id),
        runtimes: () => this.runtimes.values(),
        toolCount: (up) => [...this.catalog.all()].filter((t) => t.upstream === up).length,
        inFlight: this.runner.inFlight,
        recent: () => this.recent.list(),
      },
      admin,
    );
    // Over-time series and each upstream's own last words (observe/timeline.ts, observe/upstream-trail.ts). Its
    // stderr may echo argument values, so like lease scopes it is shown to an admin only.
    const names = [...this.runtimes.keys()];
    const upstreams = (snap.upstreams as Record<string, unknown>[]).map((u) => {
      const trail = this.trails.get(String(u.name));
      const lastCall = this.timeline.lastError(String(u.name));
      return {
        ...u,
        lastError: trail.lastError ?? null,
        lastCallError: lastCall ?? null,
        rateLimit: this.loaded.config.upstreams[String(u.name)]?.rateLimit ?? null,
        ...(admin ? { stderr: trail.stderr.slice(-5) } : {}),
      };
    });
    return { ...snap, version: toolbusVersion(), upstreams, timeline: this.timeline.view(names) };
  }

  /**
   * One reload: everything that can change live does. Agents, auth, limits and tool policies apply at once; an
   * upstream added starts, one removed stops and its tools go; a change to how an upstream is reached (command,
   * args, env, cwd, url, headers, oauth, roots) replaces its connection blue/green; a policy-only change (tools,
   * caps, waits, timeouts, breaker) is applied in place and keeps the upstream process. `server` and `store` need a
   * restart and are reported. A new connection that fails to start keeps that upstream on its old config, and the
   * reload is tried again later; a config that does not load keeps everything as it was. True when something
   * could not be applied (LiveReload tries again).
   */
  private async applyConfig(reason: string): Promise<boolean> {
    if (!this.loaded.path || this.stopping) return false;
    let next: LoadedConfig;
    try {
      next = loadConfig(this.loaded.path);
    } catch (err) {
      this.logger.error({ err: (err as Error).message, reason }, 'config reload failed; keeping the running config');
      return false;
    }
    const prev = this.loaded;
    const plan = planReload(prev.config, next.config);
    const changes: string[] = plan.notes.filter((n) => n.endsWith('after a restart'));
    const described = describeConfigChange(prev.config, next.config);
    this.redactor.add(next.secrets);
    const upstreams: Record<string, UpstreamConfig> = { ...next.config.upstreams };
    let failed = 0;
    for (const name of plan.removed) {
      const unit = this.runtimes.get(name);
      if (!unit) continue;
      this.runtimes.delete(name);
      this.refreshers.get(name)?.stop();
      this.refreshers.delete(name);
      this.catalog.removeUpstream(name);
      unit.queue.close();
      void unit.close().catch(() => {});
      changes.push(`upstream ${name} removed`);
    }
    for (const { name, action } of plan.upstreams) {
      const ucfg = next.config.upstreams[name]!;
      const unit = this.runtimes.get(name);
      if (action === 'add' || !unit) {
        this.addUpstream(name, ucfg);
        void this.runtimes.get(name)!.start();
        changes.push(`upstream ${name} added`);
        continue;
      }
      if (action === 'reconnect') {
        try {
          await unit.reconfigure(ucfg);
          changes.push(`upstream ${name} reconnected (how it is reached changed)`);
        } catch (err) {
          failed++;
          upstreams[name] = prev.config.upstreams[name]!;
          this.logger.error({ err, upstream: name }, 'upstream did not take its new config; the old connection stays');
          continue;
        }
      }
      unit.retune(ucfg);
      if (action === 'retune') changes.push(`upstream ${name} policy changed (process kept)`);
    }
    changes.push(...plan.notes.filter((n) => !n.endsWith('after a restart')));
    this.loaded = { ...next, config: Object.freeze({ ...next.config, upstreams: Object.freeze(upstreams) }) };
    this.agents.replace(next.config.agents);
    this.auth.replace(next.config.auth);
    this.front.setLimits(next.config.limits);
    this.front.sessions.endAgentsNotIn((id) => this.auth.isActive(id));
    this.toolLists.clear();
    for (const r of this.refreshers.values()) r.request();
    this.front.broadcast('notifications/tools/list_changed');
    const nothing = changes.length === 0 && isNoChange(described);
    this.logger.info({ reason, ...described, changes }, nothing ? 'config reloaded: no change' : 'config reloaded');
    return failed > 0;
  }

  /** Stops taking calls, lets in-flight calls finish (bounded), then closes upstreams and the store. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.live.stop();
    process.off('unhandledRejection', this.onUnhandled);
    clearInterval(this.storeProbe);
    clearInterval(this.sampler);
    for (const r of this.refreshers.values()) r.stop();
    const inFlight = () => this.runner?.inFlight.size ?? 0;
    await this.front?.close(this.loaded.config.server.shutdownGraceMs, inFlight);
    const cut = [...(this.runner?.inFlight.values() ?? [])].map((c) => ({ agent: c.agent, tool: c.tool }));
    if (cut.length > 0) this.logger.warn({ calls: cut }, 'shutdown grace ran out: cutting the calls still in flight');
    for (const r of this.runtimes.values()) r.queue.close();
    await Promise.all([...this.runtimes.values()].map((r) => r.close().catch(() => {})));
    // A cut call settles (outcome, audit record) once its upstream is gone; the store stays open until it has.
    for (let i = 0; i < 80 && inFlight() > 0; i++) await new Promise((r) => setTimeout(r, 25));
    await this.tracer?.shutdown().catch(() => {});
    await this.store?.close().catch(() => {});
  }
}

function listenError(err: unknown, host: string, port: number): Error {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE')
    return new Error(`cannot listen on ${host}:${port}: the port is in use (pick another with --port or server.port)`);
  if (code === 'EACCES') return new Error(`cannot listen on ${host}:${port}: permission denied`);
  if (code === 'EADDRNOTAVAIL') return new Error(`cannot listen on ${host}:${port}: no such address on this machine`);
  return err instanceof Error ? err : new Error(String(err));
}
