// 2026-07-28 `subscriptions/listen` streams (SEP-2575): each is acknowledged, then carries the list-changed
// notifications its request asked for and the updates of the resources it subscribed to, every one tagged with its
// subscription id, until the agent closes it. At most `limits.maxSessionsPerAgent` are open per agent, and each takes
// at most MAX_LISTEN_URIS resource subscriptions, through the same fan-out table as 2025 sessions (subscriptions.ts).
import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { AgentIdentity } from '../pipeline/context.js';
import { RpcError } from './rpc.js';
import type { SubscriptionTable } from './subscriptions.js';
import { LIMIT_EXCEEDED, type Reply, rpcError, sseEvent } from './wire.js';

/** A 2026-07-28 `subscriptions/listen` stream: which notifications it asked for, and its subscription id. */
export interface Listener {
  readonly res: ServerResponse;
  readonly agent: AgentIdentity;
  readonly endpoint: string | undefined;
  readonly id: string;
  readonly filter: Record<string, unknown>;
  /** Set once the stream is acknowledged: nothing is written to it before. */
  open?: boolean;
}

export const SUBSCRIPTION_ID_META = 'io.modelcontextprotocol/subscriptionId';
/** Resource URIs one `subscriptions/listen` request may subscribe to. */
const MAX_LISTEN_URIS = 64;
/** Which `notifications` flag of a listen request asks for which notification. */
const LISTEN_FILTER: Record<string, string> = {
  'notifications/tools/list_changed': 'toolsListChanged',
  'notifications/prompts/list_changed': 'promptsListChanged',
  'notifications/resources/list_changed': 'resourcesListChanged',
};

export interface ListenStreamsOptions {
  /** The resource subscription fan-out, shared with the 2025 sessions. */
  subscriptions: Pick<SubscriptionTable<Listener>, 'subscribe' | 'dropSession'>;
  /** Which upstream serves a URI the agent named on this endpoint (upstream-directory.ts); throws RpcError if none. */
  locate: (agent: AgentIdentity, uri: string, endpoint: string | undefined) => { upstream: string; uri: string };
  redact: (text: string) => string;
  /** Streams one agent may hold open (limits.maxSessionsPerAgent, read at each request). */
  maxPerAgent: () => number;
  /** Answers the request with an error, as JSON. */
  refuse: (res: ServerResponse, status: number, body: Reply) => void;
}

export class ListenStreams {
  private readonly listeners = new Set<Listener>();

  constructor(private readonly opts: ListenStreamsOptions) {}

  /**
   * A 2026-07-28 `subscriptions/listen` stream (SEP-2575): acknowledged first, then the list-changed notifications
   * the request asked for, each tagged with the subscription id, until the agent closes it. At most
   * `limits.maxSessionsPerAgent` open per agent.
   */
  async open(res: ServerResponse, agent: AgentIdentity, endpoint: string | undefined, m: Reply): Promise<void> {
    let mine = 0;
    for (const l of this.listeners) if (l.agent.id === agent.id) mine++;
    if (mine >= this.opts.maxPerAgent()) {
      this.opts.refuse(
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
      this.opts.subscriptions.dropSession(listener);
    });
    // Resource subscriptions are taken before the stream is acknowledged: a URI the agent may not read, or one its
    // upstream refuses, fails the request as a whole.
    const uris = filter.resourceSubscriptions;
    if (uris !== undefined) {
      const refused = await this.subscribeAll(listener, uris);
      if (res.destroyed) {
        this.opts.subscriptions.dropSession(listener);
        return;
      }
      if (refused) {
        this.opts.subscriptions.dropSession(listener);
        this.listeners.delete(listener);
        this.opts.refuse(res, refused.status, rpcError(m.id, refused.code, refused.message));
        return;
      }
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const ack = {
      jsonrpc: '2.0',
      method: 'notifications/subscriptions/acknowledged',
      params: { _meta: { [SUBSCRIPTION_ID_META]: listener.id } },
    };
    res.write(sseEvent(JSON.stringify(ack)));
    listener.open = true;
    ping = setInterval(() => res.write(': keepalive\n\n'), 25_000).unref();
  }

  /** The `resourceSubscriptions` of a listen request, each subscribed to; or why not. */
  private async subscribeAll(
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
        const at = this.opts.locate(listener.agent, uri, listener.endpoint);
        await this.opts.subscriptions.subscribe(listener, at.upstream, at.uri);
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

  /** A list-changed notification to the open streams that asked for it. */
  notify(method: string, params: Record<string, unknown> | undefined): void {
    const flag = LISTEN_FILTER[method];
    if (flag === undefined) return;
    for (const l of this.listeners) {
      if (l.filter[flag] !== true || !l.open) continue;
      const tagged = {
        ...params,
        _meta: { ...(params?._meta as Record<string, unknown>), [SUBSCRIPTION_ID_META]: l.id },
      };
      l.res.write(sseEvent(this.opts.redact(JSON.stringify({ jsonrpc: '2.0', method, params: tagged }))));
    }
  }

  /** Ends every stream (the bus is shutting down). */
  endAll(): void {
    for (const l of this.listeners) l.res.end();
  }
}
