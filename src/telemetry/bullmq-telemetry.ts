/**
 * BullMQ's OpenTelemetry add-on (bullmq-otel), for the `telemetry` option of
 * our Queues and Workers, and the producer span of the enqueues that do not go
 * through Queue.add (the submitter runs BullMQ's add script inside its own).
 */
import {
  type Context,
  context,
  INVALID_SPAN_CONTEXT,
  type Link,
  propagation,
  type Span,
  SpanKind,
  type SpanOptions,
  SpanStatusCode,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import type { Telemetry } from "bullmq";
import { BullMQOTelSpan, BullMQOtel } from "bullmq-otel";
import {
  attrMessagingDestination,
  attrMessagingOperationType,
  attrMessagingSystem,
  bullmqAttr,
} from "./attributes.js";
import { spanContextValid, spansUnrecorded, startSpan } from "./spans.js";

/** The instrumentation scope name of BullMQ spans (ours and bullmq-otel's). */
export const bullTracerName = "bullmq";

/**
 * The `telemetry` option for BullMQ Queues and Workers. Internal spans that
 * would start a trace of their own (a worker's idle fetch, the stalled-job
 * check, lock renewals) are not recorded: they would bury the job traces
 * under a root trace every few seconds. Spans inside a trace (the consumer
 * span of a job, its fetch) are kept.
 */
export function createBullTelemetry(): Telemetry {
  const otel = new BullMQOtel(bullTracerName);
  // The tracer bullmq-otel's own wraps (same name, no version): its spans
  // start through startSpan, which makes an unrecorded one (a job's consumer
  // span and its "complete" span, when nothing is exported) without the
  // SDK's work.
  const tracer = trace.getTracer(bullTracerName);
  return {
    contextManager: otel.contextManager,
    tracer: {
      startSpan(name, options, ctx) {
        const parent = ctx ?? context.active();
        if (options?.kind === SpanKind.INTERNAL && trace.getSpan(parent) === undefined) {
          return new BullMQOTelSpan(trace.wrapSpanContext(INVALID_SPAN_CONTEXT));
        }
        return new BullMQOTelSpan(startSpan(tracer, name, options ?? {}, parent));
      },
    },
  } as Telemetry;
}

/**
 * The `telemetry` option for BullMQ Workers: createBullTelemetry(), or none
 * when this process records no span. Then a Worker skips BullMQ's tracing
 * altogether (for each job: a consumer span, its context entered, attribute
 * objects, the job's propagation metadata parsed, a span per completion, and
 * a failed attempt's retry span written as the job's metadata), none of which
 * could be recorded; the report worker makes the one span whose ids reach
 * its log lines, the consumer span, itself (consumerContext). A retried
 * attempt then continues the enqueue's span instead of the failed attempt's
 * retry span: the same trace.
 */
export function workerBullTelemetry(): Telemetry | undefined {
  return spansUnrecorded() ? undefined : createBullTelemetry();
}

let consumerTracer: Tracer | undefined;

/**
 * The context of a job's attempt with BullMQ's consumer span on it, as a
 * Worker with createBullTelemetry() makes it (`process <queue>`, CONSUMER,
 * continuing the trace in the job's propagation metadata): for Workers
 * without BullMQ's telemetry (workerBullTelemetry). Unparsable metadata
 * starts no trace of its own: the span then has the active context's parent.
 */
export function consumerContext(queueName: string, metadata: string | undefined): Context {
  consumerTracer ??= trace.getTracer(bullTracerName);
  const active = context.active();
  let parent = active;
  if (metadata !== undefined && metadata !== "") {
    try {
      parent = propagation.extract(active, JSON.parse(metadata));
    } catch {
      parent = active;
    }
  }
  const span = startSpan(consumerTracer, `process ${queueName}`, consumerOptions, parent);
  return trace.setSpan(parent, span);
}

const consumerOptions: SpanOptions = { kind: SpanKind.CONSUMER };

/** W3C trace context of a span, as BullMQ carries it in `opts.telemetry.metadata` (JSON). */
export interface EnqueueTrace {
  /** What goes in the job's `opts.telemetry.metadata`. */
  metadata: string;
  /** The producer span's traceparent, kept in the job record (links, trace ids of events); "" when not tracing. */
  traceparent: string;
  /** The producer span; the caller adds attributes, the helper ends it. */
  span: Span;
}

let enqueueTracer: Tracer | undefined;
const enqueueShapes = new Map<string, { name: string; options: SpanOptions }>();

/** The producer span's name and options for a queue and job name; one object each, reused (the SDK copies attributes). */
function enqueueShape(queueName: string, jobName: string): { name: string; options: SpanOptions } {
  const name = `add ${queueName}.${jobName}`;
  let shape = enqueueShapes.get(name);
  if (shape === undefined) {
    shape = {
      name,
      options: {
        kind: SpanKind.PRODUCER,
        attributes: {
          [bullmqAttr.queueName]: queueName,
          [bullmqAttr.queueOperation]: "add",
          [bullmqAttr.jobName]: jobName,
          [attrMessagingSystem]: "bullmq",
          [attrMessagingDestination]: queueName,
          [attrMessagingOperationType]: "send",
        },
      },
    };
    enqueueShapes.set(name, shape);
  }
  return shape;
}

/**
 * Runs `fn` inside a PRODUCER span named as BullMQ names its own
 * (`add <queue>.<job name>`), handing it the propagation metadata to put in
 * the job's options so the Worker's consumer span continues this trace.
 * `links` point at earlier traces of the same job (RetryJob).
 *
 * A span that is not recorded (sampled out, or no SDK) is not entered: no
 * span under it can be recorded either, and nothing in `fn` reads the active
 * span, so `fn` runs without a context switch (each costs the async context
 * manager a store per promise) and the span, whose end does nothing, ends at
 * once. Its ids still go in the metadata and the traceparent.
 */
export function traceEnqueue<T>(
  queueName: string,
  jobName: string,
  links: Link[],
  fn: (t: EnqueueTrace) => Promise<T>,
): Promise<T> {
  enqueueTracer ??= trace.getTracer(bullTracerName);
  const shape = enqueueShape(queueName, jobName);
  // As tracer.startActiveSpan starts it.
  const parent = context.active();
  const span = startSpan(
    enqueueTracer,
    shape.name,
    links.length === 0 ? shape.options : { ...shape.options, links },
    parent,
  );
  const ctx = trace.setSpan(parent, span);
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  const sc = span.spanContext();
  // No SDK (OTEL_SDK_DISABLED): no trace, and no all-zero ids in records and events.
  const traceparent = !spanContextValid(sc)
    ? ""
    : (carrier.traceparent ?? `00-${sc.traceId}-${sc.spanId}-0${(sc.traceFlags & 1).toString(16)}`);
  const t: EnqueueTrace = { metadata: JSON.stringify(carrier), traceparent, span };
  if (!span.isRecording()) {
    span.end();
    return fn(t);
  }
  return context.with(ctx, async () => {
    try {
      return await fn(t);
    } catch (err) {
      span.recordException(err as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
      throw err;
    } finally {
      span.end();
    }
  });
}
