// The agent-facing MCP methods, free of any transport: given an authenticated agent and one JSON-RPC request, produce
// the result. Both protocol eras are served here: the 2025 revisions (initialize handshake, optional session) and the
// stateless 2026-07-28 revision (server/discover, protocol version and capabilities in every request's _meta).
import type { Catalog } from '../catalog/catalog.js';
import { type AgentIdentity, type CallContext, Dispatch, type ToolResult } from '../pipeline/context.js';
import type { CallRunner } from '../pipeline/pipeline.js';
import type { ServerRequestAsker } from '../upstreams/connection.js';
import { UpstreamProtocolRefusal, UpstreamRpcError } from '../upstreams/errors.js';
import { createdTaskId, rewriteContentUris, type UpstreamDirectory, wrapTaskIds } from './upstream-directory.js';

export const SERVER_INFO = { name: 'toolbus', version: '0.1.0' } as const;
export const MODERN_VERSION = '2026-07-28';
export const LEGACY_VERSIONS = ['2025-11-25', '2025-06-18', '2025-03-26', '2024-11-05'] as const;
export const SUPPORTED_VERSIONS = [MODERN_VERSION, ...LEGACY_VERSIONS];
export const PROTOCOL_VERSION_META = 'io.modelcontextprotocol/protocolVersion';

export const CAPABILITIES = {
  tools: { listChanged: true },
  resources: { listChanged: true },
  prompts: { listChanged: true },
  logging: {},
} as const;

export const INSTRUCTIONS =
  'toolbus: tools are named {upstream}__{tool}. Write tools take an idempotency_key: derive it from the logical ' +
  'operation and reuse it when retrying the same operation. Failures carry _meta["toolbus/error"] with a category, ' +
  'whether to retry, and retryAfterMs.';

export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown,
  ) {
    super(message);
  }
}

export const METHOD_NOT_FOUND = -32601;
export const INVALID_PARAMS = -32602;
export const INVALID_REQUEST = -32600;
export const PARSE_ERROR = -32700;

export interface CallEnv {
  agent: AgentIdentity;
  /** The upstream this request addresses on /mcp/{upstream}; undefined on /mcp (every upstream, prefixed names). */
  endpoint: string | undefined;
  /** Aborted when the agent cancels this request or goes away. */
  signal: AbortSignal;
  /** Aborts `signal` (the deadline of a tool call, see CallContext.abort). */
  abort: (reason: Error) => void;
  /** Sends a progress notification to the agent for this request, when the transport can. */
  progress: ((params: Record<string, unknown>) => void) | undefined;
  /** Sends an upstream's log message to the agent on this request's stream, when the transport can. */
  log?: ((params: Record<string, unknown>) => void) | undefined;
  /** Records the session's logging level (logging/setLevel); absent for session-less requests. */
  setLogLevel?: (level: string) => void;
  /** Resource subscriptions of this session (2025 `resources/subscribe`); absent for session-less requests. */
  subscriptions?: {
    subscribe(upstream: string, uri: string): Promise<void>;
    unsubscribe(upstream: string, uri: string): Promise<void>;
  };
  /** What the agent's client declared: in its session's initialize, or (2026-07-28) in this request's _meta. */
  clientCapabilities?: Record<string, unknown>;
  /** Sends a request to the agent on this call's stream and waits for its answer; absent when it cannot. */
  ask?: (method: string, params: Record<string, unknown> | undefined) => Promise<Record<string, unknown>>;
}

/** RFC 5424 severities, least severe first, as MCP names them. */
export const LOG_LEVELS = ['debug', 'info', 'notice', 'warning', 'error', 'critical', 'alert', 'emergency'];

export interface RpcDeps {
  catalog: Catalog;
  runner: CallRunner;
  directory: UpstreamDirectory;
  newOwner: () => string;
  /** tools/list result per agent and endpoint, rebuilt when the catalog changes. */
  toolListFor: (agent: AgentIdentity, endpoint: string | undefined) => { tools: Record<string, unknown>[] };
  /** What an endpoint announces: capabilities and instructions (on /mcp/{upstream}, the upstream's own). */
  describe: (endpoint: string | undefined) => EndpointDescription;
}

export interface EndpointDescription {
  capabilities: Record<string, unknown>;
  instructions: string;
}

/**
 * The description of /mcp: toolbus's own instructions, then one titled block per upstream that has instructions of
 * its own, so nothing an upstream tells its clients is lost when it sits behind the bus.
 */
export function aggregateDescription(
  upstreams: readonly {
    name: string;
    capabilities: Record<string, unknown> | undefined;
    instructions: string | undefined;
  }[],
): EndpointDescription {
  const blocks = upstreams
    .filter((u) => u.instructions)
    .map((u) => `## ${u.name} (tools ${u.name}__*)\n${u.instructions}`);
  const capabilities: Record<string, unknown> = { ...CAPABILITIES };
  if (upstreams.some((u) => u.capabilities?.completions !== undefined)) capabilities.completions = {};
  const tasks = upstreams.find((u) => u.capabilities?.tasks !== undefined);
  if (tasks) capabilities.tasks = { list: {}, cancel: {}, requests: { tools: { call: {} } } };
  if (upstreams.some((u) => (u.capabilities?.resources as Record<string, unknown> | undefined)?.subscribe === true))
    capabilities.resources = { listChanged: true, subscribe: true };
  return { capabilities, instructions: [INSTRUCTIONS, ...blocks].join('\n\n') };
}

/** The description of /mcp/{upstream}: the upstream's capabilities (tools always) and its instructions verbatim. */
export function upstreamDescription(
  capabilities: Record<string, unknown> | undefined,
  instructions: string | undefined,
): EndpointDescription {
  const caps: Record<string, unknown> = { ...(capabilities ?? {}), tools: { listChanged: true }, logging: {} };
  for (const k of ['resources', 'prompts'] as const) {
    if (caps[k] !== undefined) caps[k] = { ...(caps[k] as Record<string, unknown>), listChanged: true };
  }
  return { capabilities: caps, instructions: instructions ?? '' };
}

function negotiate(requested: unknown): string {
  if (typeof requested === 'string' && (LEGACY_VERSIONS as readonly string[]).includes(requested)) return requested;
  return LEGACY_VERSIONS[0];
}

export function isModernRequest(params: Record<string, unknown> | undefined, method: string): boolean {
  if (method === 'server/discover') return true;
  const meta = params?._meta as Record<string, unknown> | undefined;
  return typeof meta?.[PROTOCOL_VERSION_META] === 'string' && (meta[PROTOCOL_VERSION_META] as string) >= MODERN_VERSION;
}

export function initializeResult(
  params: Record<string, unknown> | undefined,
  d: EndpointDescription,
): Record<string, unknown> {
  return {
    protocolVersion: negotiate(params?.protocolVersion),
    capabilities: d.capabilities,
    serverInfo: SERVER_INFO,
    ...(d.instructions ? { instructions: d.instructions } : {}),
  };
}

export function discoverResult(d: EndpointDescription): Record<string, unknown> {
  return {
    supportedVersions: SUPPORTED_VERSIONS,
    capabilities: d.capabilities,
    serverInfo: SERVER_INFO,
    ...(d.instructions ? { instructions: d.instructions } : {}),
  };
}

/** Results the 2026-07-28 revision lets clients cache; toolbus's depend on the agent's allow-list, so: private. */
export const CACHEABLE = new Set([
  'server/discover',
  'tools/list',
  'prompts/list',
  'resources/list',
  'resources/templates/list',
  'resources/read',
]);

/** Adds the caching hints a 2026 result must carry: the upstream's ttlMs if it gave one, else 0; always private. */
export function withCacheHints(result: Record<string, unknown>): Record<string, unknown> {
  const ttl = typeof result.ttlMs === 'number' && result.ttlMs >= 0 ? Math.floor(result.ttlMs) : 0;
  return { ...result, ttlMs: ttl, cacheScope: 'private' };
}

export async function callTool(
  deps: RpcDeps,
  env: CallEnv,
  params: Record<string, unknown> | undefined,
): Promise<ToolResult> {
  const name = params?.name;
  if (typeof name !== 'string') throw new RpcError(INVALID_PARAMS, 'tools/call needs params.name (a string)');
  const rawArgs = params?.arguments ?? {};
  if (rawArgs === null || typeof rawArgs !== 'object' || Array.isArray(rawArgs)) {
    throw new RpcError(INVALID_PARAMS, 'tools/call params.arguments must be an object');
  }
  const meta = params?._meta as Record<string, unknown> | undefined;
  // On /mcp/{upstream} the agent names the upstream's own tool: the pipeline (allow-lists, keys, leases) still runs
  // on the exposed name. A name longer than any tool's is never looked up (resolve-tool answers not_found).
  const tooLong = name.length > 128;
  let exposed = name;
  if (env.endpoint !== undefined && !tooLong)
    exposed = deps.catalog.byUpstreamName(env.endpoint, name)?.name ?? `${env.endpoint}__${name}`;
  const tool = tooLong ? undefined : deps.catalog.get(exposed);
  const now = Date.now();
  const timeoutMs = tool?.timeoutMs ?? 60_000;
  const ctx: CallContext = {
    agent: env.agent,
    toolName: exposed,
    tool: undefined,
    args: rawArgs as Record<string, unknown>,
    meta,
    key: undefined,
    owner: deps.newOwner(),
    scopes: [],
    grants: [],
    fencingToken: undefined,
    startedAt: now,
    deadline: now + timeoutMs,
    hardDeadline: now + (tool?.hardTimeoutMs ?? timeoutMs),
    signal: env.signal,
    abort: env.abort,
    onProgress: meta?.progressToken !== undefined ? env.progress : undefined,
    asker: askerOf(env),
    task: params?.task,
    onLog: env.log ? { agentId: env.agent.id, write: env.log } : undefined,
    input:
      params?.inputResponses !== undefined || params?.requestState !== undefined
        ? { responses: params.inputResponses, state: params.requestState }
        : undefined,
    dispatch: new Dispatch(),
    timedOut: false,
    outcome: 'pending',
  };
  let result: ToolResult;
  try {
    result = await deps.runner.run(ctx);
  } catch (err) {
    if (err instanceof UpstreamProtocolRefusal) throw new RpcError(err.code, err.message, err.data);
    throw err;
  }
  const taskId = tool ? createdTaskId(result) : undefined;
  if (tool && taskId !== undefined) {
    deps.directory.noteTask(env.agent, tool.upstream, taskId);
    return env.endpoint === undefined ? wrapTaskIds(tool.upstream, result) : result;
  }
  // On /mcp, resource links in a result point at the bus's URIs so the agent can read them.
  if (env.endpoint === undefined && tool && Array.isArray(result.content)) {
    const content = rewriteContentUris(tool.upstream, result.content);
    if (content !== result.content) return { ...result, content };
  }
  return result;
}

/** Who answers the upstream's questions during this request (sampling, elicitation): the agent, when it can. */
function askerOf(env: CallEnv): ServerRequestAsker | undefined {
  return env.ask ? { agentId: env.agent.id, ask: env.ask, capabilities: env.clientCapabilities ?? {} } : undefined;
}

/** Dispatches one request method. Returns the JSON-RPC `result`, or throws RpcError. */
export async function handleRequest(
  deps: RpcDeps,
  env: CallEnv,
  method: string,
  params: Record<string, unknown> | undefined,
): Promise<Record<string, unknown>> {
  switch (method) {
    case 'tools/call':
      return callTool(deps, env, params);
    case 'tools/list':
      return deps.toolListFor(env.agent, env.endpoint);
    case 'initialize':
      return initializeResult(params, deps.describe(env.endpoint));
    case 'server/discover':
      return discoverResult(deps.describe(env.endpoint));
    case 'ping':
      return {};
    case 'logging/setLevel':
      if (typeof params?.level !== 'string' || !LOG_LEVELS.includes(params.level))
        throw new RpcError(INVALID_PARAMS, `logging/setLevel needs a level: one of ${LOG_LEVELS.join(', ')}`);
      env.setLogLevel?.(params.level);
      return {};
    case 'resources/subscribe':
    case 'resources/unsubscribe': {
      if (!env.subscriptions) throw new RpcError(INVALID_REQUEST, `${method} needs a session (initialize first)`);
      const { upstream, uri } = deps.directory.locate(env.agent, params?.uri, env.endpoint);
      try {
        await (method === 'resources/subscribe'
          ? env.subscriptions.subscribe(upstream, uri)
          : env.subscriptions.unsubscribe(upstream, uri));
      } catch (err) {
        // The upstream's refusal is its answer (a 2026-07-28-only upstream has no resources/subscribe).
        if (err instanceof UpstreamRpcError) throw new RpcError(err.code, `Upstream ${upstream}: ${err.message}`);
        throw err;
      }
      return {};
    }
    case 'completion/complete':
      return deps.directory.complete(env.agent, params, env.signal, env.endpoint);
    case 'resources/list':
      return deps.directory.listResources(env.agent, env.signal, env.endpoint);
    case 'resources/templates/list':
      return deps.directory.listResourceTemplates(env.agent, env.signal, env.endpoint);
    case 'resources/read':
      return deps.directory.readResource(env.agent, params, env.signal, env.endpoint, askerOf(env));
    case 'prompts/list':
      return deps.directory.listPrompts(env.agent, env.signal, env.endpoint);
    case 'tasks/get':
    case 'tasks/result':
    case 'tasks/cancel':
    case 'tasks/update':
      return deps.directory.task(env.agent, method, params, env.signal, env.endpoint);
    case 'tasks/list':
      return deps.directory.listTasks(env.agent, env.signal, env.endpoint);
    case 'prompts/get':
      return deps.directory.getPrompt(env.agent, params, env.signal, env.endpoint, askerOf(env));
    default:
      throw new RpcError(METHOD_NOT_FOUND, `Method not found: ${method.slice(0, 100)}`);
  }
}
