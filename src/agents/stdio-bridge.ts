// The stdio bridge (`toolbus connect`): for clients that can only launch a command. It reads JSON-RPC lines on stdin,
// posts each to the bus's /mcp with the agent's bearer token, and writes every response and notification back as
// lines on stdout. The bus does all the work; the bridge only moves messages.
import { createInterface } from 'node:readline';

export interface BridgeOptions {
  url: string;
  token: string;
  input?: NodeJS.ReadableStream;
  output?: NodeJS.WritableStream;
  log?: (line: string) => void;
}

async function* sseMessages(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let end = buffer.indexOf('\n\n');
    while (end !== -1) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split('\n')
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).trimStart())
        .join('\n');
      if (data) yield data;
      end = buffer.indexOf('\n\n');
    }
  }
}

export async function runBridge(opts: BridgeOptions): Promise<void> {
  const out = opts.output ?? process.stdout;
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  let sessionId: string | undefined;
  let stream: AbortController | undefined;
  const write = (text: string) => out.write(`${text}\n`);

  const headers = (): Record<string, string> => ({
    authorization: `Bearer ${opts.token}`,
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    ...(sessionId ? { 'mcp-session-id': sessionId } : {}),
  });

  const openNotifications = async () => {
    stream = new AbortController();
    try {
      const res = await fetch(opts.url, { method: 'GET', headers: headers(), signal: stream.signal });
      if (!res.ok || !res.body) return;
      for await (const data of sseMessages(res.body)) write(data);
    } catch {
      // The stream ends when the bus stops or the bridge exits; calls keep working without it.
    }
  };

  const post = async (line: string) => {
    let msg: { id?: unknown; method?: unknown };
    try {
      msg = JSON.parse(line);
    } catch {
      write(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } }));
      return;
    }
    const fail = (message: string) => {
      if (msg.id !== undefined) write(JSON.stringify({ jsonrpc: '2.0', id: msg.id, error: { code: -32000, message } }));
    };
    let res: Response;
    try {
      res = await fetch(opts.url, { method: 'POST', headers: headers(), body: line });
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
    if (text) write(text);
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
