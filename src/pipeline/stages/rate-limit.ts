// Stage 7. The upstream's rate cap and concurrency cap, with per-agent fair queuing (deficit round robin by weight).
// Calls that cannot go now wait instead of failing, up to queueWaitMs or their deadline.
import type { Stage } from '../compose.js';
import type { PipelineServices } from '../services.js';

export function rateLimit(services: PipelineServices): Stage {
  return async function rateLimitStage(ctx, next) {
    const runtime = services.upstream(ctx.tool!.upstream);
    if (!runtime) return next();
    // A write whose claim, leases and dispatch went in one store step took its slot then (see idempotency).
    const permit =
      ctx.prepared?.permit ??
      (await runtime.queue.admit({
        agentId: ctx.agent.id,
        weight: ctx.agent.weight,
        deadline: ctx.deadline,
        signal: ctx.signal,
      }));
    try {
      return await next();
    } finally {
      permit.release();
    }
  };
}
