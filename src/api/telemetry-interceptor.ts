/**
 * A SERVER span per RPC, with the rpc.* semantic conventions, for all three
 * protocols, continuing the caller's W3C traceparent (read from the request
 * headers: the HTTP instrumentation makes no span for RPC paths, see
 * telemetry.ts registerRpcPaths). Streaming calls (WatchJob) keep their span
 * open until the stream ends, and their handler runs inside it. Every call's
 * duration goes to the `rpc.server.call.duration` histogram.
 */

import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import {
  type Attributes,
  type Context,
  context,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  type SpanOptions,
  SpanStatusCode,
  type TextMapGetter,
  trace,
} from "@opentelemetry/api";
import {
  attrErrorType,
  attrJobId,
  attrRpcConnectErrorCode,
  attrRpcGrpcStatusCode,
  attrRpcMethod,
  attrRpcProtocol,
  attrRpcService,
  attrRpcSystem,
} from "../telemetry/attributes.js";
import { createHistogram, type RecordingHistogram } from "../telemetry/histograms.js";
import { startSpan } from "../telemetry/spans.js";

/** The wire protocol of a call, from its Content-Type. */
export type RpcProtocol = "grpc" | "grpc_web" | "connect";

/**
 * The options of a call's SERVER span: rpc.system (connect_rpc for the
 * Connect protocol, grpc for gRPC and gRPC-Web), service, method and
 * protocol. One object per route or shape serves every call (the SDK copies
 * the attributes it is given).
 */
export function rpcServerSpanOptions(
  protocol: RpcProtocol,
  service: string,
  method: string,
): SpanOptions {
  return {
    kind: SpanKind.SERVER,
    attributes: {
      [attrRpcSystem]: protocol === "connect" ? "connect_rpc" : "grpc",
      [attrRpcService]: service,
      [attrRpcMethod]: method,
      [attrRpcProtocol]: protocol,
    },
  };
}

/** Which protocol a request's Content-Type names (Connect GET requests have none). */
export function protocolOf(contentType: string | null): RpcProtocol {
  const ct = (contentType ?? "").toLowerCase();
  if (ct.startsWith("application/grpc-web")) return "grpc_web";
  if (ct.startsWith("application/grpc")) return "grpc";
  return "connect";
}

const headerGetter: TextMapGetter<Headers> = {
  keys: (h) => {
    const keys: string[] = [];
    h.forEach((_, k) => {
      keys.push(k);
    });
    return keys;
  },
  get: (h, key) => h.get(key) ?? undefined,
};

/**
 * gRPC server spans are errors only for codes that mean the server failed
 * (the semantic conventions' list); a NOT_FOUND or INVALID_ARGUMENT is the
 * caller's problem and leaves the span UNSET.
 */
const serverErrorCodes = new Set<Code>([
  Code.Unknown,
  Code.DeadlineExceeded,
  Code.Unimplemented,
  Code.Internal,
  Code.Unavailable,
  Code.DataLoss,
]);

/**
 * Services whose calls are probes, not work: traced by nobody, like the
 * plain-HTTP /healthz and /readyz (a kubelet calls them every few seconds).
 */
export const probeServices: ReadonlySet<string> = new Set(["grpc.health.v1.Health"]);

/** Span name and start options of one (service, method, protocol): built once, reused by every call. */
interface SpanShape {
  name: string;
  options: SpanOptions;
  /** The duration histogram's attributes by gRPC status code, built on first use. */
  metricAttributes: Map<number, Attributes>;
}

/**
 * Buckets of `rpc.server.call.duration`, in seconds (the semantic
 * conventions' advice, plus the sub-millisecond range a submit lives in).
 */
export const rpcDurationBuckets = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
];

/** The histogram's attributes for a call of `shape` that ended with `code`. */
function metricAttributesOf(shape: SpanShape, code: number): Attributes {
  let attrs = shape.metricAttributes.get(code);
  if (attrs === undefined) {
    const a = shape.options.attributes ?? {};
    attrs = {
      [attrRpcSystem]: a[attrRpcSystem],
      [attrRpcService]: a[attrRpcService],
      [attrRpcMethod]: a[attrRpcMethod],
      [attrRpcGrpcStatusCode]: code,
    };
    shape.metricAttributes.set(code, attrs);
  }
  return attrs;
}

let durationHistogram: RecordingHistogram | undefined;
/** The `rpc.server.call.duration` histogram, made on first use (after the SDK has started). */
function rpcDuration(): RecordingHistogram {
  durationHistogram ??= createHistogram("report-jobs-api", "rpc.server.call.duration", {
    description:
      "Duration of RPCs this server answered (streams: until they end), by method and gRPC status code",
    unit: "s",
    advice: { explicitBucketBoundaries: rpcDurationBuckets },
  });
  return durationHistogram;
}

const routeShapes = new Map<string, SpanShape>();
/**
 * Records the duration of an RPC served without the interceptors (the raw
 * gRPC WatchJob route): `rpc.server.call.duration`, as the interceptor does.
 */
export function recordRpcDuration(
  protocol: RpcProtocol,
  service: string,
  method: string,
  code: number,
  seconds: number,
): void {
  rpcDurationRecorder(protocol, service, method)(code, seconds);
}

/**
 * recordRpcDuration for one method, its attribute sets found once (the lean
 * routes keep one per method).
 */
export function rpcDurationRecorder(
  protocol: RpcProtocol,
  service: string,
  method: string,
): (code: number, seconds: number) => void {
  const key = `${protocol} ${service}/${method}`;
  let shape = routeShapes.get(key);
  if (shape === undefined) {
    shape = {
      name: `${service}/${method}`,
      options: {
        attributes: {
          [attrRpcSystem]: protocol === "connect" ? "connect_rpc" : "grpc",
          [attrRpcService]: service,
          [attrRpcMethod]: method,
        },
      },
      metricAttributes: new Map(),
    };
    routeShapes.set(key, shape);
  }
  const found = shape;
  const histogram = rpcDuration();
  return (code, seconds) => histogram.record(seconds, metricAttributesOf(found, code));
}

/** Creates the tracing interceptor; put it first so it covers the others. */
export function createTelemetryInterceptor(): Interceptor {
  const tracer = trace.getTracer("report-jobs-api");
  // The SDK copies the attributes it is given, so one object per shape serves every call.
  const shapes = new Map<string, SpanShape>();
  const shapeOf = (service: string, method: string, protocol: RpcProtocol): SpanShape => {
    const key = `${protocol} ${service}/${method}`;
    let shape = shapes.get(key);
    if (shape === undefined) {
      shape = {
        name: `${service}/${method}`,
        options: rpcServerSpanOptions(protocol, service, method),
        metricAttributes: new Map(),
      };
      shapes.set(key, shape);
    }
    return shape;
  };
  return (next) => async (req) => {
    if (probeServices.has(req.service.typeName)) return next(req);
    const started = performance.now();
    const protocol = protocolOf(req.header.get("content-type"));
    // A span is active only where an outer instrumentation made one; RPC
    // paths have none (and run with tracing suppressed by the HTTP
    // instrumentation over HTTP/1.1), so the caller's headers are the parent.
    const active = context.active();
    const parent: Context =
      trace.getSpan(active) !== undefined
        ? active
        : propagation.extract(ROOT_CONTEXT, req.header, headerGetter);
    const shape = shapeOf(req.service.typeName, req.method.name, protocol);
    const span = startSpan(tracer, shape.name, shape.options, parent);
    const ctx = trace.setSpan(parent, span);
    const ended = (err: unknown) => {
      const code = endRpcSpan(span, protocol, err);
      rpcDuration().record((performance.now() - started) / 1000, metricAttributesOf(shape, code));
    };
    try {
      const res = await context.with(ctx, () => next(req));
      if (!res.stream) {
        const jobId = (res.message as { jobId?: unknown }).jobId;
        if (typeof jobId === "string" && jobId !== "" && span.isRecording()) {
          span.setAttribute(attrJobId, jobId);
        }
        ended(undefined);
        return res;
      }
      return { ...res, message: traced(res.message, ctx, ended) };
    } catch (err) {
      ended(err);
      throw err;
    }
  };
}

/** Runs each step of a response stream inside the call's context; calls `ended` when the stream ends. */
async function* traced<T>(
  stream: AsyncIterable<T>,
  ctx: Context,
  ended: (err: unknown) => void,
): AsyncGenerator<T> {
  const it = stream[Symbol.asyncIterator]();
  let error: unknown;
  try {
    for (;;) {
      const r = await context.with(ctx, () => it.next());
      if (r.done) return;
      yield r.value;
    }
  } catch (err) {
    error = err;
    throw err;
  } finally {
    // A consumer that stops early (client gone) ends the handler too.
    if (error === undefined) {
      await Promise.resolve(context.with(ctx, () => it.return?.())).catch(() => undefined);
    }
    ended(error);
  }
}

/**
 * Ends an RPC's span with its outcome (`err` undefined: OK), as every traced
 * call does; returns the call's gRPC status code (0: OK).
 */
export function endRpcSpan(span: Span, protocol: RpcProtocol, err: unknown): number {
  if (err === undefined) {
    // Not sampled: the attributes would go nowhere.
    if (span.isRecording()) span.setAttribute(attrRpcGrpcStatusCode, 0); // OK
    span.end();
    return 0;
  }
  const ce = ConnectError.from(err);
  if (!span.isRecording()) {
    span.end();
    return ce.code;
  }
  span.setAttribute(attrRpcGrpcStatusCode, ce.code);
  // Connect's snake_case name of the code: "not_found".
  span.setAttribute(attrErrorType, codeToString(ce.code));
  if (protocol === "connect") span.setAttribute(attrRpcConnectErrorCode, codeToString(ce.code));
  if (serverErrorCodes.has(ce.code)) {
    span.recordException(ce);
    span.setStatus({ code: SpanStatusCode.ERROR, message: ce.rawMessage });
  }
  span.end();
  return ce.code;
}
