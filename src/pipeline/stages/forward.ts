// Stage 8, the last: the only stage that talks to an upstream. It owns the call's deadline on the wire (progress may
// extend it up to a hard cap), relays cancellation and progress, feeds the circuit breaker, and turns every upstream
// failure into a category of the error table. Nothing here re-runs the stages before it.
import { paramHeaders } from '../../catalog/mcp-param-headers.js';
import { BusError, errorResult } from '../../errors.js';
import { InputNotGiven } from '../../upstreams/eras.js';
import {
  PASSED_THROUGH_CODES,
  UpstreamLocalError,
  UpstreamLost,
  UpstreamProtocolRefusal,
  UpstreamRateLimited,
  UpstreamResultTooLarge,
  UpstreamRpcError,
  UpstreamUnavailable,
} from '../../upstreams/errors.js';
import type { UpstreamSession } from '../../upstreams/upstream-unit.js';
import type { Stage } from '../compose.js';
import type { CallContext, ToolResult } from '../context.js';
import type { PipelineServices } from '../services.js';

const TOOLBUS_META = /^toolbus\//;

function upstreamMeta(ctx: CallContext): Record<string, unknown> | undefined {
  let meta: Record<string, unknown> | undefined;
  if (ctx.meta) {
    for (const [k, v] of Object.entries(ctx.meta)) {
      if (k === 'progressToken' || TOOLBUS_META.test(k)) continue;
      meta ??= {};
      meta[k] = v;
    }
  }
  if (ctx.fencingToken !== undefined) {
    meta ??= {};
    meta['toolbus/fencing-token'] = ctx.fencingToken;
    if (ctx.grants.length > 1)
      meta['toolbus/fencing-tokens'] = Object.fromEntries(ctx.grants.map((g) => [g.scope, g.token]));
  }
  return meta;
}

function toolErrorResult(result: ToolResult, toolName: string): ToolResult {
  const err = new BusError(
    'upstream_error',
    'tool_reported_error',
    `The tool ${toolName} reported an error; its own result is passed through.`,
  );
  const meta = (result._meta as Record<string, unknown> | undefined) ?? {};
  return { ...result, _meta: { ...meta, 'toolbus/error': err.toWire() } };
}

export function forward(services: PipelineServices): Stage {
  return async function forwardStage(ctx) {
    const tool = ctx.tool!;
    const runtime = services.upstream(tool.upstream);
    if (!runtime)
      throw new BusError('upstream_unavailable', 'upstream_missing', `Upstream ${tool.upstream} is not running.`, {
        retryAfterMs: 1000,
      });
    // The agent's own session in per-agent/per-tenant mode (opened on first use), the shared connection otherwise.
    // Taken before the dispatch guard runs: a call refused here was never dispatched, so its key is released for the retry.
    const queueWaitMs = services.config().upstreams[tool.upstream]?.queueWaitMs ?? 10_000;
    let session: UpstreamSession;
    try {
      session = await runtime.sessionFor(ctx.agent, {
        waitUntil: Math.min(ctx.deadline, Date.now() + queueWaitMs),
        signal: ctx.signal,
      });
    } catch (err) {
      if (ctx.signal.aborted && !(err instanceof BusError))
        throw new BusError('timeout', 'cancelled', 'The call was cancelled by the agent.');
      throw err;
    }
    try {
      return await forwardOver(session, ctx, services);
    } finally {
      session.release();
    }
  };
}

async function forwardOver(
  session: UpstreamSession,
  ctx: CallContext,
  services: PipelineServices,
): Promise<ToolResult> {
  const tool = ctx.tool!;
  const gate = session.breaker.check();
  if (!gate.ok) {
    throw new BusError(
      'upstream_unavailable',
      'circuit_open',
      `Upstream ${tool.upstream} is failing; calls are paused.`,
      {
        retryAfterMs: gate.retryAfterMs,
      },
    );
  }
  await ctx.dispatch.beforeSend();

  const args = tool.forwardKey && ctx.key !== undefined ? { ...ctx.args, idempotency_key: ctx.key } : ctx.args;
  const params: Record<string, unknown> = { name: tool.upstreamTool, arguments: args };
  const meta = upstreamMeta(ctx);
  if (meta) params._meta = meta;
  if (ctx.input?.responses !== undefined) params.inputResponses = ctx.input.responses;
  if (ctx.input?.state !== undefined) params.requestState = ctx.input.state;
  if (ctx.task !== undefined) params.task = ctx.task;

  // The deadline aborts the call's own signal, marked timedOut first: what follows tells a deadline from an agent
  // that cancelled by that mark, and one controller per call is enough (each costs microseconds on every call).
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(
      () => {
        if (ctx.signal.aborted) return;
        ctx.timedOut = true;
        ctx.abort(new Error('deadline'));
      },
      Math.max(0, ctx.deadline - Date.now()),
    );
  };
  arm();
  const relay = ctx.onProgress;
  const onProgress = (p: Record<string, unknown>) => {
    // Progress shows the upstream is alive: extend the deadline, never past the hard cap.
    const extended = Math.min(ctx.hardDeadline, Date.now() + tool.timeoutMs);
    if (extended > ctx.deadline) {
      ctx.deadline = extended;
      arm();
    }
    // The upstream saw a token of the bus's own; the agent gets back the token it sent.
    relay?.({ ...p, progressToken: ctx.meta?.progressToken });
  };
  try {
    const result = await session.connection.request('tools/call', params, {
      signal: ctx.signal,
      onProgress,
      ...(ctx.asker ? { asker: ctx.asker } : {}),
      ...(ctx.onLog ? { onLog: ctx.onLog } : {}),
      agentId: ctx.agent.id,
      headers: paramHeaders(tool.headerDeclarations, args),
      onSent: () => ctx.dispatch.markSent(),
    });
    session.breaker.success();
    return result.isError === true ? toolErrorResult(result, tool.name) : result;
  } catch (err) {
    if (err instanceof InputNotGiven && !ctx.timedOut && !ctx.signal.aborted) {
      // A translated call whose input never came (eras.ts): the upstream was waiting for it, so the key is released
      // and the failure is not recorded; a retry from a client that can answer runs it again.
      ctx.dispatch.markNotDone();
      session.breaker.success();
      throw new BusError(
        'upstream_error',
        'input_not_given',
        `${tool.name} needed input it did not get: ${err.message}`,
      );
    }
    if (err instanceof UpstreamRpcError && PASSED_THROUGH_CODES.has(err.code)) {
      session.breaker.success();
      throw new UpstreamProtocolRefusal(err.code, err.message, err.data);
    }
    if (err instanceof UpstreamRpcError && !ctx.timedOut && !ctx.signal.aborted) {
      // The upstream answered, with a protocol error: that is its answer, recorded (and replayed) like a tool error.
      session.breaker.success();
      const code = err.code === -32602 ? 'upstream_invalid_params' : 'upstream_rpc_error';
      return errorResult(
        new BusError('upstream_error', code, `Upstream ${tool.upstream} refused the call: ${err.message}`),
      );
    }
    if (err instanceof UpstreamResultTooLarge && !ctx.timedOut && !ctx.signal.aborted) {
      // The upstream did answer (a write did happen): the answer is recorded, but it is too large to pass on.
      session.breaker.success();
      return errorResult(
        new BusError(
          'upstream_error',
          'result_too_large',
          `${tool.name} answered with more than ${err.limit} bytes, which the bus does not pass on (limits.maxUpstreamMessageBytes).`,
        ),
      );
    }
    throw mapFailure(err, ctx, services, session);
  } finally {
    clearTimeout(timer);
  }
}

function mapFailure(err: unknown, ctx: CallContext, services: PipelineServices, session: UpstreamSession): unknown {
  const tool = ctx.tool!;
  const runtime = services.upstream(tool.upstream)!;
  const isWrite = tool.kind === 'write';
  if (ctx.timedOut) {
    if (isWrite && ctx.dispatch.sent) {
      return new BusError(
        'outcome_unknown',
        'write_timed_out',
        `The write to ${tool.name} ran past its deadline; the upstream may or may not have done it.`,
      );
    }
    return new BusError('timeout', 'deadline_exceeded', `${tool.name} ran past its deadline.`, {
      retryable: !isWrite || !ctx.dispatch.sent,
      retryAfterMs: 0,
    });
  }
  if (ctx.signal.aborted) {
    return new BusError('timeout', 'cancelled', 'The call was cancelled by the agent.', {
      retryable: !isWrite || !ctx.dispatch.sent,
    });
  }
  if (err instanceof BusError) {
    // Raised by the connection before anything was written (an OAuth upstream that needs a login).
    ctx.dispatch.markNotDone();
    return err;
  }
  if (err instanceof UpstreamLocalError) {
    // Nothing was written and the upstream did nothing wrong: the breaker does not hear of it.
    ctx.dispatch.markNotDone();
    return new BusError('internal', 'request_not_serializable', 'The call could not be encoded for the upstream.');
  }
  if (err instanceof UpstreamUnavailable) {
    // While the connection is restarting, supervision already fails calls fast: only failures of a connection that
    // looked ready count towards opening the breaker.
    if (session.connection.state === 'ready') session.breaker.failure();
    ctx.dispatch.markNotDone();
    return new BusError(
      'upstream_unavailable',
      'upstream_down',
      `Upstream ${tool.upstream} is unavailable; nothing was sent.`,
      {
        retryAfterMs: err.retryAfterMs,
      },
    );
  }
  if (err instanceof UpstreamRateLimited) {
    runtime.queue.pause(err.retryAfterMs);
    ctx.dispatch.markNotDone();
    return new BusError('rate_limited', 'upstream_429', `Upstream ${tool.upstream} asked the bus to slow down.`, {
      retryAfterMs: err.retryAfterMs,
    });
  }
  if (err instanceof UpstreamLost) {
    session.breaker.failure();
    if (isWrite) {
      return new BusError(
        'outcome_unknown',
        'upstream_lost',
        `The connection to ${tool.upstream} was lost after the write was sent.`,
      );
    }
    return new BusError(
      'upstream_unavailable',
      'upstream_lost',
      `The connection to ${tool.upstream} was lost; the read may be retried.`,
      {
        retryAfterMs: 500,
      },
    );
  }
  return err;
}
