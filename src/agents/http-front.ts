// The Streamable HTTP agent front at /mcp, written directly on node:http because it is on the hot path of every call
// (see docs/architecture.md for the measurement that chose this over the SDK's transport). It owns the HTTP side of
// a request: routing, the Host/Origin guard (origin-guard.ts), bearer authentication, body and shape limits
// (request-shape.ts), JSON-RPC framing (single and batch), JSON or SSE responses, sessions (session-table.ts), and
// the request boundary: nothing a request does can throw past it, and every byte that leaves goes through the
// secret redactor and the response cap. Each JSON-RPC request is run by call-dispatch.ts, 2026-07-28 listen streams
// live in listen-streams.ts, and the MCP methods themselves in rpc.ts and the pipeline.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { Limits } from '../config/schema.js';
import { carryTraceHeaders } from '../observe/tracing.js';
import type { AgentIdentity } from '../pipeline/context.js';
import { AgentAsks } from './agent-asks.js';
import { type AuthOutcome, isFailure } from './auth-outcome.js';
import type { Authenticator } from './authenticator.js';
import { CallDispatcher } from './call-dispatch.js';
import { InputRounds } from './input-rounds.js';
import { type Listener, ListenStreams, SUBSCRIPTION_ID_META } from './listen-streams.js';
import { envelopeRefusal, isModernEnvelope } from './modern-envelope.js';
import { originGuard } from './origin-guard.js';
import { jsonDepthExceeds, validRequestId } from './request-shape.js';
import { INVALID_REQUEST, LOG_LEVELS, PARSE_ERROR, type RpcDeps } from './rpc.js';
import { type Session, SessionTable } from './session-table.js';
import { SubscriptionTable, type SubscriptionUpstream } from './subscriptions.js';
import { wrapUri } from './upstream-directory.js';
import { type JsonRpcMessage, LIMIT_EXCEEDED, type Reply, rpcError, sseEvent } from './wire.js';

export interface HttpFrontOptions {
  /** The key that seals 2026-07-28 requestState, shared through the store (request-state.ts). */
  requestStateKey?: Buffer | undefined;
  host: string;
  port: number;
  allowedHosts: readonly string[];
  allowedOrigins: readonly string[];
  maxBodyBytes: number;
  sessionIdleMs: number;
  limits: Limits;
  auth: Authenticator;
  deps: RpcDeps;
  logger: Logger;
  /** Replaces every configured secret, in any encoding, in text about to leave the process. */
  redact: (text: string) => string;
  /** Whether /mcp/{name} names a configured upstream. */
  hasUpstream: (name: string) => boolean;
  /** Where resource subscriptions go upstream. */
  subscriptionUpstream: (name: string) => SubscriptionUpstream | undefined;
  /** Other routes (health, metrics, dashboard); returns false when it did not handle the request. */
  extraRoutes: (req: IncomingMessage, res: ServerResponse, path: string) => boolean | Promise<boolean>;
}

function byteLength(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

export class HttpFront {
  readonly server: Server;
  readonly sessions: SessionTable;
  private readonly subscriptions: SubscriptionTable<Session | Listener>;
  private readonly sweeper: NodeJS.Timeout;
  private readonly guard: ReturnType<typeof originGuard>;
  /** Open 2026-07-28 `subscriptions/listen` streams (listen-streams.ts). */
  private readonly listens: ListenStreams;
  /** Requests toolbus sent to agents (an upstream's sampling/elicitation) awaiting the agent's answer, by id. */
  /** Upstream requests relayed to 2025 agents on their calls' SSE streams, awaiting the agents' answers. */
  private readonly asks = new AgentAsks();
  /** Multi round-trip requests of 2026-07-28 agents: sealed states and parked calls (input-rounds.ts). */
  private readonly rounds: InputRounds;
  /** Runs each JSON-RPC request of a POST (call-dispatch.ts). */
  private readonly calls: CallDispatcher;
  /** Set by close(): requests that arrive on connections still open are refused while calls in flight finish. */
  private draining = false;
  /** POST requests whose response has not finished: a drain waits for these too, so no reply is cut mid-write. */
  private openPosts = 0;

  constructor(private readonly opts: HttpFrontOptions) {
    this.rounds = new InputRounds(opts.requestStateKey);
    this.guard = originGuard(opts.host, opts.allowedHosts, opts.allowedOrigins);
    this.subscriptions = new SubscriptionTable(opts.subscriptionUpstream);
    this.listens = new ListenStreams({
      subscriptions: this.subscriptions,
      locate: (agent, uri, endpoint) => opts.deps.directory.locate(agent, uri, endpoint),
      redact: opts.redact,
      maxPerAgent: () => this.opts.limits.maxSessionsPerAgent,
      refuse: (res, status, body) => this.sendJson(res, status, body),
    });
    this.calls = new CallDispatcher({
      deps: opts.deps,
      logger: opts.logger,
      rounds: this.rounds,
      subscriptions: this.subscriptions,
    });
    this.sessions = new SessionTable({
      maxPerAgent: opts.limits.maxSessionsPerAgent,
      idleMs: opts.sessionIdleMs,
      onEnd: (s) => this.subscriptions.dropSession(s),
    });
    this.server = createServer(
      {
        keepAliveTimeout: 65_000,
        headersTimeout: opts.limits.headersTimeoutMs,
        requestTimeout: 60_000,
        // How often Node checks those timeouts (default 30 s): half-open connections go within about a second.
        connectionsCheckingInterval: Math.min(1000, opts.limits.headersTimeoutMs),
      },
      (req, res) => this.route(req, res),
    );
    // Half-open and idle connections count against this; beyond it new connections are dropped by the kernel side.
    this.server.maxConnections = opts.limits.maxConnections;
    // A connection that sends nothing is dropped after headersTimeoutMs (Node's own header timeout starts only with
    // the first byte); the first request clears the timer, and keep-alive idleness is Node's keepAliveTimeout.
    this.server.on('connection', (socket: Socket) => {
      socket.setTimeout(opts.limits.headersTimeoutMs, () => socket.destroy());
    });
    this.server.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
      else socket.destroy();
    });
    const sweepEvery = Math.max(1000, Math.min(30_000, Math.floor(opts.sessionIdleMs / 4)));
    this.sweeper = setInterval(() => this.sessions.sweep(), sweepEvery).unref();
  }

  listen(): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.port, this.opts.host, () => {
        this.server.off('error', reject);
        const addr = this.server.address();
        if (addr === null || typeof addr === 'string') return reject(new Error('no address'));
        resolve({ host: this.opts.host, port: addr.port });
      });
    });
  }

  /**
   * Drains, then closes: stops accepting connections, refuses new requests on open ones (503), waits until `busy()`
   * says no call is in flight or `graceMs` passes, then ends every session and connection (cutting what is left).
   */
  async close(graceMs = 2000, busy: () => number = () => 0): Promise<void> {
    clearInterval(this.sweeper);
    this.draining = true;
    this.server.close();
    this.server.closeIdleConnections();
    const until = Date.now() + graceMs;
    while ((busy() > 0 || this.openPosts > 0) && Date.now() < until) await new Promise((r) => setTimeout(r, 25));
    this.sessions.clear();
    this.listens.endAll();
    this.server.closeAllConnections();
  }

  /** A live reload changed the limits: per-request caps apply from the next request on. */
  setLimits(limits: Limits): void {
    this.opts.limits = limits;
    this.server.maxConnections = limits.maxConnections;
  }

  /**
   * Sends a notification to the open session streams (e.g. notifications/tools/list_changed): to every session, or
   * to those `to` accepts.
   */
  broadcast(method: string, params?: Record<string, unknown>, to?: (s: Session) => boolean): void {
    if (!to) this.listens.notify(method, params);
    let frame: string | undefined;
    for (const s of this.sessions.values()) {
      if (s.streams.size === 0 || (to && !to(s))) continue;
      frame ??= sseEvent(this.opts.redact(JSON.stringify({ jsonrpc: '2.0', method, ...(params ? { params } : {}) })));
      for (const stream of s.streams) stream.write(frame);
    }
  }

  /** `notifications/resources/updated` goes to the sessions that subscribed to that URI and may still read it. */
  relayUpdated(upstream: string, params: Record<string, unknown> | undefined): void {
    const uri = params?.uri;
    if (typeof uri !== 'string') return;
    const watchers = this.subscriptions.sessionsFor(upstream, uri);
    for (const s of watchers) {
      if (!s.agent.allows(`${upstream}__*`)) continue;
      const shown = s.endpoint === undefined ? wrapUri(upstream, uri) : uri;
      const listening = 'res' in s;
      if (listening && !s.open) continue;
      const meta = listening ? { _meta: { [SUBSCRIPTION_ID_META]: s.id } } : {};
      const text = this.opts.redact(
        JSON.stringify({
          jsonrpc: '2.0',
          method: 'notifications/resources/updated',
          params: { ...params, uri: shown, ...meta },
        }),
      );
      const frame = sseEvent(text);
      if (listening) s.res.write(frame);
      else for (const stream of s.streams) stream.write(frame);
    }
  }

  /**
   * An upstream's log message goes to the sessions that asked for its level (logging/setLevel) and may use that
   * upstream. (On a shared upstream the protocol does not say which call a log message belongs to.)
   */
  relayLog(upstream: string, params: Record<string, unknown> | undefined, deliveredTo?: string): void {
    const level = LOG_LEVELS.indexOf(typeof params?.level === 'string' ? params.level : 'info');
    this.broadcast(
      'notifications/message',
      params,
      (s) =>
        s.agent.id !== deliveredTo &&
        s.logLevel !== undefined &&
        level >= LOG_LEVELS.indexOf(s.logLevel) &&
        (s.endpoint === undefined || s.endpoint === upstream) &&
        s.agent.allows(`${upstream}__*`),
    );
  }

  private sendJson(res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>): void {
    const text = this.opts.redact(JSON.stringify(body));
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': byteLength(text), ...headers });
    res.end(text);
  }

  /** The request boundary: whatever a handler throws or rejects with ends this request alone. */
  private route(req: IncomingMessage, res: ServerResponse): void {
    req.socket.setTimeout(0);
    if (req.method === 'POST') {
      this.openPosts++;
      res.once('close', () => this.openPosts--);
    }
    const fail = (err: unknown) => {
      this.opts.logger.error({ err, url: req.url?.slice(0, 200) }, 'request failed at the boundary');
      if (!res.headersSent) this.sendJson(res, 500, rpcError(null, -32603, 'Internal error'), { connection: 'close' });
      else res.destroy();
    };
    try {
      const done = this.routeUnsafe(req, res);
      if (done) done.catch(fail);
    } catch (err) {
      fail(err);
    }
  }

  private routeUnsafe(req: IncomingMessage, res: ServerResponse): Promise<unknown> | undefined {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    // Liveness says nothing about the bus and must answer probes that use an IP as Host.
    if (path !== '/healthz') {
      const verdict = this.guard(req);
      if (verdict !== 'ok') {
        this.opts.logger.info({ path, reason: verdict }, 'request refused by the Host/Origin guard');
        this.sendJson(
          res,
          403,
          rpcError(null, INVALID_REQUEST, verdict === 'host' ? 'Host not allowed' : 'Origin not allowed'),
        );
        return undefined;
      }
    }
    if (path === '/mcp' || path.startsWith('/mcp/')) {
      if (this.draining) {
        this.opts.logger.info({ method: req.method }, 'request refused: the bus is shutting down');
        this.sendJson(res, 503, rpcError(null, LIMIT_EXCEEDED, 'toolbus is shutting down; retry shortly'), {
          'retry-after': '1',
          connection: 'close',
        });
        return undefined;
      }
      // /mcp/{upstream} serves one upstream under its own names; same authentication, allow-lists and pipeline.
      let endpoint: string | undefined;
      try {
        endpoint = path === '/mcp' ? undefined : decodeURIComponent(path.slice(5));
      } catch {
        endpoint = '';
      }
      if (endpoint !== undefined && !this.opts.hasUpstream(endpoint)) {
        this.sendJson(res, 404, rpcError(null, -32601, 'No such upstream on this bus'));
        return undefined;
      }
      // Static tokens answer synchronously; only a JWT costs a promise.
      const outcome = this.opts.auth.authenticate(req.headers.authorization, req.socket);
      if (outcome instanceof Promise) return outcome.then((o) => this.serveMcp(req, res, o, endpoint));
      return this.serveMcp(req, res, outcome, endpoint);
    }
    if (path.startsWith('/.well-known/oauth-protected-resource')) {
      const metadata = this.opts.auth.metadataFor(path);
      if (metadata) {
        this.sendJson(res, 200, metadata, { 'access-control-allow-origin': '*' });
        return undefined;
      }
    }
    const handled = this.opts.extraRoutes(req, res, path);
    if (handled === true) return undefined;
    const notFound = () => {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
    };
    if (handled === false) return void notFound();
    return handled.then((h) => {
      if (!h) notFound();
    });
  }

  private serveMcp(
    req: IncomingMessage,
    res: ServerResponse,
    outcome: AuthOutcome,
    endpoint: string | undefined,
  ): Promise<void> | undefined {
    if (isFailure(outcome)) {
      // The caller learns why its token failed and where to log in, and nothing else: no tool list, no hint of
      // which agents exist.
      this.opts.logger.info({ reason: outcome.failure }, 'request refused: bearer token not accepted');
      const { header, body } = this.opts.auth.challenge(outcome);
      this.sendJson(res, 401, body, { 'www-authenticate': header });
      return undefined;
    }
    const agent = outcome;
    if (req.method === 'POST') return this.post(req, res, agent, endpoint);
    if (req.method === 'GET') return void this.openStream(req, res, agent, endpoint);
    if (req.method === 'DELETE') return void this.deleteSession(req, res, agent, endpoint);
    res.writeHead(405, { allow: 'GET, POST, DELETE', 'content-length': 0 });
    res.end();
    return undefined;
  }

  /** null: no session header; undefined: a header naming no session of this agent (404 sent). */
  private sessionFor(
    req: IncomingMessage,
    res: ServerResponse,
    agent: AgentIdentity,
    endpoint: string | undefined,
  ): Session | null | undefined {
    const id = req.headers['mcp-session-id'];
    if (typeof id !== 'string') return null;
    const s = this.sessions.lookup(id, agent);
    // A session belongs to the endpoint it was opened on: names mean different things on /mcp and /mcp/{upstream}.
    if (!s || s.endpoint !== endpoint) {
      this.sendJson(res, 404, rpcError(null, -32001, 'Session not found'));
      return undefined;
    }
    return s;
  }

  private openStream(req: IncomingMessage, res: ServerResponse, agent: AgentIdentity, endpoint?: string): void {
    const s = this.sessionFor(req, res, agent, endpoint);
    if (s === undefined) return;
    if (s === null) {
      res.writeHead(405, { allow: 'POST', 'content-length': 0 });
      res.end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.write(': stream open\n\n');
    s.streams.add(res);
    const ping = setInterval(() => res.write(': keepalive\n\n'), 25_000).unref();
    // The stream lives no longer than the token that opened it; the client reopens it with a fresh one.
    const left = agent.expiresAt === undefined ? Number.POSITIVE_INFINITY : agent.expiresAt - Date.now();
    const expiry = left < 2 ** 31 - 1 ? setTimeout(() => res.end(), Math.max(0, left)).unref() : undefined;
    res.on('close', () => {
      clearTimeout(expiry);
      clearInterval(ping);
      s.streams.delete(res);
      s.lastSeen = Date.now();
    });
  }

  private deleteSession(req: IncomingMessage, res: ServerResponse, agent: AgentIdentity, endpoint?: string): void {
    const s = this.sessionFor(req, res, agent, endpoint);
    if (s === undefined) return;
    if (s) this.sessions.end(s);
    res.writeHead(s ? 204 : 400, { 'content-length': 0 });
    res.end();
  }

  private readBody(req: IncomingMessage, res: ServerResponse): Promise<string | null> {
    const max = this.opts.maxBodyBytes;
    const tooLarge = () =>
      this.sendJson(res, 413, rpcError(null, INVALID_REQUEST, `Request body larger than ${max} bytes`), {
        connection: 'close',
      });
    return new Promise((resolve) => {
      const declared = Number(req.headers['content-length'] ?? 0);
      if (declared > max) {
        tooLarge();
        req.resume();
        return resolve(null);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > max) {
          if (!res.headersSent) tooLarge();
          req.destroy();
          resolve(null);
          return;
        }
        chunks.push(c);
      });
      req.on('end', () =>
        resolve(chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8')),
      );
      req.on('error', () => resolve(null));
    });
  }

  private async post(
    req: IncomingMessage,
    res: ServerResponse,
    agent: AgentIdentity,
    endpoint: string | undefined,
  ): Promise<void> {
    const body = await this.readBody(req, res);
    if (body === null) return;
    const limits = this.opts.limits;
    if (jsonDepthExceeds(body, limits.maxJsonDepth)) {
      this.opts.logger.info({ agent: agent.id }, 'request refused: JSON nests too deep');
      return this.sendJson(
        res,
        400,
        rpcError(null, INVALID_REQUEST, `Invalid Request: JSON nests deeper than ${limits.maxJsonDepth} levels`),
      );
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      return this.sendJson(res, 400, rpcError(null, PARSE_ERROR, 'Parse error: the body is not JSON'));
    }
    const batch = Array.isArray(parsed);
    const messages = (batch ? parsed : [parsed]) as JsonRpcMessage[];
    if (messages.length === 0 || messages.some((m) => m === null || typeof m !== 'object' || Array.isArray(m))) {
      return this.sendJson(res, 400, rpcError(null, INVALID_REQUEST, 'Invalid Request'));
    }
    if (messages.length > limits.maxBatch) {
      this.opts.logger.info({ agent: agent.id, batch: messages.length }, 'request refused: batch too long');
      return this.sendJson(
        res,
        400,
        rpcError(null, INVALID_REQUEST, `Invalid Request: a batch holds at most ${limits.maxBatch} requests`),
      );
    }
    let session = this.sessionFor(req, res, agent, endpoint);
    if (session === undefined) return;
    carryTraceHeaders(messages, req.headers.traceparent, req.headers.tracestate);

    const hv = req.headers['mcp-protocol-version'];
    const headerVersion = typeof hv === 'string' ? hv : undefined;
    // Each entry is a request to run, or a reply already decided (an id the bus cannot echo back safely).
    const entries: (JsonRpcMessage | Reply)[] = [];
    for (const m of messages) {
      if (m.id !== undefined && m.id !== null && !validRequestId(m.id, limits.maxIdLength)) {
        entries.push(
          rpcError(
            null,
            INVALID_REQUEST,
            `Invalid Request: id must be an integer or a string of at most ${limits.maxIdLength} characters`,
          ),
        );
      } else if (typeof m.method === 'string' && m.id !== undefined && m.id !== null) {
        // A 2026-07-28 request whose envelope is broken is refused before anything runs (SEP-2575).
        const modern = isModernEnvelope(m.method, m.params, headerVersion);
        const refusal = modern
          ? (envelopeRefusal(m.method, m.params, headerVersion) ??
            (batch ? null : this.calls.headersDisagree(req.headers, m, endpoint)))
          : null;
        if (refusal === null) entries.push(m);
        else if (!batch) {
          this.opts.logger.info({ agent: agent.id, code: refusal.code }, 'request refused: 2026-07-28 envelope');
          return this.sendJson(res, refusal.status, rpcError(m.id, refusal.code, refusal.message, refusal.data));
        } else entries.push(rpcError(m.id, refusal.code, refusal.message, refusal.data));
      } else if (typeof m.method === 'string') {
        this.calls.notification(m, session, req.socket);
      } else if (m.id !== undefined && m.id !== null && ('result' in m || 'error' in m)) {
        // The agent's answer to a request toolbus relayed from an upstream; only the agent asked may answer it.
        this.asks.answer(agent.id, m);
      }
    }
    if (entries.length === 0) {
      res.writeHead(202, { 'content-length': 0 });
      res.end();
      return;
    }

    const first = entries[0]!;
    if (first.method === 'subscriptions/listen' && !batch) return await this.listens.open(res, agent, endpoint, first);
    let headers: Record<string, string> | undefined;
    if (first.method === 'initialize' && !batch) {
      // The 2025-era handshake opens a stateful session. The 2026-07-28 revision never sends initialize.
      session = this.sessions.open(agent, endpoint);
      if (session !== null) {
        const caps = (first.params as Record<string, unknown> | undefined)?.capabilities;
        if (caps !== null && typeof caps === 'object') session.clientCapabilities = caps as Record<string, unknown>;
      }
      if (session === null) {
        this.opts.logger.warn({ agent: agent.id }, 'request refused: agent has too many sessions in use');
        return this.sendJson(
          res,
          429,
          rpcError(
            first.id,
            LIMIT_EXCEEDED,
            `Too many sessions: agent ${agent.id} has ${limits.maxSessionsPerAgent} in use; close one (DELETE) first`,
          ),
        );
      }
      headers = { 'mcp-session-id': session.id };
    }

    const accept = req.headers.accept ?? '';
    const wantsSse = !accept.includes('application/json') && accept.includes('text/event-stream');
    // A tools/call is answered as SSE when the agent can take events on it: progress it asked for, log messages its
    // session asked for (logging/setLevel), or requests (sampling, elicitation) an upstream may send during the
    // call, when its client declared it can answer them.
    const canAsk = (r: JsonRpcMessage | Reply) => {
      const caps =
        session?.clientCapabilities ??
        ((((r.params as Record<string, unknown> | undefined)?._meta as Record<string, unknown> | undefined)?.[
          'io.modelcontextprotocol/clientCapabilities'
        ] ?? {}) as Record<string, unknown>);
      return caps.sampling !== undefined || caps.elicitation !== undefined;
    };
    const streamWanted =
      accept.includes('text/event-stream') &&
      entries.some(
        (r) =>
          r.method === 'tools/call' &&
          (((r.params as Record<string, unknown> | undefined)?._meta as Record<string, unknown> | undefined)
            ?.progressToken !== undefined ||
            canAsk(r) ||
            session?.logLevel !== undefined),
      );
    const controllers = this.watchClose(res, entries.length);
    if (wantsSse || streamWanted) {
      this.respondSse(res, agent, endpoint, session, entries, batch, headers, controllers, req.socket);
      return;
    }
    const replies = await Promise.all(
      entries.map((e, i) =>
        'method' in e && typeof e.method === 'string'
          ? this.calls.dispatch(e as JsonRpcMessage, agent, endpoint, session, controllers[i]!, req.socket)
          : Promise.resolve(e as Reply),
      ),
    );
    if (res.destroyed) return;
    this.noteProtocol(session, first, replies[0]);
    const budget = { left: limits.maxResponseBytes };
    const parts = replies.map((r) => this.encode(r, budget));
    const text = batch ? `[${parts.join(',')}]` : parts[0]!;
    // A 2026-07-28 MissingRequiredClientCapability is answered with HTTP 400 (SEP-2575); everything else in-band.
    const status = !batch && (replies[0]?.error as { code?: unknown } | undefined)?.code === -32021 ? 400 : 200;
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': byteLength(text), ...headers });
    res.end(text);
  }

  /**
   * One reply as redacted JSON text, within what is left of the request's response budget. A reply that cannot be
   * serialized, or would not fit, becomes a JSON-RPC error for that request alone.
   */
  private encode(reply: Reply, budget: { left: number }): string {
    let text: string;
    try {
      text = this.opts.redact(JSON.stringify(reply));
    } catch (err) {
      this.opts.logger.warn({ err: (err as Error).message }, 'reply could not be serialized');
      text = JSON.stringify(rpcError(reply.id, -32603, 'Internal error: the result could not be serialized'));
    }
    const size = text.length * 3 > budget.left ? byteLength(text) : text.length;
    if (size > budget.left) {
      this.opts.logger.warn({ bytes: size, limit: this.opts.limits.maxResponseBytes }, 'reply over the response cap');
      text = JSON.stringify(
        rpcError(reply.id, LIMIT_EXCEEDED, `Response larger than ${this.opts.limits.maxResponseBytes} bytes`, {
          limit: this.opts.limits.maxResponseBytes,
        }),
      );
    }
    budget.left -= Math.min(budget.left, text.length);
    return text;
  }

  private noteProtocol(session: Session | null, request: JsonRpcMessage | Reply, reply: Reply | undefined): void {
    if (!session || request.method !== 'initialize') return;
    const pv = (reply?.result as Record<string, unknown> | undefined)?.protocolVersion;
    if (typeof pv === 'string') session.protocolVersion = pv;
  }

  private respondSse(
    res: ServerResponse,
    agent: AgentIdentity,
    endpoint: string | undefined,
    session: Session | null,
    entries: (JsonRpcMessage | Reply)[],
    batch: boolean,
    headers: Record<string, string> | undefined,
    controllers: AbortController[],
    socket: Socket,
  ): void {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', ...headers });
    const budget = { left: this.opts.limits.maxResponseBytes };
    const writeText = (text: string) => {
      if (!res.destroyed) res.write(sseEvent(text));
    };
    const progress = (params: Record<string, unknown>) => {
      // Progress is best effort: once the budget is spent, it is dropped rather than crowding out the reply.
      const text = this.opts.redact(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/progress', params }));
      if (text.length * 2 > budget.left) return;
      budget.left -= text.length;
      writeText(text);
    };
    // The upstream's log messages during the call, at the level the session asked for (all, if it asked none).
    const log = (params: Record<string, unknown>) => {
      const level = LOG_LEVELS.indexOf(typeof params.level === 'string' ? params.level : 'info');
      if (session?.logLevel !== undefined && level < LOG_LEVELS.indexOf(session.logLevel)) return;
      const text = this.opts.redact(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/message', params }));
      if (text.length * 2 > budget.left) return;
      budget.left -= text.length;
      writeText(text);
    };
    // Each request's asks end with it: an agent that went away never leaves an upstream waiting for an answer.
    const askFor =
      (signal: AbortSignal) =>
      (method: string, params: Record<string, unknown> | undefined, caps: Record<string, unknown>) =>
        this.asks.ask(agent.id, caps, method, params, signal, (msg) => {
          const text = this.opts.redact(JSON.stringify(msg));
          budget.left -= text.length;
          writeText(text);
        });
    void Promise.all(
      entries.map(async (e, i) => {
        const reply =
          'method' in e && typeof e.method === 'string'
            ? await this.calls.dispatch(e as JsonRpcMessage, agent, endpoint, session, controllers[i]!, socket, {
                progress,
                log,
                ask: askFor(controllers[i]!.signal),
              })
            : (e as Reply);
        this.noteProtocol(session, e, reply);
        if (!batch) writeText(this.encode(reply, budget));
        return reply;
      }),
    )
      .then((replies) => {
        if (batch) writeText(`[${replies.map((r) => this.encode(r, budget)).join(',')}]`);
      })
      .catch((err: unknown) => this.opts.logger.error({ err }, 'SSE response failed'))
      .finally(() => res.end());
  }

  /** One controller per request (cancellable one by one); all abort if the agent goes away before the reply. */
  private watchClose(res: ServerResponse, n: number): AbortController[] {
    const controllers = Array.from({ length: n }, () => new AbortController());
    res.once('close', () => {
      if (res.writableFinished) return;
      const gone = new Error('agent went away');
      for (const c of controllers) c.abort(gone);
    });
    return controllers;
  }

  /**
   * An agent's roots, asked on one of its 2025 sessions' standalone streams (for its `sharing: per-agent` upstream
   * sessions); undefined when no session of it can be asked (none open, no stream, no roots capability), or it does
   * not answer within 10 s.
   */
  async agentRoots(agentId: string): Promise<{ uri: string; name?: string }[] | undefined> {
    // A client opens its standalone stream just after initialize, and an upstream asks for roots just after its own
    // session opens, often on that agent's first call: a session that can be asked but has no stream yet is waited
    // for, up to a second.
    const until = Date.now() + 1000;
    for (;;) {
      const sessions = [...this.sessions.values()].filter(
        (s) => s.agent.id === agentId && s.clientCapabilities.roots !== undefined,
      );
      if (sessions.length === 0) return undefined;
      const s = sessions.find((x) => x.streams.size > 0);
      if (s) return this.askRoots(agentId, s);
      if (Date.now() >= until) return undefined;
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** roots/list on the session's standalone stream; the answer, kept to well-formed roots (1,000 at most). */
  private async askRoots(agentId: string, s: Session): Promise<{ uri: string; name?: string }[] | undefined> {
    const stream = [...s.streams][0]!;
    const write = (msg: Record<string, unknown>) => stream.write(sseEvent(this.opts.redact(JSON.stringify(msg))));
    const answer = await this.asks
      .ask(agentId, s.clientCapabilities, 'roots/list', undefined, AbortSignal.timeout(10_000), write)
      .catch(() => undefined);
    const roots = answer?.roots;
    if (!Array.isArray(roots)) return undefined;
    return roots
      .filter((r): r is { uri: string; name?: unknown } => typeof (r as { uri?: unknown })?.uri === 'string')
      .slice(0, 1000)
      .map((r) => ({ uri: r.uri, ...(typeof r.name === 'string' ? { name: r.name } : {}) }));
  }
}
