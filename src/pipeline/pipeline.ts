// The path of one tool call, written down once, in order. Each stage says in its own header why it stands where it
// does; the short reasons are repeated here so the order can be read in one place.
import { BusError, errorResult, toBusError } from '../errors.js';
import type { RecentEvents } from '../observe/recent.js';
import type { Timeline } from '../observe/timeline.js';
import { type CallSpan, preciseNow, type Tracer } from '../observe/tracing.js';
import { UpstreamProtocolRefusal } from '../upstreams/errors.js';
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
    phase('lease', lease(services)), //        before rate: tokens are spent only by calls that can go at once
    phase('queue', rateLimit(services)), //    the upstream's cap, shared fairly between agents
    phase('upstream', forward(services)), //   the only stage that talks to an upstream; retries live inside it
  ];
}

/** Where a call is now: waiting for its leases, queued for the upstream's budget, or with the upstream. */
export type CallPhase = 'lease' | 'queue' | 'upstream';

/** When a call entered each phase (precise ms), and its trace; kept beside the context, not in it. */
interface PhaseMarks {
  entered: Partial<Record<CallPhase, number>>;
  span: CallSpan | undefined;
  onEnter: (phase: CallPhase) => void;
}

const marks = new WeakMap<CallContext, PhaseMarks>();

/**
 * Marks the moment a call reaches a stage, so the dashboard shows whether a call waits or runs, and the trace gets
 * queue-wait, lease-wait and upstream spans, without the stages knowing about either. Before the upstream stage it
 * also hands the upstream a `traceparent` naming our upstream-call span.
 */
function phase(name: CallPhase, stage: Stage): Stage {
  return function marked(ctx, next) {
    const m = marks.get(ctx);
    if (m) {
      const now = preciseNow();
      m.entered[name] = now;
      m.onEnter(name);
      if (name === 'upstream' && m.span) {
        // The agent's meta is copied to the upstream by forward; ours replaces its traceparent with our span's.
        (ctx as { meta: Record<string, unknown> | undefined }).meta = { ...ctx.meta, ...m.span.startUpstream(now) };
      }
    }
    return stage(ctx, next);
  };
}

/** Approximate bytes of a result's content (text and base64 data), without serializing it again. */
function resultBytes(result: ToolResult): number {
  let n = 0;
  const content = result.content;
  if (Array.isArray(content)) {
    for (const c of content as Record<string, unknown>[]) {
      if (typeof c.text === 'string') n += c.text.length;
      else if (typeof c.data === 'string') n += c.data.length;
    }
  }
  return n;
}

export interface RunnerObservers {
  timeline?: Timeline;
  tracer?: Tracer;
}

export interface CallInFlight {
  agent: string;
  tool: string;
  startedAt: number;
  /** Absent until the call reaches the lease stage (it is being checked: auth, schema, key). */
  phase?: CallPhase;
}

export interface CallRunner {
  run(ctx: CallContext): Promise<ToolResult>;
  /** Calls running now, by owner id (the id that holds keys and leases in the store). */
  readonly inFlight: ReadonlyMap<string, CallInFlight>;
}

/** Runs the pipeline and turns every failure into the wire format; also records metrics, audit and recent events. */
export function createCallRunner(
  services: PipelineServices,
  recent: RecentEvents,
  observe: RunnerObservers = {},
): CallRunner {
  const pipeline = compose(pipelineStages(services));
  const inFlight = new Map<string, CallInFlight>();
  return {
    inFlight,
    async run(ctx) {
      // Names are capped before they are kept anywhere: a hostile 3 MB name is not_found and stored as its prefix.
      const shownName = ctx.toolName.length > 128 ? `${ctx.toolName.slice(0, 128)}…` : ctx.toolName;
      const entry: CallInFlight = { agent: ctx.agent.id, tool: shownName, startedAt: ctx.startedAt };
      inFlight.set(ctx.owner, entry);
      const began = preciseNow();
      const span = observe.tracer?.startCall(
        `tools/call ${shownName}`,
        began,
        ctx.meta?.traceparent,
        ctx.meta?.tracestate,
      );
      const m: PhaseMarks = {
        entered: {},
        span,
        onEnter: (p) => {
          entry.phase = p;
        },
      };
      marks.set(ctx, m);
      let result: ToolResult;
      let code: string | undefined;
      let passThrough: UpstreamProtocolRefusal | undefined;
      try {
        result = await pipeline(ctx);
        if (ctx.outcome === 'pending') ctx.outcome = result.isError === true ? 'upstream_error' : 'ok';
      } catch (thrown) {
        // A protocol-level refusal the agent must see as itself (not as a tool result): recorded, then passed on.
        if (thrown instanceof UpstreamProtocolRefusal) passThrough = thrown;
        // An agent that cancelled (or went away) while its call waited gets a cancellation, not a bug report.
        const err =
          !(thrown instanceof BusError) && ctx.signal.aborted
            ? new BusError('timeout', 'cancelled', 'The call was cancelled by the agent.', {
                retryable: !ctx.dispatch.sent,
              })
            : passThrough
              ? new BusError(
                  'upstream_error',
                  'upstream_protocol_refusal',
                  thrown instanceof Error ? thrown.message : '',
                )
              : toBusError(thrown);
        if (err.category === 'internal')
          services.logger.error({ err: thrown, tool: ctx.toolName.slice(0, 128) }, 'internal error in a call');
        ctx.outcome = err.category;
        code = err.code;
        result = errorResult(err);
      }
      inFlight.delete(ctx.owner);
      const ended = preciseNow();
      const durationMs = Date.now() - ctx.startedAt;
      services.metrics.call(ctx.tool?.name ?? 'unknown', ctx.outcome, durationMs / 1000);
      services.metrics.agentCall(ctx.agent.id, ctx.outcome);
      // Phase boundaries: each lasts until the next began (or the call ended).
      const { lease: tLease, queue: tQueue, upstream: tUp } = m.entered;
      const takesLeases = ctx.tool?.kind === 'write' && (ctx.tool?.lease.length ?? 0) > 0;
      const leaseWaitMs = takesLeases && tLease !== undefined ? (tQueue ?? ended) - tLease : 0;
      const queueWaitMs = tQueue !== undefined ? (tUp ?? ended) - tQueue : 0;
      observe.timeline?.record({
        upstream: ctx.tool?.upstream,
        agent: ctx.agent.id,
        tool: shownName,
        outcome: ctx.outcome,
        durationMs,
        leaseWaitMs,
        ...(code ? { code } : {}),
      });
      if (span) {
        if (takesLeases && tLease !== undefined) span.waited('lease wait', tLease, tQueue ?? ended);
        if (tQueue !== undefined) span.waited('queue wait', tQueue, tUp ?? ended);
        span.end(
          ended,
          {
            'mcp.method.name': 'tools/call',
            'gen_ai.tool.name': shownName,
            'toolbus.agent': ctx.agent.id,
            'toolbus.upstream': ctx.tool?.upstream,
            'toolbus.tool.kind': ctx.tool?.kind,
            'toolbus.outcome': ctx.outcome,
            'toolbus.idempotency_key_present': ctx.key !== undefined,
            ...(code ? { 'error.type': code } : {}),
          },
          ctx.dispatch.sent,
          ctx.outcome === 'ok' || ctx.outcome === 'replayed' || ctx.outcome === 'joined' ? undefined : ctx.outcome,
        );
      }
      if (services.logger.isLevelEnabled('info')) {
        // One line per call; argument values never appear (they may hold personal data or secrets).
        services.logger.info(
          {
            agent: ctx.agent.id,
            tool: shownName,
            upstream: ctx.tool?.upstream,
            outcome: ctx.outcome,
            ...(code ? { code } : {}),
            durationMs,
            ...(leaseWaitMs >= 1 ? { leaseWaitMs: Math.round(leaseWaitMs) } : {}),
            ...(queueWaitMs >= 1 ? { queueWaitMs: Math.round(queueWaitMs) } : {}),
            keyPresent: ctx.key !== undefined,
            bytes: resultBytes(result),
            ...(span?.sampled ? { traceId: span.traceId } : {}),
          },
          'call',
        );
      }
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
      if (passThrough) throw passThrough;
      return result;
    },
  };
}
