// The one error an agent sees when an upstream's OAuth grant is gone (revoked, expired refresh token, never logged
// in). Category upstream_unavailable, not auth: the agent is allowed to call the tool, nothing was sent, and the same
// call (same idempotency key) succeeds once an operator has logged in again. `auth` would tell the agent it is not
// permitted and must give up, which is false. The hint names the command the operator runs.
import { BusError } from '../../errors.js';

/** Agents are told to come back after this long; a login takes a human. */
export const NEEDS_LOGIN_RETRY_AFTER_MS = 30_000;

export function needsLoginError(upstream: string): BusError {
  return new BusError(
    'upstream_unavailable',
    'needs_login',
    `Upstream ${upstream} needs an operator to log in again; nothing was sent.`,
    {
      retryAfterMs: NEEDS_LOGIN_RETRY_AFTER_MS,
      hint: `An operator must run \`toolbus login ${upstream}\`; retry after retryAfterMs with the same key, or escalate.`,
    },
  );
}
