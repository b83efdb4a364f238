// Tracing's light half, loaded always: W3C trace context from agents (parsed, and carried from HTTP headers into
// `_meta`), precise clocks, and the shape of a call's span. The OpenTelemetry SDK that makes and exports the spans
// (otel-sdk.ts) is loaded only when an OTLP endpoint is configured, so a bus without tracing does not carry it.
//
// Off unless an OTLP endpoint is configured through the standard variables: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used
// as is) or OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces); OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn it off.

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$/;

export interface TraceParent {
  traceId: string;
  spanId: string;
  /** The trace-flags byte; bit 0 is "sampled". */
  traceFlags: number;
}

/**
 * W3C Trace Context, checked before an agent's value is carried anywhere: version 00 exactly, a future version
 * leniently; all-zero ids are invalid. (The SDK's propagator parses it again when tracing is on.)
 */
export function parseTraceparent(value: unknown): TraceParent | undefined {
  if (typeof value !== 'string' || value.length > 512) return undefined;
  const m = TRACEPARENT.exec(value.trim());
  if (!m) return undefined;
  const [, version, traceId, spanId, flags] = m as unknown as [string, string, string, string, string];
  if (version === 'ff' || (version === '00' && value.trim().length !== 55)) return undefined;
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return undefined;
  return { traceId, spanId, traceFlags: Number.parseInt(flags, 16) };
}

/** The values of an OTEL_EXPORTER_OTLP_*HEADERS variable (`key=value,...`, percent-encoded), to treat as secrets. */
export function headerValues(text: string | undefined): string[] {
  const out: string[] = [];
  for (const pair of (text ?? '').split(',')) {
    const eq = pair.indexOf('=');
    if (eq <= 0) continue;
    const raw = pair.slice(eq + 1).trim();
    let value = raw;
    try {
      value = decodeURIComponent(raw);
    } catch {
      // kept as written
    }
    if (value) out.push(value, raw);
  }
  return out;
}

/** Milliseconds since the epoch with sub-millisecond precision. */
export function preciseNow(): number {
  return performance.timeOrigin + performance.now();
}

export type AttrValue = string | number | boolean;

/** One tool call's trace: the call span, its wait spans, and the span of its upstream call. */
export interface CallSpan {
  readonly sampled: boolean;
  readonly traceId: string;
  /**
   * The call reaches its upstream: the upstream-call span starts now, and the upstream is handed it as its parent
   * (`traceparent`, and the trace's `tracestate`).
   */
  startUpstream(startMs: number): { traceparent: string; tracestate?: string };
  /** A wait the call went through (for its leases, or for the upstream's budget), recorded whole. */
  waited(name: 'lease wait' | 'queue wait', startMs: number, endMs: number): void;
  /**
   * The call ended. `sent`: whether its request reached the upstream (an upstream-call span that never sent anything
   * is not exported); `error`: the failure's category.
   */
  end(endMs: number, attributes: Record<string, AttrValue | undefined>, sent: boolean, error?: string): void;
}

/** Starts the spans of tool calls. */
export interface Tracer {
  /** Starts a call's trace, continuing the agent's when it sent a valid traceparent (and its tracestate). */
  startCall(name: string, startMs: number, traceparent?: unknown, tracestate?: unknown): CallSpan;
  shutdown(): Promise<void>;
}

export interface TracingSetup {
  tracer?: Tracer;
  /** Where spans go (scheme, host and path only) and how, for the start-up log line. */
  endpoint?: string;
  protocol?: string;
  /** Why tracing stays off, or what was ignored. */
  problem?: string;
}

/**
 * Tracing as the standard OTEL_* variables (process.env, where the SDK reads them too) ask: nothing when it is off
 * (the default), else the SDK-backed tracer, loaded now. Export failures go to `onExportError`.
 */
export async function startTracing(version: string, onExportError: (err: Error) => void): Promise<TracingSetup> {
  const env = process.env;
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return {};
  if ((env.OTEL_TRACES_EXPORTER?.trim() || 'otlp').toLowerCase() === 'none') return {};
  if (!env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim() && !env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim()) return {};
  const { startOtelTracing } = await import('./otel-sdk.js');
  return startOtelTracing(version, onExportError);
}

/**
 * An agent may send its trace context as HTTP headers instead of in `_meta`: each tools/call of the request that has
 * no `_meta.traceparent` of its own gets the (valid) header values there, where the runner and the upstream read it.
 */
export function carryTraceHeaders(
  messages: readonly { method?: unknown; params?: Record<string, unknown> }[],
  traceparent: unknown,
  tracestate: unknown,
): void {
  if (typeof traceparent !== 'string' || !parseTraceparent(traceparent)) return;
  for (const m of messages) {
    const params = m.params;
    if (m.method !== 'tools/call' || params === null || typeof params !== 'object' || Array.isArray(params)) continue;
    const meta = params._meta;
    if (meta !== undefined && (meta === null || typeof meta !== 'object' || Array.isArray(meta))) continue;
    if ((meta as Record<string, unknown> | undefined)?.traceparent !== undefined) continue;
    params._meta = {
      ...(meta as Record<string, unknown> | undefined),
      traceparent,
      ...(typeof tracestate === 'string' && tracestate.length <= 512 ? { tracestate } : {}),
    };
  }
}
