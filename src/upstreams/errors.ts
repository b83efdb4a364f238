// How a request to an upstream can fail, as classes the pipeline maps onto the error table. Messages never carry
// header values, env values or URL credentials: they name the upstream and what happened, nothing else.

/** Nothing was sent: the upstream is not connected, restarting, or refused the connection. */
export class UpstreamUnavailable extends Error {
  constructor(
    readonly upstream: string,
    readonly retryAfterMs: number,
    reason = 'not connected',
  ) {
    super(`upstream ${upstream} is unavailable (${reason})`);
    this.name = 'UpstreamUnavailable';
  }
}

/** The request was sent, but the connection failed before an answer came: its outcome is unknown. */
export class UpstreamLost extends Error {
  constructor(
    readonly upstream: string,
    reason = 'connection lost',
  ) {
    super(`upstream ${upstream}: ${reason} before it answered`);
    this.name = 'UpstreamLost';
  }
}

/** The upstream answered with a JSON-RPC error. */
export class UpstreamRpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown,
  ) {
    super(message);
    this.name = 'UpstreamRpcError';
  }
}

/** The upstream (HTTP) answered 429: slow down for retryAfterMs. Nothing was done. */
export class UpstreamRateLimited extends Error {
  constructor(
    readonly upstream: string,
    readonly retryAfterMs: number,
  ) {
    super(`upstream ${upstream} answered 429`);
    this.name = 'UpstreamRateLimited';
  }
}

/** Retry-After: seconds or an HTTP date → ms (default 1 s). */
export function parseRetryAfter(value: string | null, now = Date.now()): number {
  if (!value) return 1000;
  const secs = Number(value);
  if (Number.isFinite(secs)) return Math.max(0, Math.round(secs * 1000));
  const at = Date.parse(value);
  return Number.isNaN(at) ? 1000 : Math.max(0, at - now);
}

/** The request could not be serialized here: nothing was sent, and it says nothing about the upstream's health. */
export class UpstreamLocalError extends Error {
  constructor(
    readonly upstream: string,
    reason: string,
  ) {
    super(`request to upstream ${upstream} not sent: ${reason}`);
    this.name = 'UpstreamLocalError';
  }
}

/** The upstream answered, but its message was larger than the cap: that call fails alone, the connection stays. */
export class UpstreamResultTooLarge extends Error {
  constructor(
    readonly upstream: string,
    readonly limit: number,
  ) {
    super(`upstream ${upstream} answered with a message larger than ${limit} bytes`);
    this.name = 'UpstreamResultTooLarge';
  }
}

/**
 * The upstream refused the call at the protocol level for a reason the agent must see as such (a 2026-07-28
 * MissingRequiredClientCapability, -32021): passed to the agent as the same JSON-RPC error, not wrapped in a result.
 */
export class UpstreamProtocolRefusal extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown,
  ) {
    super(message);
    this.name = 'UpstreamProtocolRefusal';
  }
}

/** JSON-RPC errors of an upstream that reach the agent as they are. */
export const PASSED_THROUGH_CODES: ReadonlySet<number> = new Set([-32021]);
