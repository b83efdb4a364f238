// The Streamable HTTP agent front at /mcp, written directly on node:http because it is on the hot path of every call
// (see docs/architecture.md for the measurement that chose this over the SDK's transport). It owns the HTTP side of
// a request: routing, the Host/Origin guard (origin-guard.ts), bearer authentication, body and shape limits
// (request-shape.ts), JSON-RPC framing (single and batch), JSON or SSE responses, sessions (session-table.ts), and
// the request boundary: nothing a request does can throw past it, and every byte that leaves goes through the
// secret redactor and the response cap. The MCP methods themselves live in rpc.ts and the pipeline.
import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { HeaderDeclaration } from '../catalog/mcp-param-headers.js';
import type { Limits } from '../config/schema.js';
import { carryTraceHeaders } from '../observe/tracing.js';
import type { AgentIdentity } from '../pipeline/context.js';
import { AgentAsks } from './agent-asks.js';
import { type AuthOutcome, isFailure } from './auth-outcome.js';
import type { Authenticator } from './authenticator.js';
import { type HeaderRefusal, headerRefusal } from './header-checks.js';
import { cannotAsk, InputRounds, type Opened } from './input-rounds.js';
import { envelopeRefusal, isModernEnvelope } from './modern-envelope.js';
import { originGuard } from './origin-guard.js';
import type { ParkedCall } from './parked-calls.js';
import { jsonDepthExceeds, validRequestId } from './request-shape.js';
import type { SealBinding } from './request-state.js';
import {
  CACHEABLE,
  type CallEnv,
  handleRequest,
  INVALID_REQUEST,
  isModernRequest,
  LOG_LEVELS,
  METHOD_NOT_FOUND,
  MODERN_VERSION,
  PARSE_ERROR,
  type RpcDeps,
  RpcError,
  withCacheHints,
} from './rpc.js';
import { type Session, SessionTable } from './session-table.js';
import { SubscriptionTable, type SubscriptionUpstream } from './subscriptions.js';
import { wrapUri } from './upstream-directory.js';

type JsonRpcMessage = {
  jsonrpc?: unknown;
  id?: unknown;
  method?: unknown;
  params?: Record<string, unknown>;
  result?: unknown;
  error?: unknown;
};

type Reply = Record<string, unknown>;

/** A 2026-07-28 `subscriptions/listen` stream: which notifications it asked for, and its subscription id. */
interface Listener {
  readonly res: ServerResponse;
  readonly agent: AgentIdentity;
  readonly endpoint: string | undefined;
  readonly id: string;
  readonly filter: Record<string, unknown>;
  /** Set once the stream is acknowledged: nothing is written to it before. */
  open?: boolean;
}

const SUBSCRIPTION_ID_META = 'io.modelcontextprotocol/subscriptionId';
/** Resource URIs one `subscriptions/listen` request may subscribe to. */
const MAX_LISTEN_URIS = 64;
/** Which `notifications` flag of a listen request asks for which notification. */
const LISTEN_FILTER: Record<string, string> = {
  'notifications/tools/list_changed': 'toolsListChanged',
  'notifications/prompts/list_changed': 'promptsListChanged',
  'notifications/resources/list_changed': 'resourcesListChanged',
};

/** JSON-RPC "server error" range: a request refused by one of the bus's limits. */
export const LIMIT_EXCEEDED = -32000;

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

function rpcError(id: unknown, code: number, message: string, data?: unknown): Reply {
  return {
    jsonrpc: '2.0',
    id: id ?? null,
    error: data === undefined ? { code, message } : { code, message, data },
  };
}

function byteLength(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

/** What a request answered as SSE can send the agent while it runs. */
interface CallStream {
  progress: (params: Record<string, unknown>) => void;
  log: (params: Record<string, unknown>) => void;
  ask: (
    method: string,
    params: Record<string, unknown> | undefined,
    caps: Record<string, unknown>,
  ) => Promise<Record<string, unknown>>;
}

export class HttpFront {
  readonly server: Server;
  readonly sessions: SessionTable;
  private readonly subscriptions: SubscriptionTable<Session | Listener>;
  /** Session-less requests in flight, per TCP connection: a notifications/cancelled reaches only its own connection. */
  private readonly connectionInflight = new WeakMap<Socket, Map<string | number, AbortController>>();
  private readonly sweeper: NodeJS.Timeout;
  private readonly guard: ReturnType<typeof originGuard>;
  /** Open 2026-07-28 `subscriptions/listen` streams. */
  private readonly listeners = new Set<Listener>();
  /** Requests toolbus sent to agents (an upstream's sampling/elicitation) awaiting the agent's answer, by id. */
  /** Upstream requests relayed to 2025 agents on their calls' SSE streams, awaiting the agents' answers. */
  private readonly asks = new AgentAsks();
  /** Multi round-trip requests of 2026-07-28 agents: sealed states and parked calls (input-rounds.ts). */
  private readonly rounds: InputRounds;
  /** Set by close(): requests that arrive on connections still open are refused while calls in flight finish. */
  private draining = false;
  /** POST requests whose response has not finished: a drain waits for these too, so no reply is cut mid-write. */
  private openPosts = 0;

  constructor(private readonly opts: HttpFrontOptions) {
    this.rounds = new InputRounds(opts.requestStateKey);
    this.guard = originGuard(opts.host, opts.allowedHosts, opts.allowedOrigins);
    this.subscriptions = new SubscriptionTable(opts.subscriptionUpstream);
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
    for (const l of this.listeners) l.res.end();
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
    const flag = LISTEN_FILTER[method];
    if (flag !== undefined && !to) {
      for (const l of this.listeners) {
        if (l.filter[flag] !== true || !l.open) continue;
        const tagged = {
          ...params,
          _meta: { ...(params?._meta as Record<string, unknown>), [SUBSCRIPTION_ID_META]: l.id },
        };
        l.res.write(
          `event: message\ndata: ${this.opts.redact(JSON.stringify({ jsonrpc: '2.0', method, params: tagged }))}\n\n`,
        );
      }
    }
    let frame: string | undefined;
    for (const s of this.sessions.values()) {
      if (s.streams.size === 0 || (to && !to(s))) continue;
      frame ??= `event: message\ndata: ${this.opts.redact(JSON.stringify({ jsonrpc: '2.0', method, ...(params ? { params } : {}) }))}\n\n`;
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
      const frame = `event: message\ndata: ${text}\n\n`;
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
            (batch ? null : this.headersDisagree(req.headers, m, endpoint)))
          : null;
        if (refusal === null) entries.push(m);
        else if (!batch) {
          this.opts.logger.info({ agent: agent.id, code: refusal.code }, 'request refused: 2026-07-28 envelope');
          return this.sendJson(res, refusal.status, rpcError(m.id, refusal.code, refusal.message, refusal.data));
        } else entries.push(rpcError(m.id, refusal.code, refusal.message, refusal.data));
      } else if (typeof m.method === 'string') {
        this.notification(m, session, req.socket);
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
    if (first.method === 'subscriptions/listen' && !batch) return await this.openListen(res, agent, endpoint, first);
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
          ? this.dispatch(e as JsonRpcMessage, agent, endpoint, session, controllers[i]!, req.socket)
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
   * A 2026-07-28 `subscriptions/listen` stream (SEP-2575): acknowledged first, then the list-changed notifications
   * the request asked for, each tagged with the subscription id, until the agent closes it. At most
   * `limits.maxSessionsPerAgent` open per agent.
   */
  private async openListen(
    res: ServerResponse,
    agent: AgentIdentity,
    endpoint: string | undefined,
    m: Reply,
  ): Promise<void> {
    let mine = 0;
    for (const l of this.listeners) if (l.agent.id === agent.id) mine++;
    if (mine >= this.opts.limits.maxSessionsPerAgent) {
      this.sendJson(
        res,
        429,
        rpcError(m.id, LIMIT_EXCEEDED, `Too many subscription streams: agent ${agent.id} has ${mine} open`),
      );
      return;
    }
    const params = (m.params ?? {}) as Record<string, unknown>;
    const filter = (params.notifications ?? {}) as Record<string, unknown>;
    const listener: Listener = { res, agent, endpoint, id: `sub-${randomUUID()}`, filter };
    // Counted and cleaned up from the start: an agent that goes away while its subscriptions are being taken leaves
    // nothing behind, and concurrent opens cannot pass the cap.
    this.listeners.add(listener);
    let ping: NodeJS.Timeout | undefined;
    res.on('close', () => {
      clearInterval(ping);
      this.listeners.delete(listener);
      this.subscriptions.dropSession(listener);
    });
    // Resource subscriptions are taken before the stream is acknowledged: a URI the agent may not read, or one its
    // upstream refuses, fails the request as a whole.
    const uris = filter.resourceSubscriptions;
    if (uris !== undefined) {
      const refused = await this.subscribeListener(listener, uris);
      if (res.destroyed) {
        this.subscriptions.dropSession(listener);
        return;
      }
      if (refused) {
        this.subscriptions.dropSession(listener);
        this.listeners.delete(listener);
        this.sendJson(res, refused.status, rpcError(m.id, refused.code, refused.message));
        return;
      }
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const ack = {
      jsonrpc: '2.0',
      method: 'notifications/subscriptions/acknowledged',
      params: { _meta: { [SUBSCRIPTION_ID_META]: listener.id } },
    };
    res.write(`event: message\ndata: ${JSON.stringify(ack)}\n\n`);
    listener.open = true;
    ping = setInterval(() => res.write(': keepalive\n\n'), 25_000).unref();
  }

  /** The `resourceSubscriptions` of a listen request, each subscribed to; or why not. */
  private async subscribeListener(
    listener: Listener,
    uris: unknown,
  ): Promise<{ status: number; code: number; message: string } | undefined> {
    if (!Array.isArray(uris) || uris.length > MAX_LISTEN_URIS || uris.some((u) => typeof u !== 'string'))
      return {
        status: 400,
        code: -32602,
        message: `Invalid params: resourceSubscriptions must be at most ${MAX_LISTEN_URIS} URIs`,
      };
    try {
      for (const uri of uris as string[]) {
        const at = this.opts.deps.directory.locate(listener.agent, uri, listener.endpoint);
        await this.subscriptions.subscribe(listener, at.upstream, at.uri);
      }
      return undefined;
    } catch (err) {
      if (err instanceof RpcError) return { status: 400, code: err.code, message: err.message };
      const e = err as { code?: unknown; message?: string };
      return {
        status: 502,
        code: typeof e.code === 'number' ? e.code : -32603,
        message: `The upstream refused the subscription: ${e.message ?? 'error'}`,
      };
    }
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
      if (!res.destroyed) res.write(`event: message\ndata: ${text}\n\n`);
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
            ? await this.dispatch(e as JsonRpcMessage, agent, endpoint, session, controllers[i]!, socket, {
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

  private notification(m: JsonRpcMessage, session: Session | null, socket: Socket): void {
    if (m.method === 'notifications/cancelled') {
      const requestId = m.params?.requestId;
      if (typeof requestId !== 'string' && typeof requestId !== 'number') return;
      const ctl = session ? session.inflight.get(requestId) : this.connectionInflight.get(socket)?.get(requestId);
      ctl?.abort(new Error(typeof m.params?.reason === 'string' ? m.params.reason : 'cancelled by the agent'));
    }
    // notifications/initialized, roots/list_changed and others need no action.
  }

  private inflightFor(session: Session | null, socket: Socket): Map<string | number, AbortController> {
    if (session) return session.inflight;
    let map = this.connectionInflight.get(socket);
    if (!map) {
      map = new Map();
      this.connectionInflight.set(socket, map);
    }
    return map;
  }

  private async dispatch(
    m: JsonRpcMessage,
    agent: AgentIdentity,
    endpoint: string | undefined,
    session: Session | null,
    ctl: AbortController,
    socket: Socket,
    stream?: CallStream,
  ): Promise<Reply> {
    const id = m.id as string | number;
    const method = m.method as string;
    const params = m.params !== null && typeof m.params === 'object' && !Array.isArray(m.params) ? m.params : undefined;
    if (m.params !== undefined && params === undefined)
      return rpcError(id, -32602, 'Invalid params: params must be an object');
    const modern = isModernRequest(params, method);
    if (modern && method !== 'server/discover') {
      const meta = params?._meta as Record<string, unknown>;
      const v = meta['io.modelcontextprotocol/protocolVersion'];
      if (v !== MODERN_VERSION) {
        return rpcError(id, -32602, `Unsupported protocol version ${String(v).slice(0, 64)}`, {
          supported: [MODERN_VERSION],
        });
      }
    }
    if (method === 'initialize' && modern)
      return rpcError(id, METHOD_NOT_FOUND, 'initialize is not part of protocol revision 2026-07-28');
    // A multi round-trip retry brings back the requestState toolbus sealed (input-rounds.ts).
    const binding = { agentId: agent.id, endpoint, method, params };
    // The 2025 revisions have no multi round-trip fields: an agent cannot slip an unsealed state past the seal there.
    const opened: Opened = modern ? this.rounds.open(binding) : { kind: 'run', params: withoutRoundFields(params) };
    if (opened.kind === 'refuse') return rpcError(id, -32602, opened.message);
    if (opened.kind === 'resume') return this.resume(id, opened.call, binding);
    const forwarded = opened.params;
    const inflight = this.inflightFor(session, socket);
    // A second request with an id already in flight on this session/connection would hijack its cancellation.
    if (inflight.has(id)) return rpcError(id, INVALID_REQUEST, 'Invalid Request: this id is already in flight');
    inflight.set(id, ctl);
    // The client's capabilities: from its session's initialize, or (2026-07-28) from this request's _meta.
    const caps =
      session?.clientCapabilities ??
      (((params?._meta as Record<string, unknown> | undefined)?.['io.modelcontextprotocol/clientCapabilities'] ??
        {}) as Record<string, unknown>);
    const parking = modern ? this.rounds.parkable(agent.id, method) : undefined;
    const env: CallEnv = {
      agent,
      endpoint,
      signal: ctl.signal,
      abort: (reason) => ctl.abort(reason),
      progress: stream?.progress,
      log: stream?.log,
      clientCapabilities: caps,
      // A 2026-07-28 agent is asked through an InputRequiredResult (parked-calls.ts); a 2025 one on its call's SSE
      // stream. On a JSON response nothing can be sent to the agent mid-call: the asker refuses.
      ask: parking
        ? this.rounds.askerFor(parking, caps)
        : stream && !modern
          ? (method: string, p: Record<string, unknown> | undefined) => stream.ask(method, p, caps)
          : (method: string) => Promise.reject(cannotAsk(method)),
      ...(session
        ? {
            setLogLevel: (level: string) => {
              session.logLevel = level;
            },
            subscriptions: {
              subscribe: (upstream: string, uri: string) => this.subscriptions.subscribe(session, upstream, uri),
              unsubscribe: (upstream: string, uri: string) => this.subscriptions.unsubscribe(session, upstream, uri),
            },
          }
        : {}),
    };
    try {
      const running = handleRequest(this.opts.deps, env, method, forwarded);
      if (!modern) return { jsonrpc: '2.0', id, result: await running };
      const result = parking
        ? await this.rounds.step(parking, binding, running)
        : this.rounds.sealed(await running, binding);
      return modernReply(id, method, result);
    } catch (err) {
      return this.failure(id, method, err);
    } finally {
      inflight.delete(id);
    }
  }

  /** SEP-2243: headers that mirror the body must agree with it (header-checks.ts). Single requests only. */
  private headersDisagree(
    headers: IncomingHttpHeaders,
    m: JsonRpcMessage,
    endpoint: string | undefined,
  ): HeaderRefusal | null {
    const params =
      m.params !== null && typeof m.params === 'object' ? (m.params as Record<string, unknown>) : undefined;
    const name = params?.name;
    let decls: HeaderDeclaration[] = [];
    if (m.method === 'tools/call' && typeof name === 'string' && name.length <= 128) {
      const { catalog } = this.opts.deps;
      const tool = endpoint === undefined ? catalog.get(name) : catalog.byUpstreamName(endpoint, name);
      decls = tool?.headerDeclarations ?? [];
    }
    return headerRefusal(headers, m.method as string, params, decls);
  }

  /** The retry of a parked call (input-rounds.ts): the call's next step, not a new run of the request. */
  private async resume(
    id: string | number,
    call: ParkedCall<Record<string, unknown>>,
    binding: SealBinding,
  ): Promise<Reply> {
    try {
      const r = await this.rounds.resume(call, binding);
      return r.kind === 'refuse' ? rpcError(id, -32602, r.message) : modernReply(id, binding.method, r.result);
    } catch (err) {
      return this.failure(id, binding.method, err);
    }
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
    const write = (msg: Record<string, unknown>) =>
      stream.write(`event: message\ndata: ${this.opts.redact(JSON.stringify(msg))}\n\n`);
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

  private failure(id: string | number, method: string, err: unknown): Reply {
    if (err instanceof RpcError) return rpcError(id, err.code, err.message, err.data);
    this.opts.logger.error({ err, method: method.slice(0, 100) }, 'request failed');
    return rpcError(id, -32603, 'Internal error');
  }
}

function withoutRoundFields(params: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (params?.requestState === undefined && params?.inputResponses === undefined) return params;
  const { requestState: _state, inputResponses: _responses, ...rest } = params;
  return rest;
}

/** A 2026-07-28 result: an InputRequiredResult as it is; others with caching hints where due, and `resultType`. */
function modernReply(id: string | number, method: string, result: Record<string, unknown>): Reply {
  if (result.resultType === 'input_required') return { jsonrpc: '2.0', id, result };
  const hinted = CACHEABLE.has(method) ? withCacheHints(result) : result;
  // A tools/call that became a task (SEP-2663) says so; everything else is complete.
  const resultType = result.resultType === 'task' ? 'task' : 'complete';
  return { jsonrpc: '2.0', id, result: { ...hinted, resultType } };
}
