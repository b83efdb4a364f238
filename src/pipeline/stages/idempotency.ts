// Stage 5. Idempotency keys: claim the key (one winner on any number of replicas), or serve the stored result, or
// join the running call, or say why not. It stands before lease and rate limit so that a replay touches no upstream,
// holds no lease and spends no rate token. After next() it records the outcome; a failure before dispatch deletes
// the claim so the retry runs normally, a failure after dispatch leaves the key `unknown`.
import { BusError } from '../../errors.js';
import type { BeginWriteOutcome, KeyRecord } from '../../store/contract.js';
import { fingerprint } from '../canonical-json.js';
import type { Stage } from '../compose.js';
import type { CallContext, ToolResult } from '../context.js';
import type { PipelineServices } from '../services.js';
import { renderScopes } from './lease.js';
import { guardStore } from './store-guard.js';

/** Errors after which the upstream certainly did nothing with the call (it was refused before any work). */
const NOT_DONE = new Set(['rate_limited', 'upstream_unavailable', 'conflict', 'store_unavailable']);

export function keyScope(tenant: string, tool: string, key: string): string {
  return `${encodeURIComponent(tenant)}/${tool}/${key}`;
}

function replay(record: KeyRecord, how: 'replayed' | 'joined'): ToolResult {
  const result = JSON.parse(record.result ?? '{}') as ToolResult;
  const meta = (result._meta as Record<string, unknown> | undefined) ?? {};
  result._meta = { ...meta, 'toolbus/replayed': true, ...(how === 'joined' ? { 'toolbus/joined': true } : {}) };
  return result;
}

function unknownError(): BusError {
  return new BusError(
    'outcome_unknown',
    'outcome_unknown',
    'A call with this key was sent to the upstream but its outcome was lost (timeout, connection loss or a crash).',
  );
}

export function idempotency(services: PipelineServices): Stage {
  return async function idempotencyStage(ctx, next) {
    const tool = ctx.tool!;
    if (tool.kind === 'read') {
      // Reads never touch the key store; they are refused while it is down only when the operator asked for that.
      if (!services.storeHealthy() && services.config().readsWhenStoreDown === 'deny') {
        throw new BusError(
          'store_unavailable',
          'store_unreachable',
          'The state store is unreachable and reads are configured to stop too.',
          {
            retryAfterMs: 1000,
          },
        );
      }
      return next();
    }
    // Writes fail closed while the store probe says the store is unusable (unreachable, or its file was removed):
    // a write the store cannot record could run twice.
    if (!services.storeHealthy()) {
      throw new BusError(
        'store_unavailable',
        'store_unreachable',
        'The state store is unusable, so writes are refused.',
        {
          retryAfterMs: 1000,
        },
      );
    }
    if (ctx.key === undefined) return next();
    const cfg = services.config().idempotency;
    const { store } = services;
    const scope = keyScope(ctx.agent.tenant, tool.name, ctx.key);
    const print = fingerprint(ctx.args);
    // Rendered here (a missing argument is a validation error before anything is claimed) so that the claim can
    // take the leases in the same store step; the lease stage reuses them.
    const scopes = tool.lease.length > 0 ? renderScopes(tool.upstream, tool.lease, ctx.args) : [];
    ctx.scopes = scopes;
    const leaseCfg = services.config().leases;
    const queue = services.upstream(tool.upstream)?.queue;
    let fence = 0;
    let dispatched = false;
    // A joined winner that failed before dispatch deleted its claim: claim again, a bounded number of times.
    for (let attempt = 0; ; attempt++) {
      // With a slot free and no rate cap, nothing stands between the claim and the upstream: persist the dispatch
      // in the same step (one transaction or script instead of three).
      const permit = queue?.tryAdmitNow(ctx.agent.id, ctx.agent.weight);
      let out: BeginWriteOutcome;
      try {
        out = await guardStore(() =>
          store.beginWrite({
            scope,
            fingerprint: print,
            owner: ctx.owner,
            claimTtlMs: cfg.claimTtlMs,
            unknownTtlMs: cfg.ttlMs,
            retryUnknown: tool.onUnknown === 'retry',
            leases: scopes,
            leaseTtlMs: leaseCfg.ttlMs,
            dispatch: permit !== undefined,
          }),
        );
      } catch (err) {
        permit?.release();
        throw err;
      }
      if (out.kind === 'claimed') {
        fence = out.fence;
        dispatched = out.dispatched;
        if (!dispatched) permit?.release();
        if (out.grants) ctx.prepared = { grants: out.grants, permit: dispatched ? permit : undefined };
        break;
      }
      permit?.release();
      const record = out.record;
      if (record.fingerprint !== print) {
        ctx.outcome = 'idempotency_mismatch';
        throw new BusError(
          'idempotency_mismatch',
          'key_reused_with_other_arguments',
          `Idempotency key ${JSON.stringify(ctx.key)} was already used for ${tool.name} with other arguments; nothing was run.`,
        );
      }
      if (record.state === 'completed') {
        ctx.outcome = 'replayed';
        services.metrics.replay(tool.name);
        return replay(record, 'replayed');
      }
      if (record.state === 'unknown') throw unknownError();
      const waitMs = Math.min(cfg.joinTimeoutMs, ctx.deadline - Date.now());
      services.metrics.join(tool.name);
      const settled = waitMs > 0 ? await guardStore(() => store.waitForKey(scope, waitMs, ctx.signal)) : record;
      if (settled?.state === 'completed' && settled.fingerprint === print) {
        ctx.outcome = 'joined';
        return replay(settled, 'joined');
      }
      if (settled?.state === 'unknown') throw unknownError();
      if (settled === null && attempt < 3) continue;
      ctx.signal.throwIfAborted();
      throw new BusError('in_progress', 'key_in_progress', `A call with this key is still running for ${tool.name}.`, {
        retryAfterMs: Math.min(cfg.joinTimeoutMs, 1000),
      });
    }

    const renewEvery = Math.max(50, Math.floor(cfg.claimTtlMs / 3));
    const renewal = setInterval(() => {
      store.renewKey(scope, ctx.owner, fence, cfg.claimTtlMs).catch(() => {});
    }, renewEvery);
    renewal.unref();
    if (!dispatched) {
      ctx.dispatch.guardWith(async () => {
        const ok = await guardStore(() => store.markDispatched(scope, ctx.owner, fence, cfg.claimTtlMs));
        if (!ok) {
          // Our claim was taken over (we stalled past its expiry): another call owns the key now; sending would
          // risk the double write the key exists to prevent.
          throw new BusError('in_progress', 'claim_lost', 'This call lost its claim on the key to another call.', {
            retryAfterMs: 500,
          });
        }
      });
    }
    try {
      const result = await next();
      if (result.resultType === 'input_required') {
        // Not a completion (DESIGN.md section 13): the upstream wants input first. The key stays open for the
        // follow-up call, which carries the same key with the answers, and the leases go back until then.
        await settleFailure(ctx, INPUT_REQUIRED, scope, fence, services);
        return result;
      }
      // Recorded before it is answered: an agent that has its answer and retries after a crash gets it replayed
      // (test/integration/crash.test.ts). Answering first was measured 0.1 ms faster per write and broke exactly
      // that under load (docs/performance.md, third pass).
      const stored = await store
        .finishWrite({
          scope,
          owner: ctx.owner,
          fence,
          result: JSON.stringify(result),
          ttlMs: cfg.ttlMs,
          grants: ctx.prepared?.grants ?? [],
        })
        .catch((err: unknown) => {
          services.logger.error({ err, tool: tool.name }, 'could not record a completed key');
          return false;
        });
      if (!stored) services.logger.warn({ tool: tool.name }, 'completed key was not recorded (claim no longer ours)');
      return result;
    } catch (err) {
      await settleFailure(ctx, err, scope, fence, services);
      throw err;
    } finally {
      clearInterval(renewal);
      // The rate stage releases the slot taken with the claim; should the call never reach it, it is released here
      // (a second release does nothing).
      ctx.prepared?.permit?.release();
    }
  };
}

/** Settles a key whose call came back InputRequiredResult: released like a call the upstream refused. */
const INPUT_REQUIRED = Symbol('input required');

async function settleFailure(
  ctx: CallContext,
  err: unknown,
  scope: string,
  fence: number,
  services: PipelineServices,
): Promise<void> {
  const { store } = services;
  const ttl = services.config().idempotency.ttlMs;
  const refusedUpstream = err === INPUT_REQUIRED || (err instanceof BusError && NOT_DONE.has(err.category));
  try {
    if (!ctx.dispatch.sent || refusedUpstream) await store.releaseKey(scope, ctx.owner, fence);
    else await store.markUnknown(scope, ctx.owner, fence, ttl);
  } catch (storeErr) {
    // The store is down: the claim expires by itself (claimed → free, dispatched → unknown), which is what we wanted.
    services.logger.warn({ err: storeErr }, 'could not settle a failed key; it will expire');
  }
  // Leases granted with the claim are ours to release (the lease stage left them): a holder that timed out may
  // still be running upstream, so its entity stays blocked for the lock-delay.
  const grants = ctx.prepared?.grants ?? [];
  if (grants.length > 0) {
    const blockFor = ctx.timedOut ? services.config().leases.lockDelayMs : 0;
    await Promise.all(grants.map((g) => store.releaseLease(g, blockFor).catch(() => {})));
  }
}
