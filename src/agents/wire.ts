// JSON-RPC framing shared by the agent front's parts (http-front.ts, call-dispatch.ts, listen-streams.ts).

export type JsonRpcMessage = {
  jsonrpc?: unknown;
  id?: unknown;
  method?: unknown;
  params?: Record<string, unknown>;
  result?: unknown;
  error?: unknown;
};

export type Reply = Record<string, unknown>;

/** JSON-RPC "server error" range: a request refused by one of the bus's limits. */
export const LIMIT_EXCEEDED = -32000;

export function rpcError(id: unknown, code: number, message: string, data?: unknown): Reply {
  return {
    jsonrpc: '2.0',
    id: id ?? null,
    error: data === undefined ? { code, message } : { code, message, data },
  };
}

/** Text as one SSE `message` event. */
export function sseEvent(text: string): string {
  return `event: message\ndata: ${text}\n\n`;
}
