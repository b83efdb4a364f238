// The OpenTelemetry SDK behind toolbus's call spans (tracing.ts says when it is loaded): spans made by
// `@opentelemetry/sdk-trace`, batched, and exported over OTLP/HTTP, protobuf by default or JSON. The exporter reads
// OTEL_EXPORTER_OTLP_* itself (endpoint, headers, timeout, compression, certificates); this module reads
// OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL, OTEL_TRACES_SAMPLER (+_ARG) and OTEL_BSP_*, and the
// resource takes OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type Tracer as ApiTracer,
  type Context,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  trace,
} from '@opentelemetry/api';
import {
  getNumberFromEnv,
  getStringFromEnv,
  setGlobalErrorHandler,
  W3CTraceContextPropagator,
} from '@opentelemetry/core';
import { OTLPTraceExporter as JsonExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as ProtobufExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  type BatchSpanProcessorOptions,
  ParentBasedSampler,
  type Sampler,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import type { AttrValue, CallSpan, Tracer, TracingSetup } from './tracing.js';

const propagator = new W3CTraceContextPropagator();
type Carrier = Record<string, string>;
const getter = {
  get: (c: Carrier, key: string) => c[key],
  keys: (c: Carrier) => Object.keys(c),
};
const setter = {
  set: (c: Carrier, key: string, value: string) => {
    c[key] = value;
  },
};

class OtelCallSpan implements CallSpan {
  private upstreamSpan: Span | undefined;

  constructor(
    private readonly tracer: ApiTracer,
    private readonly span: Span,
    /** The context the call span lives in: its children's parent. */
    private readonly within: Context,
  ) {}

  get sampled(): boolean {
    return (this.span.spanContext().traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED;
  }

  get traceId(): string {
    return this.span.spanContext().traceId;
  }

  startUpstream(startMs: number): { traceparent: string; tracestate?: string } {
    this.upstreamSpan = this.tracer.startSpan(
      'upstream call',
      { kind: SpanKind.CLIENT, startTime: startMs },
      this.within,
    );
    const carrier: Carrier = {};
    propagator.inject(trace.setSpan(ROOT_CONTEXT, this.upstreamSpan), carrier, setter);
    return {
      traceparent: carrier.traceparent ?? '',
      ...(carrier.tracestate ? { tracestate: carrier.tracestate } : {}),
    };
  }

  waited(name: 'lease wait' | 'queue wait', startMs: number, endMs: number): void {
    this.tracer
      .startSpan(name, { kind: SpanKind.INTERNAL, startTime: startMs }, this.within)
      .end(Math.max(startMs, endMs));
  }

  end(endMs: number, attributes: Record<string, AttrValue | undefined>, sent: boolean, error?: string): void {
    for (const [k, v] of Object.entries(attributes)) if (v !== undefined) this.span.setAttribute(k, v);
    if (this.upstreamSpan && sent) {
      const upstream = attributes['toolbus.upstream'];
      if (upstream !== undefined) this.upstreamSpan.setAttribute('toolbus.upstream', upstream);
      if (error) this.upstreamSpan.setStatus({ code: SpanStatusCode.ERROR, message: error });
      this.upstreamSpan.end(endMs);
    }
    if (error) this.span.setStatus({ code: SpanStatusCode.ERROR, message: error });
    this.span.end(endMs);
  }
}

class OtelTracer implements Tracer {
  private readonly tracer: ApiTracer;

  constructor(
    private readonly provider: TracerProvider,
    version: string,
  ) {
    this.tracer = provider.getTracer('toolbus', version);
  }

  startCall(name: string, startMs: number, traceparent?: unknown, tracestate?: unknown): CallSpan {
    // The propagator parses and checks the agent's values (an invalid traceparent starts a trace of our own).
    const carrier: Carrier = {};
    if (typeof traceparent === 'string' && traceparent.length <= 512) {
      carrier.traceparent = traceparent;
      if (typeof tracestate === 'string' && tracestate.length <= 512) carrier.tracestate = tracestate;
    }
    const parent = propagator.extract(ROOT_CONTEXT, carrier, getter);
    const span = this.tracer.startSpan(name, { kind: SpanKind.SERVER, startTime: startMs }, parent);
    return new OtelCallSpan(this.tracer, span, trace.setSpan(parent, span));
  }

  /** Sends what is left, for 2 s at most: a collector that is down must not hold the bus's stop. */
  shutdown(): Promise<void> {
    return Promise.race([this.provider.shutdown(), sleep(2000, undefined, { ref: false })]);
  }
}

const PROTOCOLS = ['http/protobuf', 'http/json'] as const;

/** OTEL_TRACES_SAMPLER and its argument, as the specification names them; the default is parentbased_always_on. */
function samplerFromEnv(): { sampler: Sampler; problem?: string } {
  const name = (getStringFromEnv('OTEL_TRACES_SAMPLER') ?? 'parentbased_always_on').toLowerCase();
  const arg = getNumberFromEnv('OTEL_TRACES_SAMPLER_ARG');
  const ratio = new TraceIdRatioBasedSampler(arg === undefined ? 1 : Math.min(1, Math.max(0, arg)));
  const root: Record<string, Sampler> = {
    always_on: new AlwaysOnSampler(),
    always_off: new AlwaysOffSampler(),
    traceidratio: ratio,
  };
  const parentBased = name.startsWith('parentbased_');
  const own = root[parentBased ? name.slice('parentbased_'.length) : name];
  if (!own) return { sampler: new ParentBasedSampler({ root: root.always_on! }), problem: `unknown sampler ${name}` };
  return { sampler: parentBased ? new ParentBasedSampler({ root: own }) : own };
}

/**
 * Builds the tracer the OTEL_* variables ask for (tracing.ts has checked that an endpoint is set and tracing not
 * turned off), or says why it cannot. Export failures go to `onExportError` (the SDK's global error handler).
 */
export function startOtelTracing(version: string, onExportError: (err: Error) => void): TracingSetup {
  const exporterName = (getStringFromEnv('OTEL_TRACES_EXPORTER')?.trim() || 'otlp').toLowerCase();
  const traces = getStringFromEnv('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT');
  const base = getStringFromEnv('OTEL_EXPORTER_OTLP_ENDPOINT');
  if (exporterName !== 'otlp') return { problem: `OTEL_TRACES_EXPORTER=${exporterName} is not supported (only otlp)` };
  const protocol =
    getStringFromEnv('OTEL_EXPORTER_OTLP_TRACES_PROTOCOL')?.trim() ||
    getStringFromEnv('OTEL_EXPORTER_OTLP_PROTOCOL')?.trim() ||
    'http/protobuf';
  if (!(PROTOCOLS as readonly string[]).includes(protocol))
    return {
      problem: `OTEL_EXPORTER_OTLP_PROTOCOL=${protocol} is not supported; set it to http/protobuf or http/json`,
    };
  let endpoint: string;
  try {
    const url = new URL(traces ?? `${base!.replace(/\/+$/, '')}/v1/traces`);
    endpoint = `${url.protocol}//${url.host}${url.pathname}`;
  } catch {
    return { problem: 'the OTLP endpoint is not a URL' };
  }
  setGlobalErrorHandler((err) => onExportError(err instanceof Error ? err : new Error(String(err))));
  const exporter = protocol === 'http/json' ? new JsonExporter() : new ProtobufExporter();
  const { sampler, problem } = samplerFromEnv();
  const resource = defaultResource()
    .merge(resourceFromAttributes({ 'service.name': 'toolbus', 'service.version': version }))
    .merge(detectResources({ detectors: [envDetector] }));
  const options: BatchSpanProcessorOptions = { exporter };
  const settings = [
    ['OTEL_BSP_SCHEDULE_DELAY', 'scheduledDelayMillis'],
    ['OTEL_BSP_MAX_QUEUE_SIZE', 'maxQueueSize'],
    ['OTEL_BSP_MAX_EXPORT_BATCH_SIZE', 'maxExportBatchSize'],
    ['OTEL_BSP_EXPORT_TIMEOUT', 'exportTimeoutMillis'],
  ] as const;
  for (const [name, key] of settings) {
    const n = getNumberFromEnv(name);
    if (n !== undefined && n > 0) options[key] = n;
  }
  const processor = new BatchSpanProcessor(options);
  const provider = new TracerProvider({ resource, sampler, spanProcessors: [processor] });
  return { tracer: new OtelTracer(provider, version), endpoint, protocol, ...(problem ? { problem } : {}) };
}
