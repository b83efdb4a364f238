// The error table of toolbus: every failure that reaches an agent is one of these categories, and the
// compiler keeps the table complete (a new category without a row does not build).
// Local faults are wrapped into a BusError before they cross the wire; nothing else leaks.

export type ErrorCategory =
  | 'validation'
  | 'auth'
  | 'not_found'
  | 'idempotency_mismatch'
  | 'in_progress'
  | 'conflict'
  | 'rate_limited'
  | 'timeout'
  | 'outcome_unknown'
  | 'upstream_unavailable'
  | 'upstream_error'
  | 'store_unavailable'
  | 'internal';

interface CategoryRule {
  /** Whether retrying the same call (same key) can succeed. `timeout` is decided per call (reads yes, writes no). */
  readonly retryable: boolean;
  readonly hint: string;
}

export const ERROR_TABLE: Readonly<Record<ErrorCategory, CategoryRule>> = Object.freeze({
  validation: { retryable: false, hint: 'Fix the arguments named in the message and call again.' },
  auth: { retryable: false, hint: 'Not allowed: stop and escalate to a human; do not retry.' },
  not_found: { retryable: false, hint: 'No such tool or resource: list the tools again and pick one that exists.' },
  idempotency_mismatch: {
    retryable: false,
    hint: 'This idempotency key was used with other arguments: use a new key for a new operation.',
  },
  in_progress: {
    retryable: true,
    hint: 'The same key is running elsewhere: retry after retryAfterMs with the same key.',
  },
  conflict: {
    retryable: true,
    hint: 'Another agent is writing this entity: back off retryAfterMs and retry with the same key.',
  },
  rate_limited: {
    retryable: true,
    hint: 'The upstream budget is exhausted: retry after retryAfterMs with the same key.',
  },
  timeout: {
    retryable: true,
    hint: 'The call ran past its deadline: a read may be retried; a write becomes outcome_unknown.',
  },
  outcome_unknown: {
    retryable: false,
    hint: 'The call was sent but its outcome was lost: verify with a read tool, then retry with a new key if needed.',
  },
  upstream_unavailable: {
    retryable: true,
    hint: 'The upstream is down or restarting and nothing was sent: retry after retryAfterMs.',
  },
  upstream_error: {
    retryable: false,
    hint: "The tool itself reported an error: read its message; retrying the same arguments won't help.",
  },
  store_unavailable: {
    retryable: true,
    hint: 'The state store is unreachable, so writes are refused rather than risked: retry after retryAfterMs.',
  },
  internal: { retryable: true, hint: 'A bug in toolbus: retry once, then report it.' },
});

export interface WireError {
  category: ErrorCategory;
  code: string;
  message: string;
  hint: string;
  retryable: boolean;
  retryAfterMs?: number;
}

export interface BusErrorOptions {
  retryAfterMs?: number;
  retryable?: boolean;
  hint?: string;
  cause?: unknown;
}

/** A failure meant for the agent. `code` is a stable, more specific string than the category. */
export class BusError extends Error {
  readonly category: ErrorCategory;
  readonly code: string;
  readonly retryable: boolean;
  readonly hint: string;
  readonly retryAfterMs: number | undefined;

  constructor(category: ErrorCategory, code: string, message: string, options: BusErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BusError';
    this.category = category;
    this.code = code;
    this.retryable = options.retryable ?? ERROR_TABLE[category].retryable;
    this.hint = options.hint ?? ERROR_TABLE[category].hint;
    this.retryAfterMs = options.retryAfterMs === undefined ? undefined : Math.max(0, Math.ceil(options.retryAfterMs));
  }

  toWire(): WireError {
    const wire: WireError = {
      category: this.category,
      code: this.code,
      message: this.message,
      hint: this.hint,
      retryable: this.retryable,
    };
    if (this.retryAfterMs !== undefined) wire.retryAfterMs = this.retryAfterMs;
    return wire;
  }
}

/** Anything thrown that is not a BusError is a bug: it becomes `internal`, and its message stays local. */
export function toBusError(err: unknown): BusError {
  if (err instanceof BusError) return err;
  return new BusError('internal', 'internal_error', 'toolbus hit an unexpected error; it has been logged.', {
    cause: err,
  });
}

/** The MCP tool result an agent receives for a failure (DESIGN.md section 6 wire format). */
export function errorResult(err: BusError): {
  content: { type: 'text'; text: string }[];
  isError: true;
  _meta: Record<string, unknown>;
} {
  const wire = err.toWire();
  return {
    content: [{ type: 'text', text: JSON.stringify({ 'toolbus/error': wire }) }],
    isError: true,
    _meta: { 'toolbus/error': wire },
  };
}
