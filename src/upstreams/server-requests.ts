// Routing the upstream's own requests (sampling/createMessage, elicitation/create) to exactly the agent whose call
// caused them (DESIGN.md section 13). Over HTTP the request arrives on the response stream of one of our requests,
// which names the call. Over a shared stdio connection the protocol carries no link: the request goes to the one
// agent with calls in flight there, and when several agents have, it is refused (never guessed), with a warning
// that names `sharing: per-agent`.
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

/**
 * Watches an SSE byte stream for JSON-RPC requests (messages with a method and an id) and reports their ids. Events
 * may be split across chunks; only complete events are parsed.
 */
export function sniffServerRequests(found: (id: string) => void): (chunk: Uint8Array) => void {
  const decoder = new TextDecoder();
  let buffer = '';
  return (chunk) => {
    buffer += decoder.decode(chunk, { stream: true });
    let end = buffer.search(/\r?\n\r?\n/);
    while (end !== -1) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '');
      const data = event
        .split(/\r?\n/)
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).trimStart())
        .join('\n');
      if (data.includes('"method"')) {
        try {
          const msg = JSON.parse(data) as { id?: unknown; method?: unknown };
          if (typeof msg.method === 'string' && (typeof msg.id === 'string' || typeof msg.id === 'number'))
            found(String(msg.id));
        } catch {
          // not JSON: the SDK's parser will report it
        }
      }
      end = buffer.search(/\r?\n\r?\n/);
    }
  };
}
