// One generation of an upstream connection: a transport (our stdio link, or the SDK's Streamable HTTP client
// transport plus a session-less one for 2026-07-28 requests), the handshake that learns which protocol revisions the
// upstream speaks, and a thin JSON-RPC correlation layer over it (the bus passes results through as they are; the SDK
// Client's per-call schema validation would cost a core on the hot path). It decides what a failure means for each
// request, because only here is it known whether the request's bytes were written, and it answers the upstream's own
// requests (ping, roots from config; sampling and elicitation routed to the agent whose call asked).
//
// What a failure means for a request: refused before sending is UpstreamUnavailable (nothing was done); already
// written when the connection then fails, for any reason, is UpstreamLost (its outcome is unknown), whatever happened
// to the others. connection.ts supervises generations: restarts with backoff, rotation, draining.
import { LATEST_PROTOCOL_VERSION, SdkHttpError, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { getDefaultEnvironment } from '@modelcontextprotocol/client/stdio';
import type { Logger } from 'pino';
import { type HttpUpstreamConfig, isStdioUpstream, type UpstreamConfig } from '../config/schema.js';
import { BusError } from '../errors.js';
import { answerInputRounds, type Era, isModernMeta, MODERN_VERSION, withEnvelope, withoutEnvelope } from './eras.js';
import {
  parseRetryAfter,
  UpstreamLocalError,
  UpstreamLost,
  UpstreamRateLimited,
  UpstreamResultTooLarge,
  UpstreamRpcError,
  UpstreamUnavailable,
} from './errors.js';
import type { UpstreamAuth } from './oauth/upstream-auth.js';
import { routeServerRequest, watchSseStream } from './server-requests.js';
import { LocalSendError, StdioLink } from './stdio-link.js';

function isEmptyObject(v: unknown): boolean {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0;
}

/** A root as MCP names it (roots/list). */
export interface Root {
  uri: string;
  name?: string | undefined;
}

/** `needs_login`: an OAuth upstream whose grant is gone until an operator runs `toolbus login NAME`. */
export type UpstreamState = 'connecting' | 'ready' | 'down' | 'closed' | 'needs_login';

export interface UpstreamRequestOptions {
  /** Abort → notifications/cancelled goes upstream and the call rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Transport-level safety net only; the pipeline owns deadlines. */
  timeoutMs?: number;
  /** Upstream notifications/progress for this request. */
  onProgress?: (params: Record<string, unknown>) => void;
  /** The agent whose request this is (for attributing the upstream's log messages); absent for the bus's own. */
  agentId?: string | undefined;
  /** HTTP headers for a 2026-07-28 request (SEP-2243 `Mcp-Param-*`); never sent in a 2025 session. */
  headers?: Record<string, string> | undefined;
  /**
   * The agent whose call this is, for the upstream's log messages (notifications/message) while it runs: when it is
   * the only agent with such calls in flight here, they go to it (DESIGN.md section 13).
   */
  onLog?: { readonly agentId: string; write(params: Record<string, unknown>): void } | undefined;
  /** Called right before the request is handed to the transport (the "first byte" moment). */
  onSent?: () => void;
  /**
   * Who answers the upstream's own requests (sampling, elicitation) made while this request runs: the agent whose
   * call this is. Only requests that carry one can be asked.
   */
  asker?: ServerRequestAsker;
}

/** An agent that can answer an upstream's request during its call (see server-requests.ts for the routing rule). */
export interface ServerRequestAsker {
  readonly agentId: string;
  /** What the agent's client declared (sent to a 2026-only upstream in place of the bus's own). */
  readonly capabilities?: Record<string, unknown>;
  ask(method: string, params: Record<string, unknown> | undefined): Promise<Record<string, unknown>>;
}

type ServerRequest = { id: string | number; method: string; params?: Record<string, unknown> };

type JsonRpc = {
  jsonrpc: '2.0';
  id?: string | number;
  method?: string;
  params?: Record<string, unknown>;
  result?: Record<string, unknown>;
  error?: { code: number; message: string; data?: unknown };
};

interface Pending {
  resolve: (result: Record<string, unknown>) => void;
  reject: (err: unknown) => void;
  onProgress: ((params: Record<string, unknown>) => void) | undefined;
  progressToken: string | undefined;
  asker: ServerRequestAsker | undefined;
  /** Questions of the upstream routed to this call and not answered yet. */
  asking: number;
  /** The transport the request went on. */
  transport: StdioLink | StreamableHTTPClientTransport;
  onLog: UpstreamRequestOptions['onLog'];
  /** The agent whose request this is; undefined for the bus's own. */
  agentId: string | undefined;
  cleanup: () => void;
}

/** What toolbus offers upstreams as a client: it relays sampling and elicitation to agents, and answers roots. */
const CLIENT_CAPABILITIES = { roots: { listChanged: false }, sampling: {}, elicitation: {} };

const VERSION = '0.1.0';
const CLIENT_INFO = { name: 'toolbus', version: VERSION };
/** How long `server/discover` may take before an upstream in `protocol: auto` counts as 2025-only. */
const DISCOVER_PROBE_MS = 3000;
/** Safety net for a request whose answer never comes and whose caller set no deadline. */
const DEFAULT_REQUEST_TIMEOUT_MS = 10 * 60_000;

/** The JSON-RPC ids in a request body the HTTP transport sent (read only when its response was too large). */
function idsInBody(body: unknown): number[] {
  if (typeof body !== 'string') return [];
  try {
    const parsed = JSON.parse(body) as unknown;
    const list = Array.isArray(parsed) ? parsed : [parsed];
    return list.map((m) => (m as { id?: unknown } | null)?.id).filter((id): id is number => typeof id === 'number');
  } catch {
    return [];
  }
}

/** One transport and its in-flight requests: the unit that is started, drained and closed. */
export class Generation {
  private readonly pending = new Map<number, Pending>();
  /** HTTP: the upstream's own request id → the id of our request on whose response stream it arrived. */
  private readonly streamOrigin = new Map<string, number>();
  private readonly byToken = new Map<string, Pending>();
  private nextId = 1;
  closed = false;
  ready = false;
  capabilities: Record<string, unknown> | undefined;
  instructions: string | undefined;
  protocolVersion: string | undefined;
  /** The revisions this upstream answered: the 2025 session (`initialize`) and the stateless 2026-07-28 one. */
  readonly eras = { legacy: false, modern: false };
  private legacyVersion: string | undefined;
  /** The id of the open subscriptions/listen request to a 2026-only upstream. */
  private listenId: number | undefined;
  private listenBody: string | undefined;

  /** The protocol revisions toolbus speaks with this upstream, oldest first (for `check` and the dashboard). */
  get revisions(): string[] {
    return [
      ...(this.eras.legacy && this.legacyVersion ? [this.legacyVersion] : []),
      ...(this.eras.modern ? [MODERN_VERSION] : []),
    ];
  }
  /**
   * HTTP: the stateless 2026-07-28 requests go on a transport of their own that never has a session (stdio carries
   * both on its one link, but a process serves only one revision).
   */
  private readonly modernTransport: StreamableHTTPClientTransport | undefined;
  /** Retry-After of the last 429 seen by this generation's fetch (HTTP only). */
  lastRetryAfterMs = 1000;
  readonly transport: StdioLink | StreamableHTTPClientTransport;
  onClosed: ((gen: Generation) => void) | undefined;
  /** `deliveredTo`: the agent a log message was already given to, on its call's stream. */
  onNotification:
    | ((method: string, params: Record<string, unknown> | undefined, deliveredTo?: string) => void)
    | undefined;

  constructor(
    readonly name: string,
    /** Mutable for HTTP upstreams only: a rotated header applies to the next request. */
    public cfg: UpstreamConfig,
    private readonly logger: Logger | undefined,
    private readonly maxMessageBytes: number,
    private readonly auth?: UpstreamAuth,
    private readonly agentRoots?: () => Promise<readonly Root[] | undefined>,
  ) {
    if (isStdioUpstream(cfg)) {
      const transport = new StdioLink({
        command: cfg.command,
        args: cfg.args,
        env: { ...getDefaultEnvironment(), ...cfg.env },
        ...(cfg.cwd ? { cwd: cfg.cwd } : {}),
        maxMessageBytes,
      });
      transport.stderr.on('data', (chunk: Buffer) =>
        this.logger?.debug({ stderr: chunk.toString('utf8').trimEnd() }, 'upstream stderr'),
      );
      transport.onoversized = (id, bytes) => this.oversized(id === undefined ? [] : [id], bytes);
      this.transport = transport;
    } else {
      this.transport = new StreamableHTTPClientTransport(new URL(cfg.url), {
        fetch: (url, init) => this.fetchWithHeaders(url, init),
      });
      if (cfg.protocol !== '2025-11-25') {
        const modern = new StreamableHTTPClientTransport(new URL(cfg.url), {
          fetch: (url, init) => this.fetchWithHeaders(url, init),
        });
        modern.onmessage = (msg: unknown) => this.receive(msg as JsonRpc, modern);
        modern.onerror = (err) => this.logger?.debug({ err: err.message }, 'upstream transport error (2026-07-28)');
        this.modernTransport = modern;
      }
    }
    this.transport.onmessage = (msg: unknown) => this.receive(msg as JsonRpc, this.transport);
    this.transport.onclose = () => this.fail('connection closed');
    this.transport.onerror = (err) => this.logger?.debug({ err: err.message }, 'upstream transport error');
  }

  get pid(): number | undefined {
    return this.transport instanceof StdioLink ? this.transport.pid : undefined;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  private async fetchWithHeaders(url: string | URL, init?: RequestInit): Promise<Response> {
    const headers = new Headers(init?.headers);
    for (const [k, v] of Object.entries((this.cfg as HttpUpstreamConfig).headers)) headers.set(k, v);
    // OAuth upstreams: bearer token injected, one refresh and one resend on a 401 (src/upstreams/oauth/).
    const res = this.auth ? await this.auth.fetch(url, { ...init, headers }) : await fetch(url, { ...init, headers });
    if (res.status === 429) this.lastRetryAfterMs = parseRetryAfter(res.headers.get('retry-after'));
    return this.capped(res, init?.body);
  }

  /**
   * A response body that may not grow past the message cap: when it does, the requests of that POST fail alone with
   * UpstreamResultTooLarge (the upstream did answer), and the stream is cut. The long-lived GET stream is not capped.
   */
  private capped(res: Response, sentBody: unknown): Response {
    if (!res.body || sentBody === undefined) return res;
    // The long-lived subscriptions/listen stream is not one answer: like the GET stream, it is not capped as a whole.
    // Recognised by the exact body this generation sent, never by what an agent's arguments may contain.
    if (this.listenBody !== undefined && sentBody === this.listenBody) return res;
    const limit = this.maxMessageBytes;
    const declared = Number(res.headers.get('content-length') ?? Number.NaN);
    let seen = 0;
    const overflow = (bytes: number) => this.oversized(idsInBody(sentBody), bytes);
    // Server requests and log messages arriving on a call's own SSE stream belong to that call: requests are noted
    // before the SDK parses them, log messages go to the call from here (the SDK never sees them).
    let origin: number | null | undefined;
    const call = () => (origin ??= idsInBody(sentBody)[0] ?? null);
    const watch = (res.headers.get('content-type') ?? '').includes('text/event-stream')
      ? watchSseStream({
          onRequest: (serverId) => {
            const id = call();
            if (id !== null) this.streamOrigin.set(serverId, id);
          },
          onLog: (params) => {
            const id = call();
            const p = id === null ? undefined : this.pending.get(id);
            // A call already settled (or a stream not ours): the message takes the SDK's way and the usual rule.
            if (!p) return false;
            this.relayLog(params, p.onLog);
            return true;
          },
        })
      : undefined;
    if (declared > limit) {
      void res.body.cancel().catch(() => {});
      overflow(declared);
      return new Response(null, { status: 502, statusText: 'result too large' });
    }
    const counted = res.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          seen += chunk.byteLength;
          if (seen > limit) {
            overflow(seen);
            controller.error(new Error('result too large'));
            return;
          }
          if (!watch) {
            controller.enqueue(chunk);
            return;
          }
          const rest = watch(chunk);
          if (rest) controller.enqueue(rest);
        },
      }),
    );
    return new Response(counted, { status: res.status, statusText: res.statusText, headers: res.headers });
  }

  /** The answers to these requests were larger than the cap: each fails alone; the connection stays. */
  private oversized(ids: number[], bytes: number): void {
    this.logger?.warn({ bytes, limit: this.maxMessageBytes }, 'upstream message over the size cap dropped');
    for (const id of ids) this.settle(id)?.reject(new UpstreamResultTooLarge(this.name, this.maxMessageBytes));
  }

  /**
   * Learns which revisions the upstream speaks (DESIGN.md section 13): over HTTP `server/discover` first, then
   * `initialize`, keeping both when both answer; a stdio process serves one revision, so it is asked `initialize`
   * first (its agents' server-to-client requests need a 2025 session) and `server/discover` only when that fails.
   */
  async start(timeoutMs: number): Promise<void> {
    await this.transport.start();
    const protocol = this.cfg.protocol;
    if (this.modernTransport) {
      await this.modernTransport.start();
      const forced = protocol === '2026-07-28';
      try {
        await this.discover(this.modernTransport, forced ? timeoutMs : Math.min(timeoutMs, DISCOVER_PROBE_MS));
      } catch (err) {
        if (forced) throw err;
        this.logger?.debug({ err: (err as Error).message }, 'upstream does not speak 2026-07-28');
      }
      if (!forced) {
        try {
          await this.initialize(timeoutMs);
        } catch (err) {
          if (!this.eras.modern) throw err;
          this.logger?.debug({ err: (err as Error).message }, 'upstream speaks 2026-07-28 only');
        }
      }
    } else if (protocol === '2026-07-28') {
      await this.discover(this.transport, timeoutMs);
    } else {
      try {
        await this.initialize(timeoutMs);
      } catch (err) {
        if (protocol === '2025-11-25' || !(err instanceof UpstreamRpcError)) throw err;
        await this.discover(this.transport, timeoutMs);
      }
    }
    this.ready = true;
    if (this.eras.modern && !this.eras.legacy) this.listen();
  }

  /**
   * A 2026-07-28-only upstream announces list changes only on a `subscriptions/listen` stream: one is opened for the
   * generation's life, so its tools/list_changed reaches the catalog like a 2025 session's would. Nobody awaits it:
   * it is not a request in flight (a drain does not wait for it).
   */
  private listen(): void {
    const caps = this.capabilities ?? {};
    const notifications: Record<string, boolean> = {};
    for (const [kind, flag] of [
      ['tools', 'toolsListChanged'],
      ['prompts', 'promptsListChanged'],
      ['resources', 'resourcesListChanged'],
    ] as const) {
      if ((caps[kind] as { listChanged?: unknown } | undefined)?.listChanged === true) notifications[flag] = true;
    }
    if (Object.keys(notifications).length === 0) return;
    const params = withEnvelope({ notifications }, CLIENT_CAPABILITIES, CLIENT_INFO);
    const transport = this.modernTransport ?? this.transport;
    this.listenId = this.nextId++;
    const message = { jsonrpc: '2.0', id: this.listenId, method: 'subscriptions/listen', params };
    // The transport serializes the message the same way: the body it sends is this text.
    this.listenBody = JSON.stringify(message);
    transport
      .send(message as never)
      .catch((err: unknown) => this.logger?.debug({ err: (err as Error).message }, 'subscriptions/listen failed'));
  }

  private async initialize(timeoutMs: number): Promise<void> {
    const init = await this.send(
      this.transport,
      'initialize',
      { protocolVersion: LATEST_PROTOCOL_VERSION, capabilities: CLIENT_CAPABILITIES, clientInfo: CLIENT_INFO },
      { timeoutMs },
    );
    this.eras.legacy = true;
    this.legacyVersion = typeof init.protocolVersion === 'string' ? init.protocolVersion : LATEST_PROTOCOL_VERSION;
    this.capabilities = (init.capabilities as Record<string, unknown> | undefined) ?? {};
    this.instructions = typeof init.instructions === 'string' ? init.instructions : undefined;
    this.protocolVersion = typeof init.protocolVersion === 'string' ? init.protocolVersion : LATEST_PROTOCOL_VERSION;
    if (this.transport instanceof StreamableHTTPClientTransport)
      this.transport.setProtocolVersion(this.protocolVersion);
    await this.transport.send({ jsonrpc: '2.0', method: 'notifications/initialized' });
  }

  private async discover(transport: StdioLink | StreamableHTTPClientTransport, timeoutMs: number): Promise<void> {
    const found = await this.send(
      transport,
      'server/discover',
      withEnvelope(undefined, CLIENT_CAPABILITIES, CLIENT_INFO),
      {
        timeoutMs,
      },
    );
    const versions = Array.isArray(found.supportedVersions) ? found.supportedVersions : [];
    if (!versions.includes(MODERN_VERSION)) throw new Error(`server/discover offers no ${MODERN_VERSION}`);
    this.eras.modern = true;
    // A 2025 session's description wins where there is one: the catalog and agents were built on it.
    this.capabilities ??= (found.capabilities as Record<string, unknown> | undefined) ?? {};
    this.instructions ??= typeof found.instructions === 'string' ? found.instructions : undefined;
    this.protocolVersion ??= MODERN_VERSION;
  }

  /**
   * One request to the upstream, in the era its own `_meta` asks for when the upstream has that era, else in the one
   * it has. A 2025 request that must go to a 2026-only upstream is translated (eras.ts: answerInputRounds).
   */
  request(
    method: string,
    params: Record<string, unknown> | undefined,
    opts: UpstreamRequestOptions = {},
  ): Promise<Record<string, unknown>> {
    const asked = isModernMeta(params?._meta);
    const era: Era = this.eras.modern && (asked || !this.eras.legacy) ? 'modern' : 'legacy';
    // A 2026 agent's envelope must not reach a 2025 session: a dual-era server would take the request as 2026.
    if (era === 'legacy') return this.send(this.transport, method, asked ? withoutEnvelope(params) : params, opts);
    const transport = this.modernTransport ?? this.transport;
    // What the agent can be asked (its client's capabilities; nothing but roots when it cannot be asked at all), so the
    // upstream asks for nothing toolbus cannot get. A 2025 `elicitation: {}` means form mode; 2026 spells it out.
    const declared = opts.asker?.capabilities ?? {};
    const caps: Record<string, unknown> = { ...declared, roots: { listChanged: false } };
    if (!opts.asker) {
      delete caps.sampling;
      delete caps.elicitation;
    } else if (isEmptyObject(declared.elicitation)) caps.elicitation = { form: {} };
    const enveloped = (p: Record<string, unknown> | undefined) => withEnvelope(p, caps, CLIENT_INFO);
    if (asked) return this.send(transport, method, enveloped(params), opts);
    return answerInputRounds(
      (p) => this.send(transport, method, enveloped(p), opts),
      params,
      opts.asker,
      () => this.roots(),
      opts.signal,
    );
  }

  private send(
    transport: StdioLink | StreamableHTTPClientTransport,
    method: string,
    params: Record<string, unknown> | undefined,
    opts: UpstreamRequestOptions = {},
  ): Promise<Record<string, unknown>> {
    if (this.closed) return Promise.reject(new UpstreamUnavailable(this.name, 500, 'connection closed'));
    const id = this.nextId++;
    const { signal, onProgress } = opts;
    if (signal?.aborted) return Promise.reject(signal.reason);
    let message: JsonRpc = { jsonrpc: '2.0', id, method, ...(params ? { params } : {}) };
    let progressToken: string | undefined;
    if (onProgress) {
      progressToken = `tb-${id}`;
      const meta = { ...((params?._meta as Record<string, unknown> | undefined) ?? {}), progressToken };
      message = { ...message, params: { ...params, _meta: meta } };
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.settle(id)?.reject(new UpstreamLost(this.name, 'no answer in time'));
        void this.cancel(id, 'timeout');
      }, opts.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS);
      const onAbort = () => {
        const p = this.settle(id);
        if (!p) return;
        void this.cancel(id, signal?.reason instanceof Error ? signal.reason.message : 'cancelled');
        p.reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const entry: Pending = {
        resolve,
        reject,
        onProgress,
        progressToken,
        asker: opts.asker,
        asking: 0,
        transport,
        onLog: opts.onLog,
        agentId: opts.agentId ?? opts.onLog?.agentId ?? opts.asker?.agentId,
        cleanup: () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
        },
      };
      this.pending.set(id, entry);
      if (progressToken) this.byToken.set(progressToken, entry);
      opts.onSent?.();
      const headers = opts.headers && transport === this.modernTransport ? { headers: opts.headers } : undefined;
      transport.send(message as never, headers).catch((err: unknown) => this.sendFailed(id, err, transport));
    });
  }

  /**
   * The send of request `id` failed. The request itself gets what its own failure means; when the failure says the
   * connection is gone (session expired, nothing listening), the generation fails and every other request in flight
   * becomes UpstreamLost: they were written, so their outcome is unknown.
   */
  private sendFailed(id: number, err: unknown, transport: StdioLink | StreamableHTTPClientTransport): void {
    const { own, connectionGone } = this.classify(err);
    this.settle(id)?.reject(own);
    // The stateless 2026-07-28 transport has no session to lose: its failures are its requests' own.
    // A 2026-only generation (ready without a 2025 session) fails with its one transport; the discover probe of a
    // generation still starting never does (a 2025 server may well answer it 404).
    const only = this.ready && !this.eras.legacy;
    if (connectionGone && (transport === this.transport || only)) this.fail(connectionGone);
  }

  private classify(err: unknown): { own: Error; connectionGone?: string } {
    if (err instanceof LocalSendError) return { own: new UpstreamLocalError(this.name, err.message) };
    // Refused before anything was sent (needs_login, a failed token refresh): passed on as it is.
    if (err instanceof BusError || err instanceof UpstreamUnavailable) return { own: err };
    if (err instanceof SdkHttpError) {
      const status = err.status;
      if (status === 429) return { own: new UpstreamRateLimited(this.name, this.lastRetryAfterMs) };
      // The server refused before doing anything: unavailable, or not authorized. A 401 is safe to resend.
      if (status === 503 || status === 401 || status === 403)
        return { own: new UpstreamUnavailable(this.name, 1000, `HTTP ${status}`) };
      // Session gone: this request was written and refused, but a proxy in front may have done otherwise; it counts
      // as sent (DESIGN.md section 16), and the connection must start a new session.
      if (status === 404)
        return { own: new UpstreamLost(this.name, 'HTTP 404, session gone'), connectionGone: 'HTTP 404' };
      return { own: new UpstreamLost(this.name, `HTTP ${status}`) };
    }
    const cause = (err as { cause?: { code?: string } } | undefined)?.cause;
    if (cause?.code === 'ECONNREFUSED' || cause?.code === 'ENOTFOUND') {
      // Nothing accepted the connection, so this request's bytes were never written.
      return {
        own: new UpstreamUnavailable(this.name, 500, 'connection refused'),
        connectionGone: 'connection refused',
      };
    }
    if (this.transport instanceof StdioLink && this.transport.pid === undefined)
      return { own: new UpstreamUnavailable(this.name, 500, 'process not running') };
    return { own: new UpstreamLost(this.name, 'send failed') };
  }

  private async cancel(id: number, reason: string): Promise<void> {
    if (this.closed) return;
    try {
      await this.transport.send({
        jsonrpc: '2.0',
        method: 'notifications/cancelled',
        params: { requestId: id, reason },
      });
    } catch {
      // The connection is going away; the upstream drops the request with it.
    }
  }

  private settle(id: number): Pending | undefined {
    const p = this.pending.get(id);
    if (!p) return undefined;
    this.pending.delete(id);
    if (p.progressToken) this.byToken.delete(p.progressToken);
    p.cleanup();
    if (this.closed || !this.ready) this.maybeFinishDrain();
    return p;
  }

  private receive(msg: JsonRpc, from: StdioLink | StreamableHTTPClientTransport): void {
    if (msg.id !== undefined && msg.id === this.listenId && msg.method === undefined) {
      // The upstream ended the listen stream gracefully (its answer to the request): listen again, shortly.
      this.listenId = undefined;
      if (!this.closed) setTimeout(() => this.closed || this.listen(), 1000).unref();
      return;
    }
    if (msg.id !== undefined && msg.method === undefined) {
      const p = this.settle(msg.id as number);
      if (!p) return;
      if (msg.error) p.reject(new UpstreamRpcError(msg.error.code, msg.error.message, msg.error.data));
      else p.resolve(msg.result ?? {});
      return;
    }
    if (msg.method && msg.id !== undefined) {
      void this.answerServerRequest(msg as ServerRequest, from);
      return;
    }
    if (msg.method === 'notifications/progress') {
      const token = msg.params?.progressToken;
      const p = typeof token === 'string' ? this.byToken.get(token) : undefined;
      p?.onProgress?.(msg.params ?? {});
      return;
    }
    if (msg.method === 'notifications/message') {
      this.relayLog(msg.params ?? {}, this.logRecipient());
      return;
    }
    if (msg.method) this.onNotification?.(msg.method, msg.params);
  }

  /** A log message to the call it belongs to (`to`, when known), and to the sessions that asked for its level. */
  private relayLog(params: Record<string, unknown>, to: UpstreamRequestOptions['onLog']): void {
    to?.write(params);
    this.onNotification?.('notifications/message', params, to?.agentId);
  }

  /**
   * Whose call a log message belongs to when it did not come on a call's own stream (over HTTP those go straight to
   * their call: see capped): the protocol does not say, so only when one agent has calls in flight here that can take
   * it (its newest); else nobody in particular, and the sessions that asked for the level get it.
   */
  private logRecipient(): UpstreamRequestOptions['onLog'] {
    let agent: string | undefined;
    let to: UpstreamRequestOptions['onLog'];
    for (const p of this.pending.values()) {
      // Every agent's calls count, those that could take the message or not: a second agent in flight means nobody
      // can say whose call it was. (The bus's own requests, such as catalog refreshes, have no agent.)
      if (p.agentId === undefined) continue;
      if (agent !== undefined && agent !== p.agentId) return undefined;
      agent = p.agentId;
      if (p.onLog) to = p.onLog;
    }
    return to;
  }

  /**
   * A request from the upstream: ping and roots are answered here (roots from config, never from an agent); sampling
   * and elicitation go to the agent whose call caused them (server-requests.ts decides which, or refuses).
   */
  private async answerServerRequest(
    msg: ServerRequest,
    from: StdioLink | StreamableHTTPClientTransport,
  ): Promise<void> {
    const reply = (body: Pick<JsonRpc, 'result' | 'error'>) =>
      this.transport.send({ jsonrpc: '2.0', id: msg.id, ...body } as never).catch(() => {});
    const origin = this.streamOrigin.get(String(msg.id));
    this.streamOrigin.delete(String(msg.id));
    if (msg.method === 'ping') return reply({ result: {} });
    if (msg.method === 'roots/list') return reply({ result: { roots: await this.roots() } });
    // Only calls sent on the transport the question came on can have asked it (a 2026-07-28 call never does).
    const askers = [...this.pending.entries()]
      .filter(([, p]) => p.asker !== undefined && p.transport === from)
      .map(([id, p]) => ({ requestId: id, asker: p.asker!, asking: p.asking }));
    const route = routeServerRequest(msg.method, origin, askers);
    if (!route.ok) {
      if (route.warn) this.logger?.warn({ method: msg.method }, route.message);
      return reply({ error: { code: -32603, message: route.message } });
    }
    const call = this.pending.get(route.requestId);
    if (call) call.asking++;
    try {
      return reply({ result: await route.asker.ask(msg.method, msg.params) });
    } catch (err) {
      const code = typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -32603;
      return reply({ error: { code, message: (err as Error).message } });
    } finally {
      if (call) call.asking--;
    }
  }

  /**
   * What the upstream gets for roots/list: a per-agent session its agent's roots, kept to those inside the config's
   * roots when there are any; everything else (and an agent that cannot be asked) the config's roots.
   */
  private async roots(): Promise<Root[]> {
    const configured = this.cfg.roots ?? [];
    const own = await this.agentRoots?.().catch(() => undefined);
    if (!own) return configured.map((r) => ({ ...r }));
    if (configured.length === 0) return own.map((r) => ({ ...r }));
    // Compared as parsed URLs, so `..` and percent-encoded dots cannot climb out of a configured root.
    const norm = (uri: string) => {
      try {
        return new URL(uri).href;
      } catch {
        return undefined;
      }
    };
    const inside = (uri: string, root: string) => {
      const u = norm(uri);
      const r = norm(root);
      return u !== undefined && r !== undefined && (u === r || u.startsWith(r.endsWith('/') ? r : `${r}/`));
    };
    return own
      .filter((r) => configured.some((c) => inside(r.uri, c.uri)))
      .map((r) => ({ ...r, uri: norm(r.uri) ?? r.uri }));
  }

  /** Rejects everything in flight as lost (it was written: its outcome is unknown) and reports the generation closed. */
  fail(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.ready = false;
    const lost = new UpstreamLost(this.name, reason);
    for (const id of [...this.pending.keys()]) this.settle(id)?.reject(lost);
    this.onClosed?.(this);
    void this.transport.close().catch(() => {});
    void this.modernTransport?.close().catch(() => {});
  }

  private drainResolve: (() => void) | undefined;

  /** Stops taking requests; resolves once in-flight ones finished (or the grace period ran out), then closes. */
  drain(graceMs: number): Promise<void> {
    this.ready = false;
    return new Promise<void>((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        this.drainResolve = undefined;
        this.onClosed = undefined;
        this.fail('connection drained');
        resolve();
      };
      const timer = setTimeout(finish, graceMs);
      this.drainResolve = finish;
      this.maybeFinishDrain();
    });
  }

  private maybeFinishDrain(): void {
    if (this.drainResolve && this.pending.size === 0) this.drainResolve();
  }
}
