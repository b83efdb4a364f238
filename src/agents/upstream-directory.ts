// Resources and prompts of the upstreams, relayed and namespaced like tools: prompts are `{upstream}__{prompt}`,
// resource URIs become `toolbus://{upstream}/{original uri}` (a URI scheme may not hold `_`, so the name prefix used
// for tools cannot be used for URIs). An agent sees a prompt when its allow-list matches `{upstream}__{prompt}`, the
// same rule as for tools; it sees and reads an upstream's resources when its allow-list covers the whole upstream
// (`*` or `{upstream}__*`), since a resource read names a URI, not a name an allow-list could match.
import { BusError } from '../errors.js';
import type { AgentIdentity } from '../pipeline/context.js';
import { UpstreamRpcError, UpstreamUnavailable } from '../upstreams/errors.js';
import { INVALID_PARAMS, RpcError } from './rpc.js';

export interface DirectoryUpstream {
  name: string;
  ready: boolean;
  capabilities: Record<string, unknown> | undefined;
  /** Goes over the agent's own session when the upstream is per-agent or per-tenant. */
  request(
    agent: AgentIdentity,
    method: string,
    params: Record<string, unknown> | undefined,
    signal: AbortSignal,
  ): Promise<Record<string, unknown>>;
}

const URI_PREFIX = 'toolbus://';

export function wrapUri(upstream: string, uri: string): string {
  return `${URI_PREFIX}${upstream}/${uri}`;
}

export function unwrapUri(uri: string): { upstream: string; uri: string } | null {
  if (!uri.startsWith(URI_PREFIX)) return null;
  const rest = uri.slice(URI_PREFIX.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) return null;
  return { upstream: rest.slice(0, slash), uri: rest.slice(slash + 1) };
}

const MAX_PAGES = 50;

/** A per-agent upstream could not give this agent a session (all busy, or shutting down). */
function sessionRefused(err: unknown): boolean {
  return err instanceof BusError && err.category === 'upstream_unavailable';
}

/** `{upstream}__*` as a literal name matches only the globs `*` and `{upstream}__*` (and wider ones). */
function mayReadResources(agent: AgentIdentity, upstream: string): boolean {
  return agent.allows(`${upstream}__*`);
}

export class UpstreamDirectory {
  constructor(private readonly upstreams: () => DirectoryUpstream[]) {}

  private async collect(
    agent: AgentIdentity,
    capability: string,
    method: string,
    field: string,
    signal: AbortSignal,
    rename: (up: string, item: Record<string, unknown>) => Record<string, unknown> | null,
    visible: (up: string, item: Record<string, unknown>) => boolean,
  ): Promise<Record<string, unknown>> {
    const lists = await Promise.all(
      this.upstreams()
        .filter((u) => u.ready && u.capabilities?.[capability] !== undefined)
        .map(async (u) => {
          const items: Record<string, unknown>[] = [];
          let cursor: unknown;
          try {
            for (let page = 0; page < MAX_PAGES; page++) {
              const res = await u.request(agent, method, cursor === undefined ? undefined : { cursor }, signal);
              for (const item of (res[field] as Record<string, unknown>[] | undefined) ?? []) {
                const renamed = rename(u.name, item);
                if (renamed && visible(u.name, item)) items.push(renamed);
              }
              cursor = res.nextCursor;
              if (typeof cursor !== 'string') break;
            }
          } catch (err) {
            // One upstream that fails its listing must not hide the others' entries.
            if (!(err instanceof UpstreamUnavailable || err instanceof UpstreamRpcError || sessionRefused(err)))
              throw err;
          }
          return items;
        }),
    );
    return { [field]: lists.flat() };
  }

  listResources(agent: AgentIdentity, signal: AbortSignal) {
    return this.collect(
      agent,
      'resources',
      'resources/list',
      'resources',
      signal,
      (up, r) => ({
        ...r,
        uri: wrapUri(up, String(r.uri)),
        name: `${up}__${String(r.name ?? '')}`,
      }),
      (up) => mayReadResources(agent, up),
    );
  }

  listResourceTemplates(agent: AgentIdentity, signal: AbortSignal) {
    return this.collect(
      agent,
      'resources',
      'resources/templates/list',
      'resourceTemplates',
      signal,
      (up, r) => ({
        ...r,
        uriTemplate: wrapUri(up, String(r.uriTemplate)),
        name: `${up}__${String(r.name ?? '')}`,
      }),
      (up) => mayReadResources(agent, up),
    );
  }

  listPrompts(agent: AgentIdentity, signal: AbortSignal) {
    return this.collect(
      agent,
      'prompts',
      'prompts/list',
      'prompts',
      signal,
      (up, p) => ({
        ...p,
        name: `${up}__${String(p.name ?? '')}`,
      }),
      (up, p) => agent.allows(`${up}__${String(p.name ?? '')}`),
    );
  }

  private find(name: string): DirectoryUpstream | undefined {
    return this.upstreams().find((u) => u.name === name);
  }

  async readResource(agent: AgentIdentity, params: Record<string, unknown> | undefined, signal: AbortSignal) {
    const uri = params?.uri;
    if (typeof uri !== 'string') throw new RpcError(INVALID_PARAMS, 'resources/read needs params.uri');
    const parts = unwrapUri(uri);
    const up = parts && this.find(parts.upstream);
    if (!parts || !up || !mayReadResources(agent, up.name)) throw new RpcError(-32002, `Resource not found: ${uri}`);
    const res = await this.relay(agent, up, 'resources/read', { ...params, uri: parts.uri }, signal);
    const contents = (res.contents as Record<string, unknown>[] | undefined) ?? [];
    return {
      ...res,
      contents: contents.map((c) => ({ ...c, uri: typeof c.uri === 'string' ? wrapUri(up.name, c.uri) : c.uri })),
    };
  }

  async getPrompt(agent: AgentIdentity, params: Record<string, unknown> | undefined, signal: AbortSignal) {
    const name = params?.name;
    if (typeof name !== 'string') throw new RpcError(INVALID_PARAMS, 'prompts/get needs params.name');
    const sep = name.indexOf('__');
    const up = sep > 0 ? this.find(name.slice(0, sep)) : undefined;
    if (!up || !agent.allows(name)) throw new RpcError(INVALID_PARAMS, `Unknown prompt: ${name}`);
    return this.relay(agent, up, 'prompts/get', { ...params, name: name.slice(sep + 2) }, signal);
  }

  private async relay(
    agent: AgentIdentity,
    up: DirectoryUpstream,
    method: string,
    params: Record<string, unknown>,
    signal: AbortSignal,
  ) {
    try {
      return await up.request(agent, method, params, signal);
    } catch (err) {
      if (err instanceof UpstreamRpcError) throw new RpcError(err.code, err.message);
      if (err instanceof UpstreamUnavailable || sessionRefused(err))
        throw new RpcError(-32000, `Upstream ${up.name} is unavailable; retry later.`);
      throw err;
    }
  }
}
