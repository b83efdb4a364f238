// The stdio bridge (`toolbus connect`): for clients that can only launch a command. It reads JSON-RPC lines on stdin,
// posts each to the bus's /mcp with the agent's bearer token, and writes every response and notification back as
// lines on stdout. The bus does all the work; the bridge only moves messages.
import { createInterface } from 'node:readline';
import type { EventSourceMessage } from 'eventsource-parser';
import { EventSourceParserStream } from 'eventsource-parser/stream';

export interface BridgeOptions {
  url: string;
  token: string;
  input?: NodeJS.ReadableStream;
  output?: NodeJS.WritableStream;
  log?: (line: string) => void;
  /** How long a request is retried while the bus refuses connections (restarting). Default 10 s. */
  retryForMs?: number;
}

/** The data of each event of an SSE response body (eventsource-parser does the framing). */
async function* sseMessages(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const events = body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream());
  for await (const event of events as unknown as AsyncIterable<EventSourceMessage>) if (event.data) yield event.data;
}

/** A connection refused means nothing was sent: safe to try again while the bus restarts. */
function refused(err: unknown): boolean {
  const cause = (err as { cause?: { code?: string } }).cause;
  return cause?.code === 'ECONNREFUSED';
}

export async function runBridge(opts: BridgeOptions): Promise<void> {
  const out = opts.output ?? process.stdout;
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const retryForMs = opts.retryForMs ?? 10_000;
  let sessionId: string | undefined;
  let stream: AbortController | undefined;
  /** The client's own initialize request and whether it sent `initialized`: replayed when the bus lost the session. */
  let handshake: { params: unknown; initialized: boolean } | undefined;
  let reinitializing: Promise<boolean> | undefined;
  let reinitSeq = 0;
  const write = (text: string) => out.write(`${text}\n`);

  const headers = (): Record<string, string> => ({
    authorization: `Bearer ${opts.token}`,
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    ...(sessionId ? { 'mcp-session-id': sessionId } : {}),
  });

  const openNotifications = async () => {
    stream?.abort();
    const ctl = new AbortController();
    stream = ctl;
    try {
      const res = await fetch(opts.url, { method: 'GET', headers: headers(), signal: ctl.signal });
      if (!res.ok || !res.body) return;
      for await (const data of sseMessages(res.body)) write(data);
    } catch {
      // The stream ends when the bus stops or the bridge exits; calls keep working without it.
    }
  };

  /** POSTs, retrying while the bus is down or draining (refused, 503) for up to retryForMs. */
  const send = async (body: string): Promise<Response> => {
    const until = Date.now() + retryForMs;
    for (let delay = 100; ; delay = Math.min(delay * 2, 1000)) {
      try {
        const res = await fetch(opts.url, { method: 'POST', headers: headers(), body });
        // 503 from a draining bus: the request was refused before any work, so it is as safe to retry as a refusal.
        if (res.status !== 503 || Date.now() + delay > until) return res;
        await res.body?.cancel();
      } catch (err) {
        if (!refused(err) || Date.now() + delay > until) throw err;
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  };

  /**
   * The bus no longer knows our session (it restarted, or the session idled out): open a new one with the client's
   * own initialize parameters, as the client would, without showing the client anything. Concurrent requests that
   * all found the session gone share one re-initialization.
   */
  const reinitialize = (): Promise<boolean> => {
    reinitializing ??= (async () => {
      sessionId = undefined;
      if (!handshake) return false;
      try {
        const res = await send(
          JSON.stringify({
            jsonrpc: '2.0',
            id: `toolbus-connect-${++reinitSeq}`,
            method: 'initialize',
            params: handshake.params,
          }),
        );
        await res.body?.cancel();
        const sid = res.headers.get('mcp-session-id');
        if (!res.ok || !sid) return false;
        sessionId = sid;
        if (handshake.initialized) {
          const ack = await send(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }));
          await ack.body?.cancel();
        }
        log('toolbus connect: the bus lost the session (restart?); re-initialized and carrying on');
        void openNotifications();
        return true;
      } catch {
        return false;
      }
    })().finally(() => {
      reinitializing = undefined;
    });
    return reinitializing;
  };

  const post = async (line: string) => {
    let msg: { id?: unknown; method?: unknown; params?: unknown };
    try {
      msg = JSON.parse(line);
    } catch {
      write(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } }));
      return;
    }
    const fail = (message: string) => {
      if (msg.id !== undefined) write(JSON.stringify({ jsonrpc: '2.0', id: msg.id, error: { code: -32000, message } }));
    };
    if (msg.method === 'initialize') handshake = { params: msg.params, initialized: false };
    if (msg.method === 'notifications/initialized' && handshake) handshake.initialized = true;
    // Wait for a re-initialization under way, so this request goes on the new session.
    if (reinitializing) await reinitializing;
    let res: Response;
    try {
      const sentOn = sessionId;
      res = await send(line);
      if (res.status === 404 && sentOn !== undefined && msg.method !== 'initialize') {
        await res.body?.cancel();
        // Another request may have re-initialized already; only start one when we still hold the lost session.
        const ok = sessionId !== sentOn ? true : await reinitialize();
        if (!ok) {
          fail('toolbus lost this session and could not open a new one; reconnect the client');
          return;
        }
        res = await send(line);
      }
    } catch {
      fail('toolbus is unreachable');
      return;
    }
    if (res.status === 401) {
      log('toolbus connect: the bus refused the token (401)');
      fail('Unauthorized: the bus refused this agent token');
      return;
    }
    const sid = res.headers.get('mcp-session-id');
    if (sid && sid !== sessionId) {
      sessionId = sid;
      void openNotifications();
    }
    if (res.status === 202 || res.status === 204) return;
    const type = res.headers.get('content-type') ?? '';
    if (type.includes('text/event-stream') && res.body) {
      for await (const data of sseMessages(res.body)) write(data);
      return;
    }
    const text = await res.text();
    if (!text) return;
    // A reply the bus could not tie to a request (id null) is given the request's id, so the client never waits
    // forever for an answer that came back anonymous.
    try {
      const reply = JSON.parse(text) as { id?: unknown; error?: unknown };
      if (!Array.isArray(reply) && reply.id === null && reply.error !== undefined && msg.id !== undefined) {
        write(JSON.stringify({ ...reply, id: msg.id }));
        return;
      }
    } catch {
      // not JSON: pass it on as it is
    }
    write(text);
  };

  const rl = createInterface({ input: opts.input ?? process.stdin, crlfDelay: Number.POSITIVE_INFINITY });
  const pending = new Set<Promise<void>>();
  for await (const line of rl) {
    if (!line.trim()) continue;
    const p = post(line).finally(() => pending.delete(p));
    pending.add(p);
  }
  await Promise.all(pending);
  stream?.abort();
  if (sessionId) await fetch(opts.url, { method: 'DELETE', headers: headers() }).catch(() => {});
}
