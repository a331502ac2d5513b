/**
 * WatchJob over gRPC on the raw HTTP/2 stream, without connect-node's
 * per-stream pipeline. Measured on a bare server (bench/watch-heap.ts'
 * commit), connect-node holds about 33 KB of heap per open server stream
 * (request and response adapters, an AbortController, a dozen chained async
 * generators), the raw HTTP/2 stream 1.3 KB; an idle watch is mostly that
 * pipeline waiting. 10,000 watchers in one process are the design's promise,
 * so the most common watch (gRPC, protobuf, uncompressed: what
 * internal services and the generated clients send, with or without a
 * deadline) is served here, and
 * everything else (Connect, gRPC-Web, JSON, compressed requests) still
 * goes to connect-node, which stays the reference: `accepts` takes a stream
 * only when this route answers exactly as connect-node would.
 *
 * What the Connect interceptors do for an RPC is done here in the same
 * order: a SERVER span (telemetry-interceptor.ts) from the caller's
 * traceparent, kept open until the stream ends; the request log line when it
 * ends (request-log-interceptor.ts); authentication (auth.ts). Then the
 * request message is read as connect-node reads it, with the same errors
 * (parse-errors.ts' wording), and the handler runs (watch-sessions.ts).
 * The answer is connect-node's: HEADERS (200, application/grpc+proto), one
 * DATA frame per message, trailers with grpc-status and grpc-message (and the
 * error's metadata and details, by connect's own setTrailerStatus).
 */
import type http2 from "node:http2";
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { parseTimeout, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import {
  type Context,
  context,
  defaultTextMapGetter,
  propagation,
  type Span,
  type SpanOptions,
  trace,
} from "@opentelemetry/api";
import type { Logger } from "pino";
import { ReportService, WatchJobRequestSchema } from "../../gen/reports/v1/report_service_pb.js";
import type { Authenticator } from "./auth.js";
import { toConnectError } from "./error-map.js";
import { serverFaults } from "./request-log-interceptor.js";
import type { RawStreamRoute } from "./server.js";
import { endRpcSpan, recordRpcDuration, rpcServerSpanOptions } from "./telemetry-interceptor.js";
import type { WatchOutput, WatchSession, WatchSessions } from "./watch-sessions.js";

/** What the route needs. */
export interface GrpcWatchRouteDeps {
  sessions: WatchSessions;
  auth: Authenticator;
  /** Largest request message accepted, in bytes (connect-node's readMaxBytes). */
  readMaxBytes: number;
  /** Longest grpc-timeout accepted, in ms (connect-node's maxTimeoutMs). */
  maxTimeoutMs: number;
  /** Whether answers carry `Vary: Origin`, as withCors adds it to connect-node's (cors.ts' corsVariesByOrigin). */
  varyOrigin?: boolean;
  logger: Logger;
}

const watchMethod = ReportService.method.watchJob;
const path = `/${ReportService.typeName}/${watchMethod.name}`;
const rpcName = `${ReportService.typeName}/${watchMethod.name}`;
const spanOptions: SpanOptions = rpcServerSpanOptions(
  "grpc",
  ReportService.typeName,
  watchMethod.name,
);
const plainHeaders = { ":status": 200, "content-type": "application/grpc+proto" };
const varyHeaders = { ...plainHeaders, vary: "Origin" };
const okTrailers = { "grpc-status": "0" };
/** What every call of the route shares. */
interface RouteState extends GrpcWatchRouteDeps {
  /**
   * Writes the request log lines. Without the logger's redaction: these lines
   * hold only fields built here (no message, no header), and redaction is
   * about 70% of a line's cost (46 against 15 µs), paid by every watcher of a
   * job when it ends.
   */
  rpcLog: Logger;
  /** The response headers (shared: Node copies them). */
  responseHeaders: http2.OutgoingHttpHeaders;
}

/** Creates the route. */
export function createGrpcWatchRoute(routeDeps: GrpcWatchRouteDeps): RawStreamRoute {
  const tracer = trace.getTracer("report-jobs-api");
  const deps: RouteState = {
    ...routeDeps,
    rpcLog: routeDeps.logger.child({}, { redact: { paths: [] } }),
    responseHeaders: routeDeps.varyOrigin === true ? varyHeaders : plainHeaders,
  };
  return {
    accepts(headers) {
      if (headers[":path"] !== path || headers[":method"] !== "POST") return false;
      // A browser's request (CORS headers): connect-node's, behind withCors.
      if (headers.origin !== undefined) return false;
      const type = headers["content-type"];
      if (type !== "application/grpc" && type !== "application/grpc+proto") return false;
      // Compression: connect-node's.
      const encoding = headers["grpc-encoding"];
      return encoding === undefined || encoding === "identity";
    },
    serve(stream, headers, closed) {
      let parent: Context = context.active();
      if (trace.getSpan(parent) === undefined) {
        parent = propagation.extract(parent, headers, defaultTextMapGetter);
      }
      const span = tracer.startSpan(rpcName, spanOptions, parent);
      const call = new GrpcWatchCall(deps, stream, closed, span, trace.setSpan(parent, span));
      const authorization = headers.authorization;
      const timeout = headers["grpc-timeout"];
      const grpcTimeout = typeof timeout === "string" ? timeout : timeout?.[0];
      context.with(call.ctx, () => call.start(authorization, grpcTimeout));
    },
  };
}

/** One WatchJob call: reads the request, runs the watch, answers. */
class GrpcWatchCall implements WatchOutput {
  private readonly started = performance.now();
  private tenant: string | undefined;
  private session: WatchSession | undefined;
  /** The request body so far (bounded: one message and the next envelope's prefix). */
  private body: Buffer[] | undefined = [];
  private bodyBytes = 0;
  /** The first message's length, once its prefix is here. */
  private messageBytes: number | undefined;
  private headersSent = false;
  private finished = false;
  /** The caller's deadline (grpc-timeout), in performance.now() ms. */
  private deadlineAt: number | undefined;

  constructor(
    private readonly deps: RouteState,
    private readonly stream: http2.ServerHttp2Stream,
    private readonly onClose: () => void,
    private readonly span: Span,
    readonly ctx: Context,
  ) {}

  start(authorization: string | undefined, grpcTimeout: string | undefined): void {
    const { stream } = this;
    // The listeners are shared functions that find the call on the stream:
    // no closure per call.
    (stream as CallStream)[kCall] = this;
    stream.on("error", noop);
    stream.once("close", onClose);
    try {
      this.tenant = this.deps.auth.tenantOf(authorization);
    } catch (err) {
      this.end(toConnectError(err, this.deps.logger));
      return;
    }
    // The caller's deadline runs from now, as connect-node's does; a bad or
    // too long one is answered before the request is read.
    if (grpcTimeout !== undefined) {
      const timeout = parseTimeout(grpcTimeout, this.deps.maxTimeoutMs);
      if (timeout.error !== undefined) {
        this.end(timeout.error);
        return;
      }
      this.deadlineAt = performance.now() + (timeout.timeoutMs ?? 0);
    }
    stream.on("data", onData);
    stream.on("end", onEnd);
  }

  /** @internal */
  received(chunk: Buffer): void {
    const body = this.body;
    if (body === undefined) return;
    body.push(chunk);
    this.bodyBytes += chunk.length;
    if (this.bodyBytes < 5) return;
    if (this.messageBytes === undefined) {
      // The first envelope's prefix, read once (however the body is chunked).
      const head = body.length === 1 ? (body[0] as Buffer) : Buffer.concat(body);
      body.length = 0;
      body.push(head);
      const length = head.readUInt32BE(1);
      if (length > this.deps.readMaxBytes) {
        this.fail(
          new ConnectError(
            `message size ${length} is larger than configured readMaxBytes ${this.deps.readMaxBytes}`,
            Code.ResourceExhausted,
          ),
        );
        return;
      }
      this.messageBytes = length;
    }
    // A second envelope's prefix: connect-node stops there too.
    if (this.bodyBytes >= 5 + this.messageBytes + 5) this.requestEnded();
  }

  /** @internal The whole request is here (or more than one message is): connect-node's checks, in its order. */
  requestEnded(): void {
    const body = this.body;
    if (body === undefined || this.finished) return;
    this.body = undefined;
    this.stream.off("data", onData);
    this.stream.off("end", onEnd);
    const all = body.length === 1 ? (body[0] as Buffer) : Buffer.concat(body);
    const fail = (message: string) => this.fail(new ConnectError(message, Code.InvalidArgument));
    if (all.length === 0) {
      fail("malformed request: missing input message for server-streaming method");
      return;
    }
    const length = all.length >= 5 ? all.readUInt32BE(1) : 0;
    if (all.length < 5 || all.length < 5 + length) {
      fail("protocol error: incomplete envelope");
      return;
    }
    if (((all[0] as number) & 1) === 1) {
      fail(
        "malformed request: a message is flagged compressed but the request names no supported encoding",
      );
      return;
    }
    let request: ReturnType<typeof fromBinary<typeof WatchJobRequestSchema>>;
    try {
      request = fromBinary(WatchJobRequestSchema, all.subarray(5, 5 + length));
    } catch (err) {
      fail(`request message is not valid protobuf: ${err instanceof Error ? err.message : err}`);
      return;
    }
    if (all.length > 5 + length) {
      fail(
        all.length >= 5 + length + 5
          ? "malformed request: received extra input message for server-streaming method"
          : "protocol error: incomplete envelope",
      );
      return;
    }
    try {
      const timeoutMs =
        this.deadlineAt === undefined
          ? undefined
          : Math.max(0, this.deadlineAt - performance.now());
      this.session = this.deps.sessions.open(request, this.tenant as string, this, timeoutMs);
    } catch (err) {
      this.end(toConnectError(err, this.deps.logger));
    }
  }

  write(frame: Uint8Array): boolean {
    const { stream } = this;
    if (this.finished || stream.destroyed || stream.closed) return true;
    if (!this.headersSent) this.sendHeaders();
    if (stream.write(frame)) return true;
    stream.once("drain", onDrain);
    return false;
  }

  end(err: ConnectError | undefined): void {
    if (this.finished) return;
    this.finished = true;
    this.body = undefined;
    // After a terminal event, its other watchers are being written to in this
    // very turn: trailers, span and log line wait until those writes are out
    // (Node flushes HTTP/2 frames before running the next turn's immediates).
    if (err === undefined) endLater(this);
    else this.respondEnd(err);
  }

  /** @internal Sends the trailers (and the headers, if none went yet), ends the span, logs. */
  respondEnd(err: ConnectError | undefined): void {
    const { stream } = this;
    if (!stream.destroyed && !stream.closed) {
      const trailers = err === undefined ? okTrailers : trailersOf(err);
      try {
        if (!this.headersSent) this.sendHeaders();
        stream.once("wantTrailers", () => stream.sendTrailers(trailers));
        stream.end();
      } catch {
        stream.destroy();
      }
    }
    this.done(err);
  }

  private fail(err: ConnectError): void {
    this.session?.close();
    this.end(err);
  }

  private sendHeaders(): void {
    this.headersSent = true;
    this.stream.respond(this.deps.responseHeaders, { waitForTrailers: true });
  }

  /** @internal The stream drained. */
  drained(): void {
    this.session?.resume();
  }

  /** @internal The stream closed: if the call was still on, the caller left (CANCELED, as connect-node says). */
  closed(): void {
    this.onClose();
    if (this.finished) return;
    this.finished = true;
    this.body = undefined;
    this.session?.close();
    this.done(new ConnectError("the caller went away", Code.Canceled));
  }

  /** Ends the span and writes the log line, inside the call's trace context. */
  private done(err: ConnectError | undefined): void {
    context.with(this.ctx, () => {
      const status = endRpcSpan(this.span, "grpc", err);
      recordRpcDuration(
        "grpc",
        watchMethod.parent.typeName,
        watchMethod.name,
        status,
        (performance.now() - this.started) / 1000,
      );
      const logger = this.deps.rpcLog;
      const code = err?.code;
      const level = code !== undefined && serverFaults.has(code) ? "warn" : "info";
      if (!logger.isLevelEnabled(level)) return;
      logger[level](
        {
          rpc: rpcName,
          method: watchMethod.name,
          protocol: "grpc",
          code: code === undefined ? "ok" : codeToString(code),
          duration_ms: Math.round((performance.now() - this.started) * 1000) / 1000,
          tenant: this.tenant ?? "default",
        },
        level === "warn" ? "rpc failed" : "rpc",
      );
    });
  }
}

const kCall = Symbol("grpcWatchCall");
type CallStream = http2.ServerHttp2Stream & { [kCall]?: GrpcWatchCall };

function noop(): void {}
/**
 * Calls whose watch ended normally, ended a batch per turn of the event loop:
 * a job's end ends all its watchers at once (hundreds), and events of other
 * jobs arriving meanwhile must not wait for every one of them.
 */
const endings: GrpcWatchCall[] = [];
let endingsFrom = 0;
const endingsPerTurn = 64;

function endLater(call: GrpcWatchCall): void {
  endings.push(call);
  if (endings.length === 1) setImmediate(endSome);
}

function endSome(): void {
  const until = Math.min(endings.length, endingsFrom + endingsPerTurn);
  while (endingsFrom < until) (endings[endingsFrom++] as GrpcWatchCall).respondEnd(undefined);
  if (endingsFrom < endings.length) {
    setImmediate(endSome);
    return;
  }
  endings.length = 0;
  endingsFrom = 0;
}
function onData(this: CallStream, chunk: Buffer): void {
  this[kCall]?.received(chunk);
}
function onEnd(this: CallStream): void {
  this[kCall]?.requestEnded();
}
function onDrain(this: CallStream): void {
  this[kCall]?.drained();
}
function onClose(this: CallStream): void {
  const call = this[kCall];
  this[kCall] = undefined;
  call?.closed();
}

/** The trailers of an error: connect's own setTrailerStatus, as a header object. */
function trailersOf(err: ConnectError): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {};
  setTrailerStatus(new Headers(), err).forEach((value, key) => {
    out[key] = value;
  });
  return out;
}
