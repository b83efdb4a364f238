// One shared, supervised connection per upstream MCP server (a stdio child process or a Streamable HTTP URL). Each
// connection runs one generation at a time (generation.ts: the transport, the handshake, request correlation); it
// restarts a failed generation with backoff (the backoff resets only once a connection has stayed up), and rotates
// credentials blue/green: the new generation takes new calls once ready, the old one drains, then closes.
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { isStdioUpstream, type UpstreamConfig } from '../config/schema.js';
import { UpstreamUnavailable } from './errors.js';
import { Generation, type Root, type UpstreamRequestOptions, type UpstreamState } from './generation.js';
import type { UpstreamAuth } from './oauth/upstream-auth.js';

export type { Root, ServerRequestAsker, UpstreamRequestOptions, UpstreamState } from './generation.js';

/** A connection must stay up this long before a later failure restarts the backoff from its first step. */
const STABLE_AFTER_MS = 10_000;

export class UpstreamConnection extends EventEmitter {
  private current: Generation | undefined;
  private readonly draining = new Set<Generation>();
  /** Generations still starting (a connect attempt, a rotation): close() ends them too, or their process would live on. */
  private readonly starting = new Set<Generation>();
  private _state: UpstreamState = 'connecting';
  private restarts = 0;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private stableTimer: NodeJS.Timeout | undefined;
  private nextAttemptAt = 0;
  private stopped = false;
  private connecting: Promise<void> | undefined;

  constructor(
    readonly name: string,
    private cfg: UpstreamConfig,
    private readonly opts: {
      logger?: Logger;
      maxMessageBytes?: number;
      auth?: UpstreamAuth | undefined;
      /** A per-agent session's agent's own roots (upstream-unit.ts); absent: roots come from config alone. */
      agentRoots?: () => Promise<readonly Root[] | undefined>;
    } = {},
  ) {
    super();
    // needs_login is a state too (for /readyz, metrics, the catalog); a new login reconnects at once.
    // The first connection of an upstream (the shared or listing one) follows login changes for the whole upstream.
    if (opts.auth && !opts.auth.onChange) opts.auth.onChange = () => this.onAuthChange();
  }

  private onAuthChange(): void {
    this.emit('state', this.state);
    if (this.opts.auth?.needsLogin || !this.retryTimer || this.stopped) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    void this.start();
  }

  get state(): UpstreamState {
    if (this.opts.auth?.needsLogin && this._state !== 'closed') return 'needs_login';
    return this._state;
  }

  get pid(): number | undefined {
    return this.current?.pid;
  }

  get serverCapabilities(): Record<string, unknown> | undefined {
    return this.current?.capabilities;
  }

  /** The protocol revisions the current generation speaks with the upstream; empty while not connected. */
  get revisions(): string[] {
    return this.current?.revisions ?? [];
  }

  get instructions(): string | undefined {
    return this.current?.instructions;
  }

  get restartCount(): number {
    return this.restarts;
  }

  private setState(s: UpstreamState): void {
    if (this._state === s) return;
    this._state = s;
    this.emit('state', s);
  }

  /** First attempt; resolves when ready or when the attempt failed (then retries go on in the background). */
  start(): Promise<void> {
    this.connecting ??= this.connect().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    // A rotation may have connected in the meantime: never run two generations side by side by accident.
    if (this.current?.ready) {
      this.setState('ready');
      return;
    }
    this.setState('connecting');
    const cfg = this.cfg;
    const gen = this.spawn(cfg);
    this.starting.add(gen);
    try {
      await gen.start(cfg.connectTimeoutMs);
      // Stopped, or a rotation connected while this attempt ran (with the old settings): it is not needed.
      if (this.stopped || this.current?.ready) {
        gen.onClosed = undefined;
        gen.fail('closed');
        return;
      }
      this.current = gen;
      this.markStableLater(gen);
      this.setState('ready');
      this.opts.logger?.info({ pid: gen.pid }, 'upstream connected');
    } catch (err) {
      gen.onClosed = undefined;
      gen.fail('start failed');
      // A rotation that connected meanwhile is what counts: this attempt's failure (the old credentials, say) must
      // not mark a working upstream down, and nothing needs restarting.
      if (this.stopped || this.current?.ready) return;
      this.opts.logger?.warn({ err: (err as Error).message }, 'upstream connection failed');
      this.scheduleRestart();
    } finally {
      this.starting.delete(gen);
    }
  }

  /**
   * The backoff starts over only once a connection has stayed up for a while: an upstream that crashes right after
   * its handshake keeps backing off instead of restarting every few hundred milliseconds forever.
   */
  private markStableLater(gen: Generation): void {
    clearTimeout(this.stableTimer);
    this.stableTimer = setTimeout(() => {
      if (this.current === gen && gen.ready) this.attempt = 0;
    }, STABLE_AFTER_MS);
    this.stableTimer.unref();
  }

  /** When a call refused now might succeed: the next restart attempt, or soon. */
  retryInMs(): number {
    return Math.max(100, this.nextAttemptAt - Date.now());
  }

  private spawn(cfg: UpstreamConfig): Generation {
    const gen = new Generation(
      this.name,
      cfg,
      this.opts.logger,
      this.opts.maxMessageBytes ?? 16 * 1024 * 1024,
      this.opts.auth,
      this.opts.agentRoots,
    );
    gen.onNotification = (method, params, deliveredTo) => this.emit('notification', method, params, deliveredTo);
    gen.onClosed = (g) => {
      if (g !== this.current) return;
      this.current = undefined;
      if (this.stopped) return;
      this.opts.logger?.warn('upstream connection lost; restarting');
      this.scheduleRestart();
    };
    return gen;
  }

  private scheduleRestart(): void {
    if (this.stopped || this.retryTimer) return;
    this.setState('down');
    const { initialDelayMs, maxDelayMs } = this.cfg.restart;
    const base = Math.min(maxDelayMs, initialDelayMs * 2 ** this.attempt);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.attempt++;
    this.nextAttemptAt = Date.now() + delay;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.restarts++;
      this.emit('restart', this.restarts);
      void this.start();
    }, delay);
  }

  async ready(timeoutMs: number): Promise<boolean> {
    if (this._state === 'ready') return true;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.off('state', onState);
        resolve(false);
      }, timeoutMs);
      const onState = (s: UpstreamState) => {
        if (s === 'ready' || s === 'closed') {
          clearTimeout(timer);
          this.off('state', onState);
          resolve(s === 'ready');
        }
      };
      this.on('state', onState);
    });
  }

  request(
    method: string,
    params: Record<string, unknown> | undefined,
    opts?: UpstreamRequestOptions,
  ): Promise<Record<string, unknown>> {
    const gen = this.current;
    if (this.opts.auth?.needsLogin) return Promise.reject(this.opts.auth.needsLoginError());
    if (!gen?.ready || this._state !== 'ready') {
      return Promise.reject(
        new UpstreamUnavailable(this.name, this.retryInMs(), this._state === 'closed' ? 'closed' : 'restarting'),
      );
    }
    return gen.request(method, params, opts);
  }

  /**
   * Live credential rotation. HTTP: the next request uses the new headers (same session). Stdio: blue/green: a new
   * process with the new env takes new calls once ready; the old one finishes its in-flight calls, then exits.
   */
  async reconfigure(cfg: UpstreamConfig): Promise<void> {
    const old = this.current;
    if (!isStdioUpstream(cfg) && old && !isStdioUpstream(old.cfg) && old.cfg.url === cfg.url) {
      this.cfg = cfg;
      old.cfg = cfg;
      return;
    }
    const gen = this.spawn(cfg);
    this.starting.add(gen);
    try {
      await gen.start(cfg.connectTimeoutMs);
    } catch (err) {
      gen.onClosed = undefined;
      gen.fail('start failed');
      throw new Error(`the new ${this.name} connection did not start (${(err as Error).message}); keeping the old one`);
    } finally {
      this.starting.delete(gen);
    }
    // Closed while the new generation started (an evicted session, the bus stopping): nothing would ever close it.
    if (this.stopped) {
      gen.onClosed = undefined;
      gen.fail('closed');
      return;
    }
    this.cfg = cfg;
    this.current = gen;
    this.markStableLater(gen);
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.setState('ready');
    if (old) {
      old.onClosed = undefined;
      this.draining.add(old);
      void old.drain(cfg.timeoutMs * 2).finally(() => this.draining.delete(old));
    }
    this.opts.logger?.info({ pid: gen.pid }, 'upstream rotated');
  }

  /** In-flight requests on the current and draining generations (for tests and the dashboard). */
  get inFlight(): number {
    let n = this.current?.inFlight ?? 0;
    for (const g of this.draining) n += g.inFlight;
    return n;
  }

  async close(): Promise<void> {
    this.stopped = true;
    this.opts.auth?.close();
    clearTimeout(this.retryTimer);
    clearTimeout(this.stableTimer);
    this.retryTimer = undefined;
    const gens = [this.current, ...this.draining, ...this.starting].filter((g): g is Generation => g !== undefined);
    this.current = undefined;
    this.draining.clear();
    this.starting.clear();
    for (const g of gens) {
      g.onClosed = undefined;
      g.fail('bus shutting down');
    }
    await Promise.all(gens.map((g) => g.transport.close().catch(() => {})));
    this.setState('closed');
  }
}
