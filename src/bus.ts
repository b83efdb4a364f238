// The bus: builds the catalog, pipeline and agent front from a loaded config, connects the upstreams (one shared
// connection each), keeps the catalog fresh, rotates secrets live, and starts, drains and stops the whole.
import { randomBytes } from 'node:crypto';
import { type FSWatcher, watch } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import pino, { type Logger } from 'pino';
import { AgentTable } from './agents/agent-table.js';
import { HttpFront } from './agents/http-front.js';
import type { RpcDeps } from './agents/rpc.js';
import { type DirectoryUpstream, UpstreamDirectory } from './agents/upstream-directory.js';
import { Catalog } from './catalog/catalog.js';
import { type LoadedConfig, loadConfig } from './config/load.js';
import type { Config, UpstreamConfig } from './config/schema.js';
import { dashboardPage } from './dashboard/page.js';
import { Metrics } from './observe/metrics.js';
import { RecentEvents } from './observe/recent.js';
import type { AgentIdentity } from './pipeline/context.js';
import { AdmissionQueue } from './pipeline/fair-queue.js';
import { type CallRunner, createCallRunner } from './pipeline/pipeline.js';
import type { PipelineServices, UpstreamRuntime } from './pipeline/services.js';
import type { StateStore } from './store/contract.js';
import { createStore } from './store/index.js';
import { CircuitBreaker } from './upstreams/circuit-breaker.js';
import { UpstreamConnection } from './upstreams/connection.js';
import { upstreamAuthFor } from './upstreams/oauth/index.js';

export interface BusOptions {
  host?: string;
  port?: number;
  /** Log destination; defaults to stderr so stdout stays for the one "listening" line. */
  logStream?: NodeJS.WritableStream;
}

/** Replaces every secret value in a log line, whatever field it hides in. */
function redactor(secrets: () => readonly string[]): (line: string) => string {
  return (line) => {
    let out = line;
    for (const s of secrets()) if (s.length >= 4 && out.includes(s)) out = out.split(s).join('[redacted]');
    return out;
  };
}

export function createLogger(level: string, secrets: () => readonly string[], stream?: NodeJS.WritableStream): Logger {
  const redact = redactor(secrets);
  return pino(
    {
      level,
      base: { service: 'toolbus' },
      redact: {
        paths: ['*.headers', '*.env', 'headers', 'env', '*.authorization', 'authorization', '*.token', 'token'],
        censor: '[redacted]',
      },
      hooks: { streamWrite: redact },
    },
    (stream ?? process.stderr) as pino.DestinationStream,
  );
}

export class Bus {
  private loaded: LoadedConfig;
  readonly logger: Logger;
  readonly metrics = new Metrics();
  readonly recent = new RecentEvents();
  readonly catalog = new Catalog();
  readonly agents: AgentTable;
  readonly replicaId = randomBytes(6).toString('hex');
  private store!: StateStore;
  private readonly runtimes = new Map<string, UpstreamRuntime>();
  private front!: HttpFront;
  private directory!: UpstreamDirectory;
  private runner!: CallRunner;
  private toolLists = new Map<string, { tools: Record<string, unknown>[] }>();
  private seq = 0;
  private watchers: FSWatcher[] = [];
  private reloadTimer: NodeJS.Timeout | undefined;
  private readonly onSighup = () => this.reloadSecrets('SIGHUP');
  address = { host: '127.0.0.1', port: 0 };
  private stopping = false;
  private storeOk = true;
  private storeProbe: NodeJS.Timeout | undefined;

  private constructor(
    loaded: LoadedConfig,
    private readonly opts: BusOptions,
  ) {
    this.loaded = loaded;
    this.logger = createLogger(loaded.config.logging.level, () => this.loaded.secrets, opts.logStream);
    this.agents = new AgentTable(loaded.config.agents);
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
      isAgentActive: (id) => this.agents.has(id),
      storeHealthy: () => this.storeOk,
      metrics: this.metrics,
      logger: this.logger,
    };
  }

  private async boot(): Promise<void> {
    const cfg = this.loaded.config;
    this.store = await createStore(cfg.store, { replicaId: this.replicaId });
    this.metrics.watchStore(() => this.store.roundTrips);
    const settled = await this.store.settleAbandoned(cfg.idempotency.ttlMs);
    if (settled.released + settled.unknown > 0) {
      this.logger.warn(
        settled,
        'settled calls left in flight by a previous run (claims released, dispatched marked unknown)',
      );
    }
    for (const [name, ucfg] of Object.entries(cfg.upstreams)) this.addUpstream(name, ucfg);
    this.directory = new UpstreamDirectory(() => this.directoryUpstreams());
    const runner = createCallRunner(this.services(), this.recent);
    this.runner = runner;
    const deps: RpcDeps = {
      catalog: this.catalog,
      runner,
      directory: this.directory,
      newOwner: () => `${this.replicaId}:${++this.seq}`,
      toolListFor: (agent) => this.toolListFor(agent),
    };
    this.front = new HttpFront({
      host: this.opts.host ?? cfg.server.host,
      port: this.opts.port ?? cfg.server.port,
      allowedHosts: cfg.server.allowedHosts,
      allowedOrigins: cfg.server.allowedOrigins,
      maxBodyBytes: cfg.server.maxBodyBytes,
      sessionIdleMs: cfg.server.sessionIdleMs,
      agents: this.agents,
      deps,
      logger: this.logger,
      extraRoutes: (req, res, path) => this.extraRoutes(req, res, path),
    });
    // Every upstream is tried once before the bus says it is listening; failures keep retrying in the background.
    await Promise.all([...this.runtimes.values()].map((r) => r.connection.start()));
    await Promise.all([...this.runtimes.keys()].map((name) => this.refreshTools(name)));
    this.address = await this.front.listen();
    this.storeProbe = setInterval(() => this.probeStore(), 1000).unref();
    this.watchSecrets();
    process.on('SIGHUP', this.onSighup);
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
    const logger = this.logger.child({ upstream: name });
    const auth = upstreamAuthFor(name, ucfg, this.store.vault, this.loaded.baseDir, logger, () =>
      this.metrics.upstreamTokenRequests.inc({ upstream: name }),
    );
    const connection = new UpstreamConnection(name, ucfg, { logger, auth });
    const breaker = new CircuitBreaker({ failures: ucfg.circuitBreaker.failures, openMs: ucfg.circuitBreaker.openMs });
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
    connection.on('state', (state: string) => {
      this.metrics.upstreamUp.set({ upstream: name }, state === 'ready' ? 1 : 0);
      if (state === 'ready' && !this.stopping) void this.refreshTools(name);
    });
    connection.on('restart', () => this.metrics.restart(name));
    connection.on('notification', (method: string) => {
      if (method === 'notifications/tools/list_changed') void this.refreshTools(name);
      else if (method === 'notifications/resources/list_changed' || method === 'notifications/prompts/list_changed') {
        this.front?.broadcast(method);
      }
    });
    this.runtimes.set(name, { name, connection, queue, breaker, leaseWaitMs: ucfg.leaseWaitMs });
  }

  /** Re-reads an upstream's tools (on connect and on tools/list_changed) and tells agents when the list changed. */
  private async refreshTools(name: string): Promise<void> {
    const runtime = this.runtimes.get(name);
    const ucfg = this.loaded.config.upstreams[name];
    if (!runtime || !ucfg || runtime.connection.state !== 'ready') return;
    try {
      const tools: Record<string, unknown>[] = [];
      let cursor: unknown;
      for (let page = 0; page < 50; page++) {
        const res = await runtime.connection.request('tools/list', cursor === undefined ? undefined : { cursor });
        tools.push(...((res.tools as Record<string, unknown>[] | undefined) ?? []));
        cursor = res.nextCursor;
        if (typeof cursor !== 'string') break;
      }
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

  private toolListFor(agent: AgentIdentity): { tools: Record<string, unknown>[] } {
    let list = this.toolLists.get(agent.id);
    if (!list) {
      list = { tools: [...this.catalog.all()].filter((t) => agent.allows(t.name)).map((t) => t.definition) };
      this.toolLists.set(agent.id, list);
    }
    return list;
  }

  private directoryUpstreams(): DirectoryUpstream[] {
    return [...this.runtimes.values()].map((r) => ({
      name: r.name,
      ready: r.connection.state === 'ready',
      capabilities: r.connection.serverCapabilities,
      request: (method, params, signal) => r.connection.request(method, params, { signal }),
    }));
  }

  get ready(): boolean {
    return [...this.runtimes.values()].every((r) => r.connection.state === 'ready');
  }

  /** What the dashboard shows; also handy for tests. */
  async snapshot(): Promise<Record<string, unknown>> {
    const sessionsByAgent = new Map<string, number>();
    for (const s of this.front.sessions.values())
      sessionsByAgent.set(s.agent.id, (sessionsByAgent.get(s.agent.id) ?? 0) + 1);
    let leases: Awaited<ReturnType<StateStore['listLeases']>> = [];
    let storeOk = true;
    try {
      leases = await this.store.listLeases();
    } catch {
      storeOk = false;
    }
    return {
      replica: this.replicaId,
      store: { kind: this.store.kind, ok: storeOk && this.storeOk },
      agents: this.agents
        .list()
        .map((a) => ({ id: a.id, tenant: a.tenant, weight: a.weight, sessions: sessionsByAgent.get(a.id) ?? 0 })),
      upstreams: [...this.runtimes.values()].map((r) => ({
        name: r.name,
        state: r.connection.state,
        pid: r.connection.pid ?? null,
        breaker: r.breaker.state,
        tools: [...this.catalog.all()].filter((t) => t.upstream === r.name).length,
        ...r.queue.snapshot(),
      })),
      // A holder on this replica is shown as its agent and tool; one on another replica by its owner id.
      leases: leases.map((l) => {
        const call = this.runner.inFlight.get(l.holder);
        return call ? { ...l, agent: call.agent, tool: call.tool } : l;
      }),
      calls: [...this.runner.inFlight.values()].map((c) => ({ ...c, ms: Date.now() - c.startedAt })).slice(0, 100),
      recent: this.recent.list().slice(0, 50),
    };
  }

  private extraRoutes(req: IncomingMessage, res: ServerResponse, path: string): boolean {
    if (req.method !== 'GET') return false;
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok');
      return true;
    }
    if (path === '/readyz') {
      const states = Object.fromEntries([...this.runtimes.values()].map((r) => [r.name, r.connection.state]));
      const body = JSON.stringify({ ready: this.ready, upstreams: states });
      res.writeHead(this.ready ? 200 : 503, { 'content-type': 'application/json' });
      res.end(body);
      return true;
    }
    if (path === '/metrics') {
      void this.metrics.render().then(({ contentType, body }) => {
        res.writeHead(200, { 'content-type': contentType });
        res.end(body);
      });
      return true;
    }
    if (!this.loaded.config.server.dashboard) return false;
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(dashboardPage());
      return true;
    }
    if (path === '/api/dashboard') {
      void this.snapshot().then((snap) => {
        const body = JSON.stringify(snap);
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(body);
      });
      return true;
    }
    return false;
  }

  private watchSecrets(): void {
    for (const w of this.watchers) w.close();
    this.watchers = [];
    for (const file of this.loaded.secretFiles) {
      try {
        // Editors and secret managers replace files (rename), so any event on the file triggers a (debounced) reload.
        this.watchers.push(watch(file, () => this.scheduleReload()));
      } catch (err) {
        this.logger.warn({ err, file }, 'cannot watch secret file; send SIGHUP after rotating it');
      }
    }
  }

  private scheduleReload(): void {
    clearTimeout(this.reloadTimer);
    this.reloadTimer = setTimeout(() => this.reloadSecrets('file changed'), 100);
  }

  /**
   * Re-reads the config file and applies what can change live: secrets (upstream env/headers: HTTP upstreams use the
   * new header on the next call, stdio upstreams are replaced blue/green) and agents (tokens, allow-lists, weights).
   * Structural changes (new upstreams, store, server) need a restart and are reported as such.
   */
  async reloadSecrets(reason: string): Promise<void> {
    if (!this.loaded.path || this.stopping) return;
    let next: LoadedConfig;
    try {
      next = loadConfig(this.loaded.path);
    } catch (err) {
      this.logger.error({ err: (err as Error).message }, 'config reload failed; keeping the running config');
      return;
    }
    const prev = this.loaded;
    this.loaded = next;
    this.agents.replace(next.config.agents);
    this.toolLists.clear();
    for (const [name, ucfg] of Object.entries(next.config.upstreams)) {
      const runtime = this.runtimes.get(name);
      const old = prev.config.upstreams[name];
      if (!runtime) {
        this.logger.warn({ upstream: name }, 'new upstream in config: restart the bus to add it');
        continue;
      }
      if (JSON.stringify(old) !== JSON.stringify(ucfg)) {
        try {
          await runtime.connection.reconfigure(ucfg);
          this.logger.info({ upstream: name, reason }, 'upstream reconfigured live');
        } catch (err) {
          this.logger.error({ err, upstream: name }, 'live reconfiguration failed; the old connection stays');
        }
      }
      await this.refreshTools(name);
    }
    this.watchSecrets();
  }

  /** Stops taking calls, lets in-flight calls finish (bounded), then closes upstreams and the store. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    process.off('SIGHUP', this.onSighup);
    clearInterval(this.storeProbe);
    clearTimeout(this.reloadTimer);
    for (const w of this.watchers) w.close();
    await this.front?.close();
    for (const r of this.runtimes.values()) r.queue.close();
    await Promise.all([...this.runtimes.values()].map((r) => r.connection.close().catch(() => {})));
    await this.store?.close().catch(() => {});
  }
}
