/**
 * A SERVER span per RPC, with the rpc.* semantic conventions, for all three
 * protocols. Over HTTP/1.1 the HTTP instrumentation's span is active and
 * becomes the parent; over HTTP/2 (which that instrumentation does not see)
 * the caller's W3C traceparent is read from the request headers. Streaming
 * calls (WatchJob) keep their span open until the stream ends, and their
 * handler runs inside it.
 */

import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import {
  type Context,
  context,
  propagation,
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

/** The wire protocol of a call, from its Content-Type. */
export type RpcProtocol = "grpc" | "grpc_web" | "connect";

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
        options: {
          kind: SpanKind.SERVER,
          attributes: {
            [attrRpcSystem]: protocol === "connect" ? "connect_rpc" : "grpc",
            [attrRpcService]: service,
            [attrRpcMethod]: method,
            [attrRpcProtocol]: protocol,
          },
        },
      };
      shapes.set(key, shape);
    }
    return shape;
  };
  return (next) => async (req) => {
    if (probeServices.has(req.service.typeName)) return next(req);
    const protocol = protocolOf(req.header.get("content-type"));
    let parent: Context = context.active();
    if (trace.getSpan(parent) === undefined) {
      parent = propagation.extract(parent, req.header, headerGetter);
    }
    const shape = shapeOf(req.service.typeName, req.method.name, protocol);
    const span = tracer.startSpan(shape.name, shape.options, parent);
    const ctx = trace.setSpan(parent, span);
    try {
      const res = await context.with(ctx, () => next(req));
      if (!res.stream) {
        const jobId = (res.message as { jobId?: unknown }).jobId;
        if (typeof jobId === "string" && jobId !== "" && span.isRecording()) {
          span.setAttribute(attrJobId, jobId);
        }
        endRpcSpan(span, protocol, undefined);
        return res;
      }
      return { ...res, message: traced(res.message, span, ctx, protocol) };
    } catch (err) {
      endRpcSpan(span, protocol, err);
      throw err;
    }
  };
}

/** Runs each step of a response stream inside the call's context; ends the span with the stream. */
async function* traced<T>(
  stream: AsyncIterable<T>,
  span: Span,
  ctx: Context,
  protocol: RpcProtocol,
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
    endRpcSpan(span, protocol, error);
  }
}

/** Ends an RPC's span with its outcome (`err` undefined: OK), as every traced call does. */
export function endRpcSpan(span: Span, protocol: RpcProtocol, err: unknown): void {
  if (!span.isRecording()) {
    // Not sampled: the attributes would go nowhere.
    span.end();
    return;
  }
  if (err === undefined) {
    span.setAttribute(attrRpcGrpcStatusCode, 0); // OK
    span.end();
    return;
  }
  const ce = ConnectError.from(err);
  span.setAttribute(attrRpcGrpcStatusCode, ce.code);
  // Connect's snake_case name of the code: "not_found".
  span.setAttribute(attrErrorType, codeToString(ce.code));
  if (protocol === "connect") span.setAttribute(attrRpcConnectErrorCode, codeToString(ce.code));
  if (serverErrorCodes.has(ce.code)) {
    span.recordException(ce);
    span.setStatus({ code: SpanStatusCode.ERROR, message: ce.rawMessage });
  }
  span.end();
}
