// Routing the upstream's own requests (sampling/createMessage, elicitation/create) to exactly the agent whose call
// caused them (DESIGN.md section 13). Over HTTP the request arrives on the response stream of one of our requests,
// which names the call. Over a shared stdio connection the protocol carries no link: the request goes to the one
// agent with calls in flight there, and when several agents have, it is refused (never guessed), with a warning
// that names `sharing: per-agent`. Log messages (notifications/message) are attributed the same way where they can be:
// over HTTP by the stream they came on (LogOrigins).
import { createParser } from 'eventsource-parser';
import stableStringify from 'safe-stable-stringify';
import type { ServerRequestAsker } from './generation.js';

export type Route =
  | { ok: true; asker: ServerRequestAsker; requestId: number }
  | { ok: false; message: string; warn: boolean };

/** A call in flight that could be asked: `asking` counts its questions still unanswered. */
export interface AskableCall {
  requestId: number;
  asker: ServerRequestAsker;
  asking: number;
}

/**
 * `inFlight` in the order the calls were sent. When one agent has several calls in flight, the question goes to its
 * newest call that is not already waiting for an answer (a 2026 agent may leave a call parked and never come back to
 * it; that call must not swallow the questions of the agent's next calls), else to its newest call.
 */
export function routeServerRequest(
  method: string,
  origin: number | undefined,
  inFlight: readonly AskableCall[],
): Route {
  if (origin !== undefined) {
    const own = inFlight.find((c) => c.requestId === origin);
    if (own) return { ok: true, asker: own.asker, requestId: own.requestId };
  }
  const agents = new Set(inFlight.map((c) => c.asker.agentId));
  if (agents.size === 1) {
    const idle = inFlight.filter((c) => c.asking === 0);
    const pick = (idle.length > 0 ? idle : inFlight).at(-1)!;
    return { ok: true, asker: pick.asker, requestId: pick.requestId };
  }
  if (agents.size === 0)
    return { ok: false, warn: false, message: `toolbus: no agent call in flight can answer ${method}` };
  return {
    ok: false,
    warn: true,
    message:
      `toolbus: ${method} cannot be routed: ${agents.size} agents have calls in flight on this shared connection ` +
      'and the protocol does not say whose call asked; configure this upstream with sharing: per-agent',
  };
}

/** A message with a method seen on a call's response stream: a request (it has an id) or a notification. */
export interface SniffedMessage {
  method: string;
  id?: string;
  params?: Record<string, unknown>;
}

/**
 * Watches an SSE byte stream for JSON-RPC messages that have a method (the upstream's requests and notifications) and
 * reports each. Events may be split across chunks; only complete events are parsed. The SSE framing is
 * eventsource-parser's, which reads each byte once however the stream is cut (a large result arrives in many chunks).
 */
export function sniffStream(found: (msg: SniffedMessage) => void): (chunk: Uint8Array) => void {
  const decoder = new TextDecoder();
  const parser = createParser({
    onEvent(event) {
      if (!event.data.includes('"method"')) return;
      try {
        const msg = JSON.parse(event.data) as { id?: unknown; method?: unknown; params?: unknown };
        if (typeof msg.method !== 'string') return;
        const params =
          msg.params !== null && typeof msg.params === 'object' && !Array.isArray(msg.params)
            ? (msg.params as Record<string, unknown>)
            : undefined;
        const id = typeof msg.id === 'string' || typeof msg.id === 'number' ? String(msg.id) : undefined;
        found({ method: msg.method, ...(id !== undefined ? { id } : {}), ...(params ? { params } : {}) });
      } catch {
        // not JSON: the SDK's parser will report it
      }
    },
  });
  return (chunk) => parser.feed(decoder.decode(chunk, { stream: true }));
}

/** A log message's identity for matching the sniffed copy to the parsed one: its level, logger and data, keys sorted. */
const logContent = (params: Record<string, unknown> | undefined): string =>
  stableStringify([params?.level ?? null, params?.logger ?? null, params?.data ?? null]) ?? '';

/**
 * HTTP: the call whose response stream carried each log message. The stream is read twice, by the sniffer above
 * (which knows the stream) and then by the SDK (which delivers the parsed message without it), and several streams
 * interleave between the two, so the parsed message is matched to its stream by content. Identical messages on
 * several streams are taken first in, first out. Messages the SDK never delivers are forgotten past `cap`.
 */
export class LogOrigins {
  private readonly byContent = new Map<string, number[]>();

  constructor(private readonly cap = 1024) {}

  get size(): number {
    return this.byContent.size;
  }

  /** A log message was seen on the response stream of our request `origin`. */
  seen(params: Record<string, unknown> | undefined, origin: number): void {
    const key = logContent(params);
    const queue = this.byContent.get(key);
    if (queue) queue.push(origin);
    else this.byContent.set(key, [origin]);
    if (this.byContent.size > this.cap) this.byContent.delete(this.byContent.keys().next().value as string);
  }

  /** The request on whose stream this parsed log message arrived, when it came on one. */
  take(params: Record<string, unknown> | undefined): number | undefined {
    if (this.byContent.size === 0) return undefined;
    const key = logContent(params);
    const queue = this.byContent.get(key);
    const origin = queue?.shift();
    if (queue?.length === 0) this.byContent.delete(key);
    return origin;
  }
}
