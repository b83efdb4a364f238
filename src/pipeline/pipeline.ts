// The path of one tool call, written down once, in order. Each stage says in its own header why it stands where it
// does; the short reasons are repeated here so the order can be read in one place.
import { BusError, errorResult, toBusError } from '../errors.js';
import type { RecentEvents } from '../observe/recent.js';
import { compose, type Stage } from './compose.js';
import type { CallContext, ToolResult } from './context.js';
import type { PipelineServices } from './services.js';
import { authenticate } from './stages/authenticate.js';
import { authorize } from './stages/authorize.js';
import { forward } from './stages/forward.js';
import { idempotency } from './stages/idempotency.js';
import { lease } from './stages/lease.js';
import { rateLimit } from './stages/rate-limit.js';
import { resolveTool } from './stages/resolve-tool.js';
import { validate } from './stages/validate.js';

export function pipelineStages(services: PipelineServices): Stage[] {
  return [
    authenticate(services), // before anything: an unknown or revoked caller learns nothing
    resolveTool(services), //  name → tool and its policy; everything after depends on the policy
    authorize(), //            the agent's allow-list, before any work is done on its behalf
    validate(services), //             before idempotency: a malformed call never claims a key, so the fixed retry may reuse it
    idempotency(services), //  before lease and rate: a replay holds no lease, spends no token, touches no upstream
    lease(services), //        before rate: tokens are spent only by calls that can go at once
    rateLimit(services), //    the upstream's cap, shared fairly between agents
    forward(services), //      the only stage that talks to an upstream; retries, if any, live inside it
  ];
}

export interface CallInFlight {
  agent: string;
  tool: string;
  startedAt: number;
}

export interface CallRunner {
  run(ctx: CallContext): Promise<ToolResult>;
  /** Calls running now, by owner id (the id that holds keys and leases in the store). */
  readonly inFlight: ReadonlyMap<string, CallInFlight>;
}

/** Runs the pipeline and turns every failure into the wire format; also records metrics, audit and recent events. */
export function createCallRunner(services: PipelineServices, recent: RecentEvents): CallRunner {
  const pipeline = compose(pipelineStages(services));
  const inFlight = new Map<string, CallInFlight>();
  return {
    inFlight,
    async run(ctx) {
      // Names are capped before they are kept anywhere: a hostile 3 MB name is not_found and stored as its prefix.
      const shownName = ctx.toolName.length > 128 ? `${ctx.toolName.slice(0, 128)}…` : ctx.toolName;
      inFlight.set(ctx.owner, { agent: ctx.agent.id, tool: shownName, startedAt: ctx.startedAt });
      let result: ToolResult;
      let code: string | undefined;
      try {
        result = await pipeline(ctx);
        if (ctx.outcome === 'pending') ctx.outcome = result.isError === true ? 'upstream_error' : 'ok';
      } catch (thrown) {
        // An agent that cancelled (or went away) while its call waited gets a cancellation, not a bug report.
        const err =
          !(thrown instanceof BusError) && ctx.signal.aborted
            ? new BusError('timeout', 'cancelled', 'The call was cancelled by the agent.', {
                retryable: !ctx.dispatched,
              })
            : toBusError(thrown);
        if (err.category === 'internal')
          services.logger.error({ err: thrown, tool: ctx.toolName.slice(0, 128) }, 'internal error in a call');
        ctx.outcome = err.category;
        code = err.code;
        result = errorResult(err);
      }
      inFlight.delete(ctx.owner);
      const durationMs = Date.now() - ctx.startedAt;
      services.metrics.call(ctx.tool?.name ?? 'unknown', ctx.outcome, durationMs / 1000);
      if (ctx.outcome !== 'ok') {
        recent.push({
          at: Date.now(),
          agent: ctx.agent.id,
          tool: shownName,
          outcome: ctx.outcome,
          ...(code ? { code } : {}),
          durationMs,
        });
      }
      if (ctx.tool?.kind === 'write') {
        services.store
          .appendAudit({
            at: ctx.startedAt,
            agent: ctx.agent.id,
            tenant: ctx.agent.tenant,
            tool: ctx.tool.name,
            key: ctx.key ?? null,
            scopes: ctx.scopes,
            fencingToken: ctx.fencingToken ?? null,
            outcome: ctx.outcome,
            durationMs,
          })
          .catch((err: unknown) => services.logger.warn({ err }, 'audit record not written'));
      }
      return result;
    },
  };
}
