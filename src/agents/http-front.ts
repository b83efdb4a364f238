// The Streamable HTTP agent front at /mcp, written directly on node:http because it is on the hot path of every call
// (see docs/architecture.md for the measurement that chose this over the SDK's transport). It owns: the Host/Origin
// guard, bearer authentication, body limits, JSON-RPC framing (single and batch), the choice of JSON or SSE responses,
// stateful sessions (Mcp-Session-Id, GET stream for notifications, DELETE) and stateless requests of both eras, and
// relaying cancellation and progress. Everything else happens in rpc.ts and the pipeline.
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { AgentIdentity } from '../pipeline/context.js';
import { type AuthOutcome, isFailure } from './auth-outcome.js';
import type { Authenticator } from './authenticator.js';
import { isUnspecifiedAddress, LOOPBACK_HOSTS } from './hosts.js';
import {
  type CallEnv,
  handleRequest,
  INVALID_REQUEST,
  isModernRequest,
  METHOD_NOT_FOUND,
  MODERN_VERSION,
  PARSE_ERROR,
  type RpcDeps,
  RpcError,
} from './rpc.js';

type JsonRpcMessage = {
  jsonrpc?: unknown;
  id?: string | number | null;
  method?: unknown;
  params?: Record<string, unknown>;
  result?: unknown;
  error?: unknown;
};

export interface Session {
  readonly id: string;
  readonly agent: AgentIdentity;
  protocolVersion: string;
  lastSeen: number;
  /** Open GET streams that receive server notifications. */
  readonly streams: Set<ServerResponse>;
  /** In-flight requests by JSON-RPC id, for notifications/cancelled. */
  readonly inflight: Map<string | number, AbortController>;
}

export interface HttpFrontOptions {
  host: string;
  port: number;
  allowedHosts: readonly string[];
  allowedOrigins: readonly string[];
  maxBodyBytes: number;
  sessionIdleMs: number;
  auth: Authenticator;
  deps: RpcDeps;
  logger: Logger;
  /** Other routes (health, metrics, dashboard); returns false when it did not handle the request. */
  extraRoutes: (req: IncomingMessage, res: ServerResponse, url: string) => boolean;
}

function hostName(hostHeader: string): string {
  if (hostHeader.startsWith('[')) return hostHeader.slice(0, hostHeader.indexOf(']') + 1);
  const colon = hostHeader.lastIndexOf(':');
  return colon === -1 ? hostHeader : hostHeader.slice(0, colon);
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function rpcError(id: JsonRpcMessage['id'], code: number, message: string): Record<string, unknown> {
  return { jsonrpc: '2.0', id: id ?? null, error: { code, message } };
}

export class HttpFront {
  readonly server: Server;
  readonly sessions = new Map<string, Session>();
  /** Stateless in-flight requests, keyed by agent id and request id, so notifications/cancelled still reaches them. */
  private readonly statelessInflight = new Map<string, AbortController>();
  private readonly sweeper: NodeJS.Timeout;
  private readonly hostAllowed: (host: string) => boolean;

  constructor(private readonly opts: HttpFrontOptions) {
    const extraHosts = new Set(opts.allowedHosts.map((h) => h.toLowerCase()));
    if (!LOOPBACK_HOSTS.has(opts.host) && !isUnspecifiedAddress(opts.host)) extraHosts.add(opts.host.toLowerCase());
    this.hostAllowed = (h) => LOOPBACK_HOSTS.has(h) || extraHosts.has(h);
    this.server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => this.route(req, res));
    this.server.headersTimeout = 30_000;
    this.sweeper = setInterval(() => this.sweepSessions(), Math.min(60_000, opts.sessionIdleMs)).unref();
  }

  listen(): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.port, this.opts.host, () => {
        const addr = this.server.address();
        if (addr === null || typeof addr === 'string') return reject(new Error('no address'));
        resolve({ host: this.opts.host, port: addr.port });
      });
    });
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    for (const s of this.sessions.values()) this.endSession(s);
    this.server.closeIdleConnections();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      setTimeout(() => {
        this.server.closeAllConnections();
        resolve();
      }, 2000).unref();
    });
  }

  /** Sends a notification to every open session stream (e.g. notifications/tools/list_changed). */
  broadcast(method: string, params?: Record<string, unknown>): void {
    const frame = `event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', method, ...(params ? { params } : {}) })}\n\n`;
    for (const s of this.sessions.values()) for (const stream of s.streams) stream.write(frame);
  }

  private sweepSessions(): void {
    const cutoff = Date.now() - this.opts.sessionIdleMs;
    for (const s of this.sessions.values())
      if (s.lastSeen < cutoff && s.inflight.size === 0 && s.streams.size === 0) this.endSession(s);
  }

  private endSession(s: Session): void {
    for (const c of s.inflight.values()) c.abort(new Error('session closed'));
    for (const stream of s.streams) stream.end();
    this.sessions.delete(s.id);
  }

  private guardOrigin(req: IncomingMessage, res: ServerResponse): boolean {
    const host = req.headers.host;
    if (!host || !this.hostAllowed(hostName(host).toLowerCase())) {
      sendJson(res, 403, rpcError(null, INVALID_REQUEST, 'Host not allowed'));
      return false;
    }
    const origin = req.headers.origin;
    if (origin !== undefined) {
      let ok = this.opts.allowedOrigins.includes(origin);
      if (!ok) {
        try {
          ok = LOOPBACK_HOSTS.has(new URL(origin).hostname);
        } catch {
          ok = false;
        }
      }
      if (!ok) {
        sendJson(res, 403, rpcError(null, INVALID_REQUEST, 'Origin not allowed'));
        return false;
      }
    }
    return true;
  }

  private route(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    if (path === '/mcp') {
      if (!this.guardOrigin(req, res)) return;
      // Static tokens answer synchronously; only a JWT costs a promise.
      const outcome = this.opts.auth.authenticate(req.headers.authorization);
      if (outcome instanceof Promise) {
        outcome.then(
          (o) => this.serveMcp(req, res, o),
          (err: unknown) => {
            this.opts.logger.error({ err }, 'authentication failed');
            if (!res.headersSent) sendJson(res, 500, rpcError(null, -32603, 'Internal error'));
          },
        );
      } else this.serveMcp(req, res, outcome);
      return;
    }
    if (path.startsWith('/.well-known/oauth-protected-resource')) {
      if (!this.guardOrigin(req, res)) return;
      const metadata = this.opts.auth.metadataFor(path);
      if (metadata) {
        sendJson(res, 200, metadata, { 'access-control-allow-origin': '*' });
        return;
      }
    }
    if (path.startsWith('/api/') || path === '/') {
      if (!this.guardOrigin(req, res)) return;
    }
    if (this.opts.extraRoutes(req, res, path)) return;
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
  }

  private serveMcp(req: IncomingMessage, res: ServerResponse, outcome: AuthOutcome): void {
    if (isFailure(outcome)) {
      // The caller learns why its token failed and where to log in, and nothing else: no tool list, no hint of
      // which agents exist.
      const { header, body } = this.opts.auth.challenge(outcome);
      sendJson(res, 401, body, { 'www-authenticate': header });
      return;
    }
    const agent = outcome;
    if (req.method === 'POST') return void this.post(req, res, agent);
    if (req.method === 'GET') {
      this.openStream(req, res, agent);
      return;
    }
    if (req.method === 'DELETE') {
      this.deleteSession(req, res, agent);
      return;
    }
    res.writeHead(405, { allow: 'GET, POST, DELETE', 'content-length': 0 });
    res.end();
  }

  private sessionFor(req: IncomingMessage, res: ServerResponse, agent: AgentIdentity): Session | null | undefined {
    const id = req.headers['mcp-session-id'];
    if (typeof id !== 'string') return null;
    const s = this.sessions.get(id);
    // A session is bound to the agent that opened it; another agent's token cannot use (or probe) it.
    if (!s || s.agent.id !== agent.id) {
      sendJson(res, 404, rpcError(null, -32001, 'Session not found'));
      return undefined;
    }
    s.lastSeen = Date.now();
    return s;
  }

  private openStream(req: IncomingMessage, res: ServerResponse, agent: AgentIdentity): void {
    const s = this.sessionFor(req, res, agent);
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
    });
  }

  private deleteSession(req: IncomingMessage, res: ServerResponse, agent: AgentIdentity): void {
    const s = this.sessionFor(req, res, agent);
    if (s === undefined) return;
    if (s) this.endSession(s);
    res.writeHead(s ? 204 : 400, { 'content-length': 0 });
    res.end();
  }

  private readBody(req: IncomingMessage, res: ServerResponse): Promise<string | null> {
    return new Promise((resolve) => {
      const declared = Number(req.headers['content-length'] ?? 0);
      if (declared > this.opts.maxBodyBytes) {
        sendJson(
          res,
          413,
          rpcError(null, INVALID_REQUEST, `Request body larger than ${this.opts.maxBodyBytes} bytes`),
          { connection: 'close' },
        );
        req.resume();
        return resolve(null);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > this.opts.maxBodyBytes) {
          sendJson(
            res,
            413,
            rpcError(null, INVALID_REQUEST, `Request body larger than ${this.opts.maxBodyBytes} bytes`),
            { connection: 'close' },
          );
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

  private async post(req: IncomingMessage, res: ServerResponse, agent: AgentIdentity): Promise<void> {
    const body = await this.readBody(req, res);
    if (body === null) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      return sendJson(res, 400, rpcError(null, PARSE_ERROR, 'Parse error: the body is not JSON'));
    }
    const batch = Array.isArray(parsed);
    const messages = (batch ? parsed : [parsed]) as JsonRpcMessage[];
    if (messages.length === 0 || messages.some((m) => m === null || typeof m !== 'object')) {
      return sendJson(res, 400, rpcError(null, INVALID_REQUEST, 'Invalid Request'));
    }
    let session = this.sessionFor(req, res, agent);
    if (session === undefined) return;

    const requests: JsonRpcMessage[] = [];
    for (const m of messages) {
      if (typeof m.method === 'string' && m.id !== undefined && m.id !== null) requests.push(m);
      else if (typeof m.method === 'string') this.notification(m, session, agent);
      // Responses from the client (to server-initiated requests) are accepted and dropped: toolbus sends none.
    }
    if (requests.length === 0) {
      res.writeHead(202, { 'content-length': 0 });
      res.end();
      return;
    }

    const first = requests[0]!;
    let headers: Record<string, string> | undefined;
    if (first.method === 'initialize' && !batch) {
      // The 2025-era handshake opens a stateful session. The 2026-07-28 revision never sends initialize.
      session = {
        id: randomUUID(),
        agent,
        protocolVersion: '',
        lastSeen: Date.now(),
        streams: new Set(),
        inflight: new Map(),
      };
      this.sessions.set(session.id, session);
      headers = { 'mcp-session-id': session.id };
    }

    const accept = req.headers.accept ?? '';
    const wantsSse = !accept.includes('application/json') && accept.includes('text/event-stream');
    const progressWanted =
      accept.includes('text/event-stream') &&
      requests.some(
        (r) =>
          r.method === 'tools/call' &&
          (r.params?._meta as Record<string, unknown> | undefined)?.progressToken !== undefined,
      );
    if (wantsSse || progressWanted) return this.respondSse(res, agent, session, requests, batch, headers);

    const controllers = this.watchClose(res, requests.length);
    const replies = await Promise.all(
      requests.map((r, i) => this.dispatch(r, agent, session, controllers[i]!, undefined)),
    );
    if (res.destroyed) return;
    if (session && first.method === 'initialize') {
      const pv = (replies[0]?.result as Record<string, unknown> | undefined)?.protocolVersion;
      if (typeof pv === 'string') session.protocolVersion = pv;
    }
    sendJson(res, 200, batch ? replies : replies[0], headers);
  }

  private respondSse(
    res: ServerResponse,
    agent: AgentIdentity,
    session: Session | null,
    requests: JsonRpcMessage[],
    batch: boolean,
    headers: Record<string, string> | undefined,
  ): void {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', ...headers });
    const controllers = this.watchClose(res, requests.length);
    const write = (msg: unknown) => {
      if (!res.destroyed) res.write(`event: message\ndata: ${JSON.stringify(msg)}\n\n`);
    };
    const progress = (params: Record<string, unknown>) =>
      write({ jsonrpc: '2.0', method: 'notifications/progress', params });
    void Promise.all(
      requests.map(async (r, i) => {
        const reply = await this.dispatch(r, agent, session, controllers[i]!, progress);
        if (session && r.method === 'initialize') {
          const pv = (reply.result as Record<string, unknown> | undefined)?.protocolVersion;
          if (typeof pv === 'string') session.protocolVersion = pv;
        }
        if (!batch) write(reply);
        return reply;
      }),
    ).then((replies) => {
      if (batch) write(replies);
      res.end();
    });
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

  private notification(m: JsonRpcMessage, session: Session | null, agent: AgentIdentity): void {
    if (m.method === 'notifications/cancelled') {
      const requestId = m.params?.requestId as string | number | undefined;
      if (requestId === undefined) return;
      const ctl = session
        ? session.inflight.get(requestId)
        : this.statelessInflight.get(`${agent.id}\u0000${requestId}`);
      ctl?.abort(new Error(typeof m.params?.reason === 'string' ? m.params.reason : 'cancelled by the agent'));
    }
    // notifications/initialized, roots/list_changed and others need no action.
  }

  private async dispatch(
    m: JsonRpcMessage,
    agent: AgentIdentity,
    session: Session | null,
    ctl: AbortController,
    progress: ((params: Record<string, unknown>) => void) | undefined,
  ): Promise<Record<string, unknown>> {
    const id = m.id as string | number;
    const method = m.method as string;
    const modern = isModernRequest(m.params, method);
    if (modern && method !== 'server/discover') {
      const meta = m.params?._meta as Record<string, unknown>;
      const v = meta['io.modelcontextprotocol/protocolVersion'];
      if (v !== MODERN_VERSION) {
        return {
          jsonrpc: '2.0',
          id,
          error: {
            code: -32602,
            message: `Unsupported protocol version ${String(v)}`,
            data: { supported: [MODERN_VERSION] },
          },
        };
      }
    }
    if (method === 'initialize' && modern)
      return rpcError(id, METHOD_NOT_FOUND, 'initialize is not part of protocol revision 2026-07-28');
    const inflightKey = `${agent.id}\u0000${id}`;
    if (session) session.inflight.set(id, ctl);
    else this.statelessInflight.set(inflightKey, ctl);
    const env: CallEnv = { agent, signal: ctl.signal, progress };
    try {
      const result = await handleRequest(this.opts.deps, env, method, m.params);
      return { jsonrpc: '2.0', id, result: modern ? { ...result, resultType: 'complete' } : result };
    } catch (err) {
      if (err instanceof RpcError) return { jsonrpc: '2.0', id, error: { code: err.code, message: err.message } };
      this.opts.logger.error({ err, method }, 'request failed');
      return rpcError(id, -32603, 'Internal error');
    } finally {
      if (session) session.inflight.delete(id);
      else this.statelessInflight.delete(inflightKey);
    }
  }
}
