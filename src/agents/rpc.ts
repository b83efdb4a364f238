// The agent-facing MCP methods, free of any transport: given an authenticated agent and one JSON-RPC request, produce
// the result. Both protocol eras are served here: the 2025 revisions (initialize handshake, optional session) and the
// stateless 2026-07-28 revision (server/discover, protocol version and capabilities in every request's _meta).
import type { Catalog } from '../catalog/catalog.js';
import type { AgentIdentity, CallContext, ToolResult } from '../pipeline/context.js';
import type { CallRunner } from '../pipeline/pipeline.js';
import type { UpstreamDirectory } from './upstream-directory.js';

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
  /** Aborted when the agent cancels this request or goes away. */
  signal: AbortSignal;
  /** Sends a progress notification to the agent for this request, when the transport can. */
  progress: ((params: Record<string, unknown>) => void) | undefined;
}

export interface RpcDeps {
  catalog: Catalog;
  runner: CallRunner;
  directory: UpstreamDirectory;
  newOwner: () => string;
  /** tools/list result per agent, rebuilt when the catalog changes. */
  toolListFor: (agent: AgentIdentity) => { tools: Record<string, unknown>[] };
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

export function initializeResult(params: Record<string, unknown> | undefined): Record<string, unknown> {
  return {
    protocolVersion: negotiate(params?.protocolVersion),
    capabilities: CAPABILITIES,
    serverInfo: SERVER_INFO,
    instructions: INSTRUCTIONS,
  };
}

export function discoverResult(): Record<string, unknown> {
  return {
    supportedVersions: SUPPORTED_VERSIONS,
    capabilities: CAPABILITIES,
    serverInfo: SERVER_INFO,
    instructions: INSTRUCTIONS,
  };
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
  // A name longer than any tool's is never looked up (resolve-tool answers not_found).
  const tool = name.length > 128 ? undefined : deps.catalog.get(name);
  const now = Date.now();
  const timeoutMs = tool?.timeoutMs ?? 60_000;
  const ctx: CallContext = {
    agent: env.agent,
    toolName: name,
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
    onProgress: meta?.progressToken !== undefined ? env.progress : undefined,
    beforeSend: undefined,
    dispatched: false,
    timedOut: false,
    outcome: 'pending',
  };
  return deps.runner.run(ctx);
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
      return deps.toolListFor(env.agent);
    case 'initialize':
      return initializeResult(params);
    case 'server/discover':
      return discoverResult();
    case 'ping':
      return {};
    case 'logging/setLevel':
      return {};
    case 'resources/list':
      return deps.directory.listResources(env.agent, env.signal);
    case 'resources/templates/list':
      return deps.directory.listResourceTemplates(env.agent, env.signal);
    case 'resources/read':
      return deps.directory.readResource(env.agent, params, env.signal);
    case 'prompts/list':
      return deps.directory.listPrompts(env.agent, env.signal);
    case 'prompts/get':
      return deps.directory.getPrompt(env.agent, params, env.signal);
    default:
      throw new RpcError(METHOD_NOT_FOUND, `Method not found: ${method.slice(0, 100)}`);
  }
}
