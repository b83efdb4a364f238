// Resources, prompts and completions of the upstreams, relayed. On /mcp they are namespaced like tools: prompts are
// `{upstream}__{prompt}`, resource URIs become `toolbus://{upstream}/{original uri}` (a URI scheme may not hold `_`,
// so the name prefix used for tools cannot be used for URIs), and resource links inside results and prompts are
// rewritten the same way so the agent can read them. On /mcp/{upstream} (an `endpoint`) everything keeps the
// upstream's own names. An agent sees a prompt when its allow-list matches `{upstream}__{prompt}`, the same rule as
// for tools; it sees and reads an upstream's resources when its allow-list covers the whole upstream (`*` or
// `{upstream}__*`), since a resource read names a URI, not a name an allow-list could match.
import { BusError } from '../errors.js';
import type { AgentIdentity } from '../pipeline/context.js';
import type { ServerRequestAsker } from '../upstreams/connection.js';
import {
  UpstreamLost,
  UpstreamRateLimited,
  UpstreamResultTooLarge,
  UpstreamRpcError,
  UpstreamUnavailable,
} from '../upstreams/errors.js';
import { INVALID_PARAMS, RpcError } from './rpc.js';

export interface DirectoryUpstream {
  name: string;
  ready: boolean;
  capabilities: Record<string, unknown> | undefined;
  instructions: string | undefined;
  /** Goes over the agent's own session when the upstream is per-agent or per-tenant. */
  request(
    agent: AgentIdentity,
    method: string,
    params: Record<string, unknown> | undefined,
    signal: AbortSignal,
    asker?: ServerRequestAsker,
  ): Promise<Record<string, unknown>>;
  /** Whether the agent may call at least one of this upstream's tools. */
  usableBy(agent: AgentIdentity): boolean;
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

/**
 * Rewrites the resource URIs inside content blocks (resource links and embedded resources) to the bus's URIs, so an
 * agent on /mcp can read what a tool result or a prompt points at. Returns the same array when nothing changed.
 */
export function rewriteContentUris(upstream: string, content: unknown): unknown {
  if (!Array.isArray(content)) return content;
  let changed = false;
  const out = content.map((block: unknown) => {
    if (block === null || typeof block !== 'object') return block;
    const b = block as Record<string, unknown>;
    if (b.type === 'resource_link' && typeof b.uri === 'string') {
      changed = true;
      return { ...b, uri: wrapUri(upstream, b.uri) };
    }
    const res = b.resource as Record<string, unknown> | undefined;
    if (b.type === 'resource' && res && typeof res.uri === 'string') {
      changed = true;
      return { ...b, resource: { ...res, uri: wrapUri(upstream, res.uri) } };
    }
    return block;
  });
  return changed ? out : content;
}

const MAX_PAGES = 50;

/** A per-agent session that could not be had (sessions full): the upstream is unavailable for this agent. */
function sessionRefused(err: unknown): boolean {
  return err instanceof BusError && err.category === 'upstream_unavailable';
}

/**
 * The upstream could not answer: down, its connection lost under the request, pushing back, an answer over the size
 * cap, or no session for the agent. Its listing is left out of an aggregate; a relayed request gets an error that
 * says so. (Anything else is a bug of ours, and reported as one.)
 */
function upstreamFailed(err: unknown): boolean {
  return (
    err instanceof UpstreamUnavailable ||
    err instanceof UpstreamLost ||
    err instanceof UpstreamRateLimited ||
    err instanceof UpstreamResultTooLarge ||
    sessionRefused(err)
  );
}

/** What a relayed failure tells the agent about retrying: the bus's code where it has one (needs_login, say), and when. */
function retryHint(err: unknown): { code?: string; retryAfterMs?: number } | undefined {
  if (err instanceof BusError)
    return { code: err.code, ...(err.retryAfterMs !== undefined ? { retryAfterMs: err.retryAfterMs } : {}) };
  if (err instanceof UpstreamUnavailable || err instanceof UpstreamRateLimited)
    return { retryAfterMs: Math.max(0, Math.ceil(err.retryAfterMs)) };
  return undefined;
}

/** `{upstream}__*` as a literal name matches only the globs `*` and `{upstream}__*` (and wider ones). */
function mayReadResources(agent: AgentIdentity, upstream: string): boolean {
  return agent.allows(`${upstream}__*`);
}

type Renamer = (up: string, item: Record<string, unknown>) => Record<string, unknown>;

/** Tasks remembered with the agent that created them (the oldest forgotten first). */
const MAX_TASK_OWNERS = 10_000;

/** A task id on /mcp: `{upstream}__{the upstream's id}`, like tool names. */
export function wrapTaskIds(upstream: string, result: Record<string, unknown>): Record<string, unknown> {
  const wrap = (o: Record<string, unknown>) =>
    typeof o.taskId === 'string' ? { ...o, taskId: `${upstream}__${o.taskId}` } : o;
  let out = wrap(result);
  const task = out.task as Record<string, unknown> | undefined;
  if (task && typeof task === 'object') out = { ...out, task: wrap(task) };
  if (Array.isArray(out.tasks)) out = { ...out, tasks: (out.tasks as Record<string, unknown>[]).map(wrap) };
  const meta = out._meta as Record<string, unknown> | undefined;
  const related = meta?.[RELATED_TASK] as Record<string, unknown> | undefined;
  if (related && typeof related === 'object') out = { ...out, _meta: { ...meta, [RELATED_TASK]: wrap(related) } };
  return out;
}

const RELATED_TASK = 'io.modelcontextprotocol/related-task';

/** The id of the task a tools/call result created (2025: `task.taskId`; 2026-07-28: `taskId`), if any. */
export function createdTaskId(result: Record<string, unknown>): string | undefined {
  const task = result.task as Record<string, unknown> | undefined;
  if (typeof task?.taskId === 'string') return task.taskId;
  return result.resultType === 'task' && typeof result.taskId === 'string' ? result.taskId : undefined;
}

/** The key of a task in `taskOwners`: its upstream and its id there. */
const taskKey = (upstream: string, taskId: string) => `${upstream}\u0000${taskId}`;

export class UpstreamDirectory {
  /** `{upstream}\u0000{task id}` → the agent whose call created it. */
  private readonly taskOwners = new Map<string, string>();

  constructor(private readonly upstreams: () => DirectoryUpstream[]) {}

  /** Remembers who created a task, so that no other agent can read, answer or cancel it here. */
  noteTask(agent: AgentIdentity, upstream: string, taskId: string): void {
    const key = taskKey(upstream, taskId);
    // A replay of the key (another agent of the same tenant may replay it) does not take the task from its creator.
    if (this.taskOwners.has(key)) return;
    this.taskOwners.set(key, agent.id);
    if (this.taskOwners.size > MAX_TASK_OWNERS) this.taskOwners.delete(this.taskOwners.keys().next().value!);
  }

  /**
   * tasks/get, tasks/result, tasks/cancel, tasks/update: relayed to the upstream whose task it is (on /mcp the id is
   * `{upstream}__{id}`). A task this replica saw created by another agent is unknown to this one; a task it never saw
   * (created before a restart, or on another replica) is relayed for any agent that may use the upstream, the
   * upstream's task ids being unguessable.
   */
  async task(
    agent: AgentIdentity,
    method: string,
    params: Record<string, unknown> | undefined,
    signal: AbortSignal,
    endpoint?: string,
  ): Promise<Record<string, unknown>> {
    const id = params?.taskId;
    if (typeof id !== 'string' || id.length > 512) throw new RpcError(INVALID_PARAMS, `${method} needs params.taskId`);
    const target = this.resolveName(id, endpoint);
    if (!target?.up.usableBy(agent) || !this.mayTouchTask(agent, target.up.name, target.name))
      throw new RpcError(INVALID_PARAMS, `Unknown task: ${id.slice(0, 200)}`);
    const res = await this.relay(agent, target.up, method, { ...params, taskId: target.name }, signal);
    return endpoint === undefined ? wrapTaskIds(target.up.name, res) : res;
  }

  /** tasks/list: the upstream's tasks on /mcp/{upstream}; on /mcp every upstream's, with their ids wrapped. */
  listTasks(agent: AgentIdentity, signal: AbortSignal, endpoint?: string) {
    return this.collect(
      agent,
      endpoint,
      'tasks',
      'tasks/list',
      'tasks',
      signal,
      (up, t) => wrapTaskIds(up, t),
      // Only tasks this agent created here are listed: a list would otherwise hand out the ids that make the others'
      // tasks reachable.
      (up, t) =>
        this.find(up)?.usableBy(agent) === true && this.taskOwners.get(taskKey(up, String(t.taskId))) === agent.id,
    );
  }

  private mayTouchTask(agent: AgentIdentity, upstream: string, taskId: string): boolean {
    const owner = this.taskOwners.get(taskKey(upstream, taskId));
    return owner === undefined || owner === agent.id;
  }

  /** The upstreams an endpoint serves: one on /mcp/{upstream}, every ready one on /mcp. */
  private serving(endpoint: string | undefined): DirectoryUpstream[] {
    const all = this.upstreams();
    return endpoint === undefined ? all : all.filter((u) => u.name === endpoint);
  }

  private async collect(
    agent: AgentIdentity,
    endpoint: string | undefined,
    capability: string,
    method: string,
    field: string,
    signal: AbortSignal,
    rename: Renamer,
    visible: (up: string, item: Record<string, unknown>) => boolean,
  ): Promise<Record<string, unknown>> {
    const lists = await Promise.all(
      this.serving(endpoint)
        .filter((u) => u.ready && u.capabilities?.[capability] !== undefined)
        .map(async (u) => {
          const items: Record<string, unknown>[] = [];
          let cursor: unknown;
          try {
            // Every page is read: agents get the whole list in one answer.
            for (let page = 0; page < MAX_PAGES; page++) {
              const res = await u.request(agent, method, cursor === undefined ? undefined : { cursor }, signal);
              for (const item of (res[field] as Record<string, unknown>[] | undefined) ?? []) {
                if (!visible(u.name, item)) continue;
                items.push(endpoint === undefined ? rename(u.name, item) : item);
              }
              cursor = res.nextCursor;
              if (typeof cursor !== 'string') break;
            }
          } catch (err) {
            // One upstream that fails its listing must not hide the others' entries.
            if (!(err instanceof UpstreamRpcError || upstreamFailed(err))) throw err;
          }
          return items;
        }),
    );
    return { [field]: lists.flat() };
  }

  listResources(agent: AgentIdentity, signal: AbortSignal, endpoint?: string) {
    return this.collect(
      agent,
      endpoint,
      'resources',
      'resources/list',
      'resources',
      signal,
      (up, r) => ({ ...r, uri: wrapUri(up, String(r.uri)), name: `${up}__${String(r.name ?? '')}` }),
      (up) => mayReadResources(agent, up),
    );
  }

  listResourceTemplates(agent: AgentIdentity, signal: AbortSignal, endpoint?: string) {
    return this.collect(
      agent,
      endpoint,
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

  listPrompts(agent: AgentIdentity, signal: AbortSignal, endpoint?: string) {
    return this.collect(
      agent,
      endpoint,
      'prompts',
      'prompts/list',
      'prompts',
      signal,
      (up, p) => ({ ...p, name: `${up}__${String(p.name ?? '')}` }),
      (up, p) => agent.allows(`${up}__${String(p.name ?? '')}`),
    );
  }

  private find(name: string): DirectoryUpstream | undefined {
    return this.upstreams().find((u) => u.name === name);
  }

  /** `{upstream}__{name}` on /mcp, `{name}` on /mcp/{upstream} → the upstream and its own name. */
  private resolveName(name: string, endpoint: string | undefined): { up: DirectoryUpstream; name: string } | undefined {
    if (endpoint !== undefined) {
      const up = this.find(endpoint);
      return up ? { up, name } : undefined;
    }
    const sep = name.indexOf('__');
    const up = sep > 0 ? this.find(name.slice(0, sep)) : undefined;
    return up ? { up, name: name.slice(sep + 2) } : undefined;
  }

  /** The bus's URI (or the upstream's own, on /mcp/{upstream}) → the upstream and its URI. */
  private resolveUri(uri: string, endpoint: string | undefined): { up: DirectoryUpstream; uri: string } | undefined {
    if (endpoint !== undefined) {
      const up = this.find(endpoint);
      return up ? { up, uri } : undefined;
    }
    const parts = unwrapUri(uri);
    const up = parts ? this.find(parts.upstream) : undefined;
    return up && parts ? { up, uri: parts.uri } : undefined;
  }

  /** The upstream and its own URI for a URI an agent names (for subscriptions); not found when it may not read it. */
  locate(agent: AgentIdentity, uri: unknown, endpoint?: string): { upstream: string; uri: string } {
    if (typeof uri !== 'string') throw new RpcError(INVALID_PARAMS, 'params.uri is required');
    const target = this.resolveUri(uri, endpoint);
    if (!target || !mayReadResources(agent, target.up.name) || !target.up.capabilities?.resources)
      throw new RpcError(-32002, `Resource not found: ${uri.slice(0, 200)}`, { uri });
    return { upstream: target.up.name, uri: target.uri };
  }

  async readResource(
    agent: AgentIdentity,
    params: Record<string, unknown> | undefined,
    signal: AbortSignal,
    endpoint?: string,
    asker?: ServerRequestAsker,
  ) {
    const uri = params?.uri;
    if (typeof uri !== 'string') throw new RpcError(INVALID_PARAMS, 'resources/read needs params.uri');
    const target = this.resolveUri(uri, endpoint);
    if (!target || !mayReadResources(agent, target.up.name))
      throw new RpcError(-32002, `Resource not found: ${uri.slice(0, 200)}`, { uri });
    const res = await this.relay(agent, target.up, 'resources/read', { ...params, uri: target.uri }, signal, asker);
    if (endpoint !== undefined) return res;
    const contents = (res.contents as Record<string, unknown>[] | undefined) ?? [];
    return {
      ...res,
      contents: contents.map((c) => ({
        ...c,
        uri: typeof c.uri === 'string' ? wrapUri(target.up.name, c.uri) : c.uri,
      })),
    };
  }

  async getPrompt(
    agent: AgentIdentity,
    params: Record<string, unknown> | undefined,
    signal: AbortSignal,
    endpoint?: string,
    asker?: ServerRequestAsker,
  ) {
    const name = params?.name;
    if (typeof name !== 'string') throw new RpcError(INVALID_PARAMS, 'prompts/get needs params.name');
    const target = this.resolveName(name, endpoint);
    if (!target || !agent.allows(`${target.up.name}__${target.name}`))
      throw new RpcError(INVALID_PARAMS, `Unknown prompt: ${name.slice(0, 200)}`);
    const res = await this.relay(agent, target.up, 'prompts/get', { ...params, name: target.name }, signal, asker);
    if (endpoint !== undefined || !Array.isArray(res.messages)) return res;
    const messages = (res.messages as Record<string, unknown>[]).map((m) => {
      const content = m.content;
      if (Array.isArray(content)) return { ...m, content: rewriteContentUris(target.up.name, content) };
      if (content && typeof content === 'object') {
        const [one] = rewriteContentUris(target.up.name, [content]) as unknown[];
        return { ...m, content: one };
      }
      return m;
    });
    return { ...res, messages };
  }

  /** completion/complete: the ref names a prompt or a resource template; it is rewritten to the upstream's own. */
  async complete(
    agent: AgentIdentity,
    params: Record<string, unknown> | undefined,
    signal: AbortSignal,
    endpoint?: string,
  ) {
    const ref = params?.ref as Record<string, unknown> | undefined;
    if (!ref || typeof ref.type !== 'string')
      throw new RpcError(INVALID_PARAMS, 'completion/complete needs params.ref');
    let up: DirectoryUpstream | undefined;
    let upstreamRef: Record<string, unknown>;
    if (ref.type === 'ref/prompt' && typeof ref.name === 'string') {
      const target = this.resolveName(ref.name, endpoint);
      if (target && agent.allows(`${target.up.name}__${target.name}`)) up = target.up;
      upstreamRef = { ...ref, name: target?.name };
    } else if (ref.type === 'ref/resource' && typeof ref.uri === 'string') {
      const target = this.resolveUri(ref.uri, endpoint);
      if (target && mayReadResources(agent, target.up.name)) up = target.up;
      upstreamRef = { ...ref, uri: target?.uri };
    } else {
      throw new RpcError(INVALID_PARAMS, `completion/complete: unknown ref type ${String(ref.type).slice(0, 40)}`);
    }
    if (!up || up.capabilities?.completions === undefined)
      throw new RpcError(INVALID_PARAMS, 'completion/complete: no such prompt or resource template');
    return this.relay(agent, up, 'completion/complete', { ...params, ref: upstreamRef }, signal);
  }

  private async relay(
    agent: AgentIdentity,
    up: DirectoryUpstream,
    method: string,
    params: Record<string, unknown>,
    signal: AbortSignal,
    asker?: ServerRequestAsker,
  ) {
    try {
      return await up.request(agent, method, params, signal, asker);
    } catch (err) {
      if (err instanceof UpstreamRpcError) throw new RpcError(err.code, err.message, err.data);
      if (err instanceof UpstreamResultTooLarge)
        throw new RpcError(
          -32000,
          `Upstream ${up.name} answered with more than ${err.limit} bytes (the message cap); a retry would get the same.`,
        );
      if (upstreamFailed(err))
        throw new RpcError(-32000, `Upstream ${up.name} is unavailable; retry later.`, retryHint(err));
      throw err;
    }
  }
}
