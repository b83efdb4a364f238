// One JSON-RPC request of an agent, run: its 2026-07-28 envelope checked, a multi round-trip retry opened
// (input-rounds.ts), its cancellation registered (per session, or per connection without one), the call's
// environment put together (what the agent can be asked, on which stream), the method handled (rpc.ts), and the
// outcome made a reply. The HTTP side (framing, SSE, limits) stays in http-front.ts.
import type { IncomingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { HeaderDeclaration } from '../catalog/mcp-param-headers.js';
import type { AgentIdentity } from '../pipeline/context.js';
import { type HeaderRefusal, headerRefusal } from './header-checks.js';
import { cannotAsk, type InputRounds, type Opened } from './input-rounds.js';
import type { ParkedCall } from './parked-calls.js';
import type { SealBinding } from './request-state.js';
import {
  CACHEABLE,
  type CallEnv,
  handleRequest,
  INVALID_REQUEST,
  isModernRequest,
  METHOD_NOT_FOUND,
  MODERN_VERSION,
  type RpcDeps,
  RpcError,
  withCacheHints,
} from './rpc.js';
import type { Session } from './session-table.js';
import type { SubscriptionTable } from './subscriptions.js';
import { type JsonRpcMessage, type Reply, rpcError } from './wire.js';

/** What a request answered as SSE can send the agent while it runs. */
export interface CallStream {
  progress: (params: Record<string, unknown>) => void;
  log: (params: Record<string, unknown>) => void;
  ask: (
    method: string,
    params: Record<string, unknown> | undefined,
    caps: Record<string, unknown>,
  ) => Promise<Record<string, unknown>>;
}

export interface CallDispatcherOptions {
  deps: RpcDeps;
  logger: Logger;
  /** Multi round-trip requests of 2026-07-28 agents: sealed states and parked calls. */
  rounds: InputRounds;
  /** Resource subscriptions, by session (2025 `resources/subscribe`). */
  subscriptions: Pick<SubscriptionTable<Session>, 'subscribe' | 'unsubscribe'>;
}

export class CallDispatcher {
  /** Session-less requests in flight, per TCP connection: a notifications/cancelled reaches only its own connection. */
  private readonly connectionInflight = new WeakMap<Socket, Map<string | number, AbortController>>();

  constructor(private readonly opts: CallDispatcherOptions) {}

  /** A notification from the agent: `notifications/cancelled` aborts the request it names, if it is in flight. */
  notification(m: JsonRpcMessage, session: Session | null, socket: Socket): void {
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

  /** One request of the agent, run: its reply (an error reply for anything that went wrong). */
  async dispatch(
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
    const opened: Opened = modern
      ? this.opts.rounds.open(binding)
      : { kind: 'run', params: withoutRoundFields(params) };
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
    const parking = modern ? this.opts.rounds.parkable(agent.id, method) : undefined;
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
        ? this.opts.rounds.askerFor(parking, caps)
        : stream && !modern
          ? (method: string, p: Record<string, unknown> | undefined) => stream.ask(method, p, caps)
          : (method: string) => Promise.reject(cannotAsk(method)),
      ...(session
        ? {
            setLogLevel: (level: string) => {
              session.logLevel = level;
            },
            subscriptions: {
              subscribe: (upstream: string, uri: string) => this.opts.subscriptions.subscribe(session, upstream, uri),
              unsubscribe: (upstream: string, uri: string) =>
                this.opts.subscriptions.unsubscribe(session, upstream, uri),
            },
          }
        : {}),
    };
    try {
      const running = handleRequest(this.opts.deps, env, method, forwarded);
      if (!modern) return { jsonrpc: '2.0', id, result: await running };
      const result = parking
        ? await this.opts.rounds.step(parking, binding, running)
        : this.opts.rounds.sealed(await running, binding);
      return modernReply(id, method, result);
    } catch (err) {
      return this.failure(id, method, err);
    } finally {
      inflight.delete(id);
    }
  }

  /** SEP-2243: headers that mirror the body must agree with it (header-checks.ts). Single requests only. */
  headersDisagree(headers: IncomingHttpHeaders, m: JsonRpcMessage, endpoint: string | undefined): HeaderRefusal | null {
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
      const r = await this.opts.rounds.resume(call, binding);
      return r.kind === 'refuse' ? rpcError(id, -32602, r.message) : modernReply(id, binding.method, r.result);
    } catch (err) {
      return this.failure(id, binding.method, err);
    }
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
