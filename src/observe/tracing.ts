// OpenTelemetry traces without the SDK: a span per tool call with child spans for the queue wait, the lease wait and
// the upstream call, exported in batches as OTLP/HTTP JSON (the documented protobuf-JSON mapping: hex ids, nanosecond
// times as strings). W3C `traceparent` from the agent continues the agent's trace, and the upstream is handed a
// `traceparent` naming the upstream-call span, so its own spans hang below ours.
//
// Off unless an OTLP endpoint is configured through the standard variables: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used
// as is) or OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces). Also read: OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER (none
// turns it off), OTEL_EXPORTER_OTLP_(TRACES_)HEADERS, OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL (only http/json),
// OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER (+_ARG: always_on, always_off, traceidratio and
// their parentbased_ forms), OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE.
import { randomBytes } from 'node:crypto';

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$/;

export interface TraceParent {
  traceId: string;
  spanId: string;
  /** The trace-flags byte; bit 0 is "sampled". */
  flags: number;
}

/** W3C Trace Context: version 00 exactly, a future version leniently; all-zero ids are invalid. */
export function parseTraceparent(value: unknown): TraceParent | undefined {
  if (typeof value !== 'string' || value.length > 512) return undefined;
  const m = TRACEPARENT.exec(value.trim());
  if (!m) return undefined;
  const [, version, traceId, spanId, flags] = m as unknown as [string, string, string, string, string];
  if (version === 'ff' || (version === '00' && value.trim().length !== 55)) return undefined;
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return undefined;
  return { traceId, spanId, flags: Number.parseInt(flags, 16) };
}

export function formatTraceparent(traceId: string, spanId: string, flags: number): string {
  return `00-${traceId}-${spanId}-${(flags & 0xff).toString(16).padStart(2, '0')}`;
}

/** Milliseconds since the epoch with sub-millisecond precision. */
export function preciseNow(): number {
  return performance.timeOrigin + performance.now();
}

function nanos(ms: number): string {
  return (BigInt(Math.floor(ms)) * 1_000_000n + BigInt(Math.round((ms % 1) * 1e6))).toString();
}

type AttrValue = string | number | boolean;

function otlpAttributes(attrs: Record<string, AttrValue | undefined>): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const [key, v] of Object.entries(attrs)) {
    if (v === undefined) continue;
    if (typeof v === 'string') out.push({ key, value: { stringValue: v } });
    else if (typeof v === 'boolean') out.push({ key, value: { boolValue: v } });
    else if (Number.isInteger(v)) out.push({ key, value: { intValue: String(v) } });
    else out.push({ key, value: { doubleValue: v } });
  }
  return out;
}

export const SpanKind = { INTERNAL: 1, SERVER: 2, CLIENT: 3 } as const;

interface FinishedSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  traceState?: string;
  name: string;
  kind: number;
  startMs: number;
  endMs: number;
  attributes: Record<string, AttrValue | undefined>;
  error?: string;
}

interface SpanOrigin {
  traceId: string;
  parentSpanId?: string;
  flags: number;
}

function newSpanId(): string {
  return randomBytes(8).toString('hex');
}

/** One tool call's trace: the call span and its children. Children are recorded when the call ends. */
export class CallSpan {
  readonly traceId: string;
  readonly spanId = newSpanId();
  /** The span id the upstream call will have, fixed early so the upstream's `traceparent` can name it. */
  readonly upstreamSpanId = newSpanId();
  readonly parentSpanId: string | undefined;
  readonly flags: number;

  constructor(
    private readonly tracer: Tracer,
    readonly name: string,
    readonly startMs: number,
    origin: SpanOrigin,
    readonly traceState: string | undefined,
  ) {
    this.traceId = origin.traceId;
    this.parentSpanId = origin.parentSpanId;
    this.flags = origin.flags;
  }

  get sampled(): boolean {
    return (this.flags & 1) === 1;
  }

  /** What the upstream gets as `_meta.traceparent`: our upstream-call span as its parent. */
  upstreamTraceparent(): string {
    return formatTraceparent(this.traceId, this.upstreamSpanId, this.flags);
  }

  end(
    endMs: number,
    attributes: Record<string, AttrValue | undefined>,
    children: { name: string; kind: number; startMs: number; endMs: number; upstream?: boolean }[],
    error?: string,
  ): void {
    if (!this.sampled) return;
    const base = { traceId: this.traceId, ...(this.traceState ? { traceState: this.traceState } : {}) };
    this.tracer.enqueue({
      ...base,
      spanId: this.spanId,
      ...(this.parentSpanId ? { parentSpanId: this.parentSpanId } : {}),
      name: this.name,
      kind: SpanKind.SERVER,
      startMs: this.startMs,
      endMs,
      attributes,
      ...(error ? { error } : {}),
    });
    for (const c of children) {
      this.tracer.enqueue({
        ...base,
        spanId: c.upstream ? this.upstreamSpanId : newSpanId(),
        parentSpanId: this.spanId,
        name: c.name,
        kind: c.kind,
        startMs: c.startMs,
        endMs: Math.max(c.startMs, c.endMs),
        attributes: c.upstream ? { 'toolbus.upstream': attributes['toolbus.upstream'] } : {},
        ...(c.upstream && error ? { error } : {}),
      });
    }
  }
}

export interface TracerOptions {
  endpoint: string;
  headers: Record<string, string>;
  serviceName: string;
  resource: Record<string, string>;
  sampler: { kind: 'always_on' | 'always_off' | 'ratio'; ratio: number; parentBased: boolean };
  scheduleDelayMs: number;
  maxQueue: number;
  maxBatch: number;
  version: string;
  onExportError?: (err: Error) => void;
}

function parseKeyValues(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (text ?? '').split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    try {
      out[decodeURIComponent(part.slice(0, eq).trim())] = decodeURIComponent(part.slice(eq + 1).trim());
    } catch {
      // a malformed pair is skipped, as the specification asks
    }
  }
  return out;
}

function positive(text: string | undefined, fallback: number): number {
  const n = Number(text);
  return Number.isFinite(n) && n > 0 ? n : fallback;
}

/** Reads the standard OTEL_* variables; undefined when tracing is off (the default) or asks for what we lack. */
export function tracerOptionsFromEnv(
  env: NodeJS.ProcessEnv,
  version: string,
): { options?: TracerOptions; problem?: string } {
  if ((env.OTEL_SDK_DISABLED ?? '').toLowerCase() === 'true') return {};
  const exporter = (env.OTEL_TRACES_EXPORTER ?? 'otlp').toLowerCase();
  if (exporter === 'none') return {};
  const traces = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  const base = env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (!traces && !base) return {};
  if (exporter !== 'otlp') return { problem: `OTEL_TRACES_EXPORTER=${exporter} is not supported (only otlp)` };
  const protocol = env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/json';
  if (protocol !== 'http/json')
    return { problem: `OTEL_EXPORTER_OTLP_PROTOCOL=${protocol} is not supported; set it to http/json` };
  const endpoint = traces ?? `${base!.replace(/\/+$/, '')}/v1/traces`;
  const resource = parseKeyValues(env.OTEL_RESOURCE_ATTRIBUTES);
  const samplerName = (env.OTEL_TRACES_SAMPLER ?? 'parentbased_always_on').toLowerCase();
  const parentBased = samplerName.startsWith('parentbased_');
  const rest = parentBased ? samplerName.slice('parentbased_'.length) : samplerName;
  const ratio = Math.min(1, Math.max(0, Number(env.OTEL_TRACES_SAMPLER_ARG ?? 1) || 0));
  return {
    options: {
      endpoint,
      headers: {
        ...parseKeyValues(env.OTEL_EXPORTER_OTLP_HEADERS),
        ...parseKeyValues(env.OTEL_EXPORTER_OTLP_TRACES_HEADERS),
      },
      serviceName: env.OTEL_SERVICE_NAME ?? resource['service.name'] ?? 'toolbus',
      resource,
      sampler: {
        kind: rest === 'always_off' ? 'always_off' : rest === 'traceidratio' ? 'ratio' : 'always_on',
        ratio,
        parentBased,
      },
      scheduleDelayMs: positive(env.OTEL_BSP_SCHEDULE_DELAY, 5000),
      maxQueue: positive(env.OTEL_BSP_MAX_QUEUE_SIZE, 2048),
      maxBatch: positive(env.OTEL_BSP_MAX_EXPORT_BATCH_SIZE, 512),
      version,
    },
  };
}

/** Batches finished spans and posts them to the collector; a full queue drops the newest spans, never blocks a call. */
export class Tracer {
  private queue: FinishedSpan[] = [];
  private readonly timer: NodeJS.Timeout;
  private exporting: Promise<void> = Promise.resolve();
  dropped = 0;

  constructor(private readonly opts: TracerOptions) {
    this.timer = setInterval(() => void this.flush(), opts.scheduleDelayMs).unref();
  }

  /** Starts a call's trace, continuing the agent's when it sent a valid traceparent. */
  startCall(name: string, startMs: number, traceparent?: unknown, tracestate?: unknown): CallSpan {
    const parent = parseTraceparent(traceparent);
    const state = parent && typeof tracestate === 'string' && tracestate.length <= 512 ? tracestate : undefined;
    return new CallSpan(this, name, startMs, this.decide(parent), state);
  }

  /** The sampling decision, carried in the trace flags (bit 0: sampled) the call span and the upstream inherit. */
  private decide(parent: TraceParent | undefined): SpanOrigin {
    const traceId = parent?.traceId ?? randomBytes(16).toString('hex');
    const base = parent ? { traceId, parentSpanId: parent.spanId } : { traceId };
    const { sampler } = this.opts;
    if (parent && sampler.parentBased) return { ...base, flags: parent.flags };
    let sampled = sampler.kind === 'always_on';
    // A ratio decided from the trace id, so every service with the same ratio keeps the same traces.
    if (sampler.kind === 'ratio') sampled = Number.parseInt(traceId.slice(16, 30), 16) / 2 ** 56 < sampler.ratio;
    const flags = parent ? (sampled ? parent.flags | 1 : parent.flags & ~1) : sampled ? 1 : 0;
    return { ...base, flags };
  }

  enqueue(span: FinishedSpan): void {
    if (this.queue.length >= this.opts.maxQueue) {
      this.dropped++;
      return;
    }
    this.queue.push(span);
    if (this.queue.length >= this.opts.maxBatch) void this.flush();
  }

  private body(spans: FinishedSpan[]): string {
    return JSON.stringify({
      resourceSpans: [
        {
          resource: {
            attributes: otlpAttributes({
              ...this.opts.resource,
              'service.name': this.opts.serviceName,
              'service.version': this.opts.version,
              'telemetry.sdk.name': 'toolbus',
              'telemetry.sdk.language': 'nodejs',
            }),
          },
          scopeSpans: [
            {
              scope: { name: 'toolbus', version: this.opts.version },
              spans: spans.map((s) => ({
                traceId: s.traceId,
                spanId: s.spanId,
                ...(s.parentSpanId ? { parentSpanId: s.parentSpanId } : {}),
                ...(s.traceState ? { traceState: s.traceState } : {}),
                name: s.name,
                kind: s.kind,
                startTimeUnixNano: nanos(s.startMs),
                endTimeUnixNano: nanos(s.endMs),
                attributes: otlpAttributes(s.attributes),
                status: s.error ? { code: 2, message: s.error } : { code: 0 },
              })),
            },
          ],
        },
      ],
    });
  }

  /** Sends what is queued, one batch at a time; a failed export is dropped (and reported), never retried forever. */
  flush(): Promise<void> {
    this.exporting = this.exporting.then(async () => {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, this.opts.maxBatch);
        try {
          const res = await fetch(this.opts.endpoint, {
            method: 'POST',
            headers: { 'content-type': 'application/json', ...this.opts.headers },
            body: this.body(batch),
            signal: AbortSignal.timeout(10_000),
          });
          await res.body?.cancel();
          if (!res.ok) throw new Error(`collector answered HTTP ${res.status}`);
        } catch (err) {
          this.opts.onExportError?.(err as Error);
          return;
        }
      }
    });
    return this.exporting;
  }

  async shutdown(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
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
