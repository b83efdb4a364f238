// Stage 6. Write leases: writes to the same logical entity serialize, FIFO; reads never wait here. It stands before
// the rate limit so rate tokens are spent only by calls that can go at once. Scopes are rendered from the validated
// arguments, prefixed with the upstream, and taken in sorted order (no deadlock between multi-scope writers).
import { WHOLE_UPSTREAM } from '../../catalog/catalog.js';
import { BusError } from '../../errors.js';
import { type LeaseGrant, LeaseWaitTimeout } from '../../store/contract.js';
import type { Stage } from '../compose.js';
import type { PipelineServices } from '../services.js';
import { guardStore } from './store-guard.js';

const PLACEHOLDER = /\{(\/[^}]*)\}/g;

function pointer(doc: unknown, ptr: string): unknown {
  let cur = doc;
  for (const raw of ptr.split('/').slice(1)) {
    const part = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

/** Renders `ticket:{/ticket_id}` against the arguments; a missing value is a validation error. */
export function renderScopes(upstream: string, templates: readonly string[], args: Record<string, unknown>): string[] {
  const out = new Set<string>();
  for (const t of templates) {
    if (t === WHOLE_UPSTREAM) {
      out.add(upstream);
      continue;
    }
    const scope = t.replace(PLACEHOLDER, (_m, ptr: string) => {
      const v = pointer(args, ptr);
      if (v === undefined || v === null || typeof v === 'object') {
        throw new BusError(
          'validation',
          'lease_scope_argument',
          `Argument ${ptr.slice(1)} is needed to know which entity this write touches (lease ${t}).`,
        );
      }
      return String(v);
    });
    out.add(`${upstream}:${scope}`);
  }
  return [...out].sort();
}

export function lease(services: PipelineServices): Stage {
  return async function leaseStage(ctx, next) {
    const tool = ctx.tool!;
    if (tool.kind === 'read' || tool.lease.length === 0) return next();
    const runtime = services.upstream(tool.upstream);
    const { ttlMs, lockDelayMs } = services.config().leases;
    const scopes = ctx.scopes.length > 0 ? ctx.scopes : renderScopes(tool.upstream, tool.lease, ctx.args);
    ctx.scopes = scopes;
    const prepared = ctx.prepared;
    // Granted with the claim (idempotency stage): nothing to wait for, and the idempotency stage releases them
    // together with completing the key.
    const grants: LeaseGrant[] = prepared ? [...prepared.grants] : [];
    // A lease granted with the claim waited for nothing; it still counts as a lease wait of zero.
    if (prepared) for (const _ of prepared.grants) services.metrics.leaseWait(tool.upstream, 0);
    try {
      for (const scope of prepared ? [] : scopes) {
        const waitMs = Math.min(runtime?.leaseWaitMs ?? 10_000, ctx.deadline - Date.now());
        const began = Date.now();
        try {
          grants.push(
            await guardStore(() =>
              services.store.acquireLease(scope, ctx.owner, { ttlMs, waitMs: Math.max(0, waitMs), signal: ctx.signal }),
            ),
          );
        } catch (err) {
          if (err instanceof LeaseWaitTimeout) {
            throw new BusError(
              'conflict',
              'lease_wait_exceeded',
              `Another agent is writing ${scope}; waited ${Date.now() - began} ms.`,
              {
                retryAfterMs: Math.max(100, err.retryAfterMs),
              },
            );
          }
          throw err;
        } finally {
          services.metrics.leaseWait(tool.upstream, Date.now() - began);
        }
      }
      ctx.grants = grants;
      ctx.fencingToken = grants[0]?.token;
      const renewal = setInterval(
        () => {
          for (const g of grants) services.store.renewLease(g, ttlMs).catch(() => {});
        },
        Math.max(50, Math.floor(ttlMs / 3)),
      );
      renewal.unref();
      try {
        return await next();
      } finally {
        clearInterval(renewal);
      }
    } finally {
      // A holder that timed out may still be running upstream: keep the entity blocked for the lock-delay.
      const blockFor = ctx.timedOut ? lockDelayMs : 0;
      if (!prepared) await Promise.all(grants.map((g) => services.store.releaseLease(g, blockFor).catch(() => {})));
    }
  };
}
