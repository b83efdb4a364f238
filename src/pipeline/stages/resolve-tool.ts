// Stage 2. Exposed name → catalog entry (upstream, tool, policy). Unknown names stop here with not_found; a name
// longer than any tool may have is not_found before any lookup, so a hostile name is never hashed, stored or echoed.
// A name of an upstream whose catalog has not loaded yet (it was down at start) is upstream_unavailable, retryable:
// the tool may well exist once the upstream answers.
import { BusError } from '../../errors.js';
import { needsLoginError } from '../../upstreams/oauth/needs-login.js';
import type { Stage } from '../compose.js';
import type { PipelineServices } from '../services.js';

/** The configured upstream an exposed name belongs to (by prefix, or by a configured rename). */
function upstreamOf(services: PipelineServices, name: string): string | undefined {
  const upstreams = services.config().upstreams;
  const sep = name.indexOf('__');
  if (sep > 0 && Object.hasOwn(upstreams, name.slice(0, sep))) return name.slice(0, sep);
  for (const [up, cfg] of Object.entries(upstreams))
    for (const policy of Object.values(cfg.tools)) if (policy.rename === name) return up;
  return undefined;
}

export function resolveTool(services: PipelineServices): Stage {
  return function resolveToolStage(ctx, next) {
    const max = services.config().limits.maxNameLength;
    const tool = ctx.toolName.length > max ? undefined : services.catalog.get(ctx.toolName);
    if (!tool) {
      if (ctx.toolName.length > max)
        throw new BusError('not_found', 'unknown_tool', `No tool has a name longer than ${max} characters.`);
      const upstream = upstreamOf(services, ctx.toolName);
      if (upstream !== undefined && !services.catalog.isLoaded(upstream) && ctx.agent.allows(ctx.toolName)) {
        // An OAuth upstream never logged in: say what the operator must do.
        if (services.upstream(upstream)?.connection.state === 'needs_login') throw needsLoginError(upstream);
        throw new BusError(
          'upstream_unavailable',
          'catalog_not_loaded',
          `Upstream ${upstream} has not answered yet, so its tools are not known; nothing was sent.`,
          { retryAfterMs: services.upstream(upstream)?.connection.retryInMs() ?? 1000 },
        );
      }
      throw new BusError('not_found', 'unknown_tool', `No tool named ${JSON.stringify(ctx.toolName)} is on this bus.`);
    }
    ctx.tool = tool;
    return next();
  };
}
