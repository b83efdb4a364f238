// Routing the upstream's own requests (sampling/createMessage, elicitation/create) to exactly the agent whose call
// caused them (DESIGN.md section 13). Over HTTP the request arrives on the response stream of one of our requests,
// which names the call. Over a shared stdio connection the protocol carries no link: the request goes to the one
// agent with calls in flight there, and when several agents have, it is refused (never guessed), with a warning
// that names `sharing: per-agent`. Log messages (notifications/message) are attributed the same way where they can be:
// over HTTP by the stream they came on (watchSseStream).
import { createParser, type EventSourceMessage } from 'eventsource-parser';
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

/** What the bus takes from a call's SSE response stream before the SDK parses the rest. */
export interface StreamWatch {
  /** A request of the upstream (a message with a method and an id) arrived on this stream. */
  onRequest(id: string): void;
  /** A log message arrived on this stream: true when it was delivered, and so is taken out of the stream. */
  onLog(params: Record<string, unknown>): boolean;
}

function sseEvent(event: EventSourceMessage): string {
  let text = '';
  if (event.id !== undefined) text += `id: ${event.id}\n`;
  if (event.event !== undefined) text += `event: ${event.event}\n`;
  for (const line of event.data.split('\n')) text += `data: ${line}\n`;
  return `${text}\n`;
}

/**
 * Reads a call's SSE response stream before the SDK does and returns, chunk by chunk, what the SDK should read: the
 * same events written again, less the log messages `watch.onLog` took. The stream names its call, which neither the
 * upstream's requests nor its log messages do: requests are noted by id for routing (their answers need the SDK's
 * transport), log messages go straight to the call. The framing is eventsource-parser's, which reads each byte once
 * however the stream is cut (a large result arrives in many chunks). Comments are dropped; ids and retry hints kept.
 */
export function watchSseStream(watch: StreamWatch): (chunk: Uint8Array) => Uint8Array | undefined {
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  let out = '';
  const parser = createParser({
    onEvent(event) {
      if (event.data.includes('"method"')) {
        let msg: { jsonrpc?: unknown; id?: unknown; method?: unknown; params?: unknown } | undefined;
        try {
          msg = JSON.parse(event.data) as typeof msg;
        } catch {
          // not JSON: the SDK's parser will report it
        }
        if (msg && typeof msg.method === 'string') {
          if (typeof msg.id === 'string' || typeof msg.id === 'number') watch.onRequest(String(msg.id));
          else if (
            msg.method === 'notifications/message' &&
            msg.jsonrpc === '2.0' &&
            (event.event === undefined || event.event === 'message') &&
            msg.params !== null &&
            typeof msg.params === 'object' &&
            !Array.isArray(msg.params) &&
            watch.onLog(msg.params as Record<string, unknown>)
          ) {
            // The event's id stays, on an event with no data (the SDK records it and skips the rest), so a stream
            // resumed after a disconnect starts after it and the message is not sent twice.
            if (event.id !== undefined) out += sseEvent({ id: event.id, data: '' });
            return;
          }
        }
      }
      out += sseEvent(event);
    },
    onRetry(ms) {
      out += `retry: ${ms}\n\n`;
    },
  });
  return (chunk) => {
    parser.feed(decoder.decode(chunk, { stream: true }));
    if (out === '') return undefined;
    const bytes = encoder.encode(out);
    out = '';
    return bytes;
  };
}
