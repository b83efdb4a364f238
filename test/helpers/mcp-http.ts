// A small, exact MCP-over-HTTP client for tests: raw JSON-RPC posts with fetch, so tests see status codes, headers
// and bodies as they are on the wire (the SDK client is used separately to prove real-client compatibility).
import { appendFileSync } from 'node:fs';
import { nameOf } from '../../src/agents/header-checks.js';
import { encodeParamValue } from '../../src/catalog/mcp-param-headers.js';

export interface RpcReply {
  status: number;
  headers: Headers;
  body: Record<string, unknown> | Record<string, unknown>[] | null;
  text: string;
}

export interface AgentClientOptions {
  url: string;
  token: string;
  sessionId?: string;
}

let nextId = 1;

/**
 * The headers a 2026-07-28 client sends with a request (SEP-2243): its method and the name it targets, mirrored from
 * the body. Only for a single 2026 request; a test that wants them absent or wrong passes its own.
 */
export function mirroredHeaders(body: unknown): Record<string, string> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return {};
  const m = body as { method?: unknown; params?: Record<string, unknown> };
  const meta = m.params?._meta as Record<string, unknown> | undefined;
  const modern = meta?.['io.modelcontextprotocol/protocolVersion'] !== undefined || m.method === 'server/discover';
  if (typeof m.method !== 'string' || !modern) return {};
  const name = nameOf(m.method, m.params);
  return { 'mcp-method': m.method, ...(typeof name === 'string' ? { 'mcp-name': encodeParamValue(name) } : {}) };
}

export async function post(
  url: string,
  token: string | null,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<RpcReply> {
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...mirroredHeaders(body),
      ...headers,
    },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(60_000),
  });
  const text = await res.text();
  let parsed: RpcReply['body'] = null;
  if ((res.headers.get('content-type') ?? '').includes('application/json') && text) parsed = JSON.parse(text);
  else if ((res.headers.get('content-type') ?? '').includes('text/event-stream')) {
    const datas = text
      .split('\n\n')
      .map((e) =>
        e
          .split('\n')
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).trim())
          .join(''),
      )
      .filter(Boolean)
      .map((d) => JSON.parse(d) as Record<string, unknown>);
    parsed = datas.find((d) => 'result' in d || 'error' in d) ?? null;
  }
  return { status: res.status, headers: res.headers, body: parsed, text };
}

/** One agent: stateless by default; `initialize()` opens a stateful session. */
export class AgentClient {
  sessionId: string | undefined;
  constructor(
    readonly url: string,
    readonly token: string,
  ) {}

  async initialize(): Promise<Record<string, unknown>> {
    const r = await post(this.url, this.token, {
      jsonrpc: '2.0',
      id: nextId++,
      method: 'initialize',
      params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'test', version: '1' } },
    });
    this.sessionId = r.headers.get('mcp-session-id') ?? undefined;
    await post(this.url, this.token, { jsonrpc: '2.0', method: 'notifications/initialized' }, this.headers());
    return (r.body as Record<string, unknown>).result as Record<string, unknown>;
  }

  headers(): Record<string, string> {
    return this.sessionId ? { 'mcp-session-id': this.sessionId } : {};
  }

  async request(
    method: string,
    params?: Record<string, unknown>,
    id: number = nextId++,
  ): Promise<Record<string, unknown>> {
    const r = await post(
      this.url,
      this.token,
      { jsonrpc: '2.0', id, method, ...(params ? { params } : {}) },
      this.headers(),
    );
    if (r.status !== 200 || !r.body) throw new Error(`HTTP ${r.status}: ${r.text}`);
    const body = r.body as Record<string, unknown>;
    if (body.error) throw Object.assign(new Error(`RPC error: ${JSON.stringify(body.error)}`), { rpc: body.error });
    return body.result as Record<string, unknown>;
  }

  async listTools(): Promise<Record<string, unknown>[]> {
    return (await this.request('tools/list')).tools as Record<string, unknown>[];
  }

  async call(
    name: string,
    args: Record<string, unknown> = {},
    meta?: Record<string, unknown>,
  ): Promise<ToolCallResult> {
    return (await this.request('tools/call', {
      name,
      arguments: args,
      ...(meta ? { _meta: meta } : {}),
    })) as ToolCallResult;
  }
}

export interface ToolCallResult {
  content?: { type: string; text?: string }[];
  structuredContent?: Record<string, unknown>;
  isError?: boolean;
  _meta?: Record<string, unknown>;
  [k: string]: unknown;
}

export interface WireError {
  category: string;
  code: string;
  message: string;
  hint: string;
  retryable: boolean;
  retryAfterMs?: number;
}

/**
 * Where the error categories seen on real calls are recorded during a full `npm test` run (scripts/run-tests.mjs
 * sets it and, at the end, fails the run if a category of the error table was never produced by a real call).
 */
const OBSERVED = process.env.TOOLBUS_OBSERVED_ERRORS;

/** The toolbus error of a result, checked for the full wire format (meta and text carry the same object). */
export function busError(result: ToolCallResult): WireError | undefined {
  const meta = result._meta?.['toolbus/error'] as WireError | undefined;
  if (!meta) return undefined;
  if (result.isError !== true) throw new Error('a toolbus error result must have isError: true');
  if (OBSERVED) appendFileSync(OBSERVED, `${meta.category} ${meta.code}\n`);
  return meta;
}

/** Like busError, but also requires the text content to carry the same object as JSON. */
export function busErrorStrict(result: ToolCallResult): WireError {
  const meta = busError(result);
  if (!meta) throw new Error(`expected a toolbus error, got ${JSON.stringify(result)}`);
  const text = result.content?.[0]?.text ?? '';
  const fromText = (JSON.parse(text) as Record<string, unknown>)['toolbus/error'];
  if (JSON.stringify(fromText) !== JSON.stringify(meta)) throw new Error('text content and _meta disagree');
  for (const k of ['category', 'code', 'message', 'hint', 'retryable'] as const) {
    if (meta[k] === undefined) throw new Error(`wire error lacks ${k}`);
  }
  return meta;
}
