/**
 * What the interceptor chain (api-part.ts) does for a call, done by the
 * lean routes themselves (lean-unary.ts: Connect on HTTP/1.1;
 * grpc-unary-route.ts: gRPC on the raw HTTP/2 stream), in the chain's
 * order, inside the call's span context: authentication (auth.ts), the
 * handler (report-service.ts' ReportCalls, its errors mapped as its
 * handlers map them), then the span's end and rpc.server.call.duration
 * (telemetry-interceptor.ts) and the request log line
 * (request-log-interceptor.ts). A new interceptor must be mirrored here.
 */
import { create, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import {
  type Context,
  context,
  defaultTextMapGetter,
  propagation,
  ROOT_CONTEXT,
  type Span,
  type SpanOptions,
  trace,
} from "@opentelemetry/api";
import type { Logger } from "pino";
import { ReportService } from "../../gen/reports/v1/report_service_pb.js";
import { attrJobId } from "../telemetry/attributes.js";
import { startSpan } from "../telemetry/spans.js";
import type { Authenticator } from "./auth.js";
import { toConnectError } from "./error-map.js";
import { serverFaults } from "./request-log-interceptor.js";
import { endRpcSpan, type RpcProtocol, rpcDurationRecorder } from "./telemetry-interceptor.js";

/** What a lean route's call carries for this work. */
export interface LeanCall {
  /** performance.now() at the call's arrival. */
  readonly started: number;
  /** The caller's tenant, once authenticated ("default" before). */
  tenant: string;
  /** The call's SERVER span, and the context it is active in. */
  span: Span;
  ctx: Context;
}

/** A method of a lean route: its names, its answer's schema and its handler. */
export interface LeanMethod<X, C> {
  /** "reports.v1.ReportService/SubmitReport" */
  readonly name: string;
  /** "SubmitReport" */
  readonly method: string;
  readonly outputSchema: DescMessage;
  /** Calls the handler; `x` is what the route passes (its request or headers). */
  readonly invoke: (message: never, tenant: string, x: X, call: C) => Promise<unknown>;
}

/** Runs calls of one protocol's lean route. */
export interface LeanCallRunner {
  /**
   * Starts the call's SERVER span: the child of the active span, else of the
   * caller's traceparent in `headers` (as the telemetry interceptor does).
   */
  begin(
    call: LeanCall,
    method: { readonly name: string; readonly spanOptions: SpanOptions },
    headers: Record<string, string | string[] | undefined>,
  ): void;
  /**
   * Authenticates, calls the method and builds its answer, inside the call's
   * span context; ends the span, records the duration and logs the line.
   * @throws ConnectError the call's error (span, metric and log line done)
   */
  run<X, C extends LeanCall>(
    call: C,
    method: LeanMethod<X, C>,
    authorization: string | null | undefined,
    message: unknown,
    x: X,
  ): Promise<MessageShape<DescMessage>>;
}

/** Creates the runner of `protocol`'s lean route. */
export function createLeanCallRunner(deps: {
  protocol: RpcProtocol;
  auth: Authenticator;
  logger: Logger;
}): LeanCallRunner {
  const { protocol, auth, logger } = deps;
  const tracer = trace.getTracer("report-jobs-api");
  // As the request-log interceptor's: fixed, safe fields, no redaction.
  const rpcLog = logger.child({}, { redact: [] });
  // Per method: a child logger with the line's fixed fields bound (pino
  // serializes bindings once, not on every line; the line has the same
  // fields) and the duration histogram's recorder.
  const perMethod = new Map<
    string,
    { log: Logger; recordDuration: (code: number, seconds: number) => void }
  >();
  const methodOf = (method: { name: string; method: string }) => {
    let m = perMethod.get(method.name);
    if (m === undefined) {
      m = {
        log: rpcLog.child({ rpc: method.name, method: method.method, protocol }),
        recordDuration: rpcDurationRecorder(protocol, ReportService.typeName, method.method),
      };
      perMethod.set(method.name, m);
    }
    return m;
  };

  const finish = (
    call: LeanCall,
    method: { name: string; method: string },
    err: ConnectError | undefined,
    jobId: string | undefined,
  ): void => {
    const { span } = call;
    if (err === undefined && jobId !== undefined && jobId !== "" && span.isRecording()) {
      span.setAttribute(attrJobId, jobId);
    }
    const status = endRpcSpan(span, protocol, err);
    const m = methodOf(method);
    m.recordDuration(status, (performance.now() - call.started) / 1000);
    const code = err?.code;
    const level = code !== undefined && serverFaults.has(code) ? "warn" : "info";
    if (rpcLog.isLevelEnabled(level)) {
      const codeName = code === undefined ? "ok" : codeToString(code);
      const durationMs = Math.round((performance.now() - call.started) * 1000) / 1000;
      // Two literals, not a spread of an optional part: one object per line.
      m.log[level](
        jobId
          ? { code: codeName, duration_ms: durationMs, tenant: call.tenant, job_id: jobId }
          : { code: codeName, duration_ms: durationMs, tenant: call.tenant },
        level === "warn" ? "rpc failed" : "rpc",
      );
    }
  };

  const answerOf = async <X, C extends LeanCall>(
    call: C,
    method: LeanMethod<X, C>,
    authorization: string | null | undefined,
    message: unknown,
    x: X,
  ): Promise<MessageShape<DescMessage>> => {
    let answer: MessageShape<DescMessage>;
    try {
      let tenant: string;
      try {
        tenant = auth.tenantOf(authorization);
      } catch (err) {
        throw toConnectError(err, logger);
      }
      call.tenant = tenant;
      let init: unknown;
      try {
        init = await method.invoke(message as never, tenant, x, call);
      } catch (err) {
        // As report-service.ts' handlers do.
        throw toConnectError(err, logger);
      }
      answer = create(method.outputSchema, init as never);
    } catch (err) {
      finish(call, method, ConnectError.from(err), undefined);
      throw err;
    }
    const jobId = (answer as { jobId?: unknown }).jobId;
    finish(call, method, undefined, typeof jobId === "string" ? jobId : undefined);
    return answer;
  };

  return {
    begin(call, method, headers) {
      let parent: Context = context.active();
      if (trace.getSpan(parent) === undefined) {
        parent = propagation.extract(ROOT_CONTEXT, headers, defaultTextMapGetter);
      }
      call.span = startSpan(tracer, method.name, method.spanOptions, parent);
      call.ctx = trace.setSpan(parent, call.span);
    },
    async run(call, method, authorization, message, x) {
      try {
        return await context.with(
          call.ctx,
          answerOf,
          undefined,
          call,
          method,
          authorization,
          message,
          x,
        );
      } catch (e) {
        throw e instanceof ConnectError
          ? e
          : new ConnectError("internal error", Code.Internal, undefined, undefined, e);
      }
    },
  };
}
