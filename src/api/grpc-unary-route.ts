/**
 * The unary methods of ReportService over gRPC on the raw HTTP/2 stream
 * (SubmitReport and GetJob, the two the API serves most, and CancelJob,
 * ListJobs, RetryJob), without connect-node's HTTP/2 compatibility objects
 * (Http2ServerRequest/Response), its universal request (a URL, Fetch
 * `Headers`, an async-iterable body), the handler context (two linked
 * AbortControllers, three more `Headers`, a deadline timer) and the chain
 * of async generators that reads, parses, invokes and serializes a call.
 * Profiled under bench:compare, that machinery cost a gRPC submit 2.6
 * times the API CPU of a Connect JSON submit on lean-unary.ts.
 *
 * Only the plainest requests are taken, what generated gRPC clients send
 * (grpc-js, connect's gRPC transport): POST, `application/grpc` or
 * `application/grpc+proto`, no Origin (a browser's: CORS stays
 * connect's), an uncompressed request (no grpc-encoding, or identity), with
 * or without grpc-timeout and grpc-accept-encoding. The answer is
 * compressed as connect compresses it (grpc-accept-encoding, from
 * compressMinBytes). gRPC-Web, JSON and compressed requests go to connect,
 * which stays the reference: grpc-unary-route.test.ts compares the answers
 * of both (headers, message bytes, trailers).
 *
 * What connect does is done here in its order: the request body is read
 * and its one message parsed with connect's own serialization (envelope,
 * size and parse errors are answered before any interceptor runs, as
 * connect answers them: no span, no log line), then what the interceptors
 * do (api-part.ts): the SERVER span from the caller's traceparent and the
 * rpc.server.call.duration metric (telemetry-interceptor.ts), the request
 * log line (request-log-interceptor.ts), authentication (auth.ts), then the
 * handler (report-service.ts' ReportCalls) with a signal that aborts as
 * connect's handler context's does: at the caller's deadline (grpc-timeout,
 * from the stream's arrival), when the stream closes early, at shutdown.
 * The answer is connect-node's: HEADERS (200, application/grpc+proto, the
 * negotiated grpc-encoding), one DATA frame with the enveloped message, and
 * trailers (grpc-status 0, or connect's setTrailerStatus of the error).
 */
import type http2 from "node:http2";
import type { DescMessage, DescMethodUnary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  compressionNegotiate,
  createMethodSerializationLookup,
  encodeEnvelope,
  envelopeCompress,
  type Serialization,
  validateReadWriteMaxBytes,
} from "@connectrpc/connect/protocol";
import { parseTimeout, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import { type Context, ROOT_CONTEXT, type Span, type SpanOptions, trace } from "@opentelemetry/api";
import type { Logger } from "pino";
import {
  CancelJobResponseSchema,
  GetJobResponseSchema,
  ListJobsResponseSchema,
  ReportService,
  RetryJobResponseSchema,
  SubmitReportResponseSchema,
} from "../../gen/reports/v1/report_service_pb.js";
import type { CallerSignal } from "../queue/caller-signal.js";
import type { Authenticator } from "./auth.js";
import { getJobResponseFrame, submitReportResponseFrame } from "./job-binary.js";
import { createLeanCallRunner } from "./lean-call.js";
import { asInvalidArgumentIfParseError } from "./parse-errors.js";
import type { ReportCalls } from "./report-service.js";
import type { RawStreamRoute } from "./server.js";
import { rpcServerSpanOptions } from "./telemetry-interceptor.js";

/** What the route needs. */
export interface GrpcUnaryRouteDeps {
  calls: ReportCalls;
  auth: Authenticator;
  /** Largest request message accepted, in bytes (connect's readMaxBytes). */
  readMaxBytes: number;
  /** Longest grpc-timeout accepted, in ms (connect's maxTimeoutMs). */
  maxTimeoutMs: number;
  /** Aborts the signal of calls in flight, as connect's handler context does. */
  shutdownSignal: AbortSignal;
  /** Whether answers carry `Vary: Origin`, as withCors adds it to connect's (cors.ts' corsVariesByOrigin). */
  varyOrigin: boolean;
  logger: Logger;
}

/** Calls this process served here (tests and diagnostics: which path answered). */
export const grpcUnaryServed = { count: 0 };

type Headers2 = http2.IncomingHttpHeaders;
type Compression = NonNullable<ReturnType<typeof compressionNegotiate>["response"]>;
/** Calls a method; `call` is its signal (CallerSignal), or `call.signal()` an AbortSignal for waits. */
type Invoke = (message: never, tenant: string, headers: Headers2, call: Call) => Promise<unknown>;

interface Route {
  name: string;
  method: string;
  input: Serialization<unknown>;
  output: Serialization<unknown>;
  outputSchema: DescMessage;
  /** The answer's uncompressed gRPC frame without reflection (job-binary.ts); undefined: serialize. */
  frame: ((out: never) => Buffer | undefined) | undefined;
  spanOptions: SpanOptions;
  invoke: Invoke;
}

/** The reason a call's signal aborts with when its stream closes before the answer (rpc-node-handler.ts'). */
const closedReason = new ConnectError("the request was closed", Code.Canceled);

/** HTTP/2 reset codes that mean a failure, as rpc-node-handler.ts maps them (others: the client cancelled). */
const resetCodes: Record<number, Code> = {
  1: Code.Internal,
  2: Code.Internal,
  3: Code.Internal,
  4: Code.Internal,
  6: Code.Internal,
  7: Code.Unavailable,
  8: Code.Canceled,
  9: Code.Internal,
  10: Code.Internal,
  11: Code.ResourceExhausted,
  12: Code.PermissionDenied,
  13: Code.PermissionDenied,
};

const okTrailers = { "grpc-status": "0" };
const contentTypeProto = "application/grpc+proto";

/** Creates the route. */
export function createGrpcUnaryRoute(deps: GrpcUnaryRouteDeps): RawStreamRoute {
  const calls = createLeanCallRunner({ protocol: "grpc", auth: deps.auth, logger: deps.logger });
  // The limits connect's handler serializes with (its defaults for the rest).
  const limits = validateReadWriteMaxBytes(deps.readMaxBytes, undefined, undefined);
  // connect-node's default, as rpc-node-handler.ts configures the router.
  const acceptCompression = [compressionGzip, compressionBrotli];
  // The response headers without compression (shared: Node copies them).
  const plainHeaders: http2.OutgoingHttpHeaders = deps.varyOrigin
    ? { ":status": 200, "content-type": contentTypeProto, vary: "Origin" }
    : { ":status": 200, "content-type": contentTypeProto };
  const routes = new Map<string, Route>();
  const add = (
    method: DescMethodUnary,
    outputSchema: DescMessage,
    invoke: Invoke,
    frame?: (out: never) => Buffer | undefined,
  ) => {
    const serialization = createMethodSerializationLookup(method, undefined, undefined, limits);
    routes.set(`/${ReportService.typeName}/${method.name}`, {
      name: `${ReportService.typeName}/${method.name}`,
      method: method.name,
      input: serialization.getI(true) as Serialization<unknown>,
      output: serialization.getO(true) as Serialization<unknown>,
      outputSchema,
      frame,
      spanOptions: rpcServerSpanOptions("grpc", ReportService.typeName, method.name),
      invoke,
    });
  };
  // Submit and GetJob only check their signal before they send: the call is
  // their signal. The others wait (CancelJob for a running job to stop,
  // RetryJob for a worker to let go) and get an AbortSignal.
  add(
    ReportService.method.submitReport,
    SubmitReportResponseSchema,
    (m, t, h, call) => deps.calls.submitReport(m, t, headerOf(h, "idempotency-key"), call),
    submitReportResponseFrame,
  );
  add(
    ReportService.method.getJob,
    GetJobResponseSchema,
    (m, t, _h, call) => deps.calls.getJob(m, t, call),
    getJobResponseFrame,
  );
  add(ReportService.method.cancelJob, CancelJobResponseSchema, (m, t, _h, call) =>
    deps.calls.cancelJob(m, t, call.signal()),
  );
  add(ReportService.method.listJobs, ListJobsResponseSchema, (m, t, _h, call) =>
    deps.calls.listJobs(m, t, call.signal()),
  );
  add(ReportService.method.retryJob, RetryJobResponseSchema, (m, t, _h, call) =>
    deps.calls.retryJob(m, t, call.signal()),
  );

  /** The interceptors' work and the handler, inside the call's span; answers. */
  const run = async (
    call: Call,
    message: unknown,
    compression: Compression | null,
  ): Promise<void> => {
    const { headers, route } = call;
    let out: unknown;
    let error: ConnectError | undefined;
    try {
      out = await calls.run(call, route, headerOf(headers, "authorization"), message, headers);
    } catch (e) {
      error = ConnectError.from(e);
    }
    if (error !== undefined) {
      call.fail(error);
      return;
    }
    // The frame written directly (job-binary.ts: the serialization's bytes)
    // when it is within the write limit the serialization checks; else the
    // serialization, which throws past it.
    const direct = route.frame?.(out as never);
    let frame: Uint8Array;
    if (direct !== undefined && direct.byteLength - 5 <= limits.writeMaxBytes) {
      if (compression === null || direct.byteLength - 5 < limits.compressMinBytes) {
        call.answer(direct, okTrailers);
        return;
      }
      frame = direct.subarray(5);
    } else {
      try {
        frame = route.output.serialize(out);
      } catch (e) {
        call.fail(ConnectError.from(e, Code.Internal));
        return;
      }
    }
    // Under compressMinBytes connect sends the message uncompressed: no await for it.
    if (compression !== null && frame.byteLength >= limits.compressMinBytes) {
      const env = await envelopeCompress(
        { flags: 0, data: frame },
        compression,
        limits.compressMinBytes,
      );
      frame = encodeEnvelope(env.flags, env.data);
    } else {
      frame = envelope(frame);
    }
    call.answer(frame, okTrailers);
  };

  // The response compression and headers for each grpc-accept-encoding seen
  // (a client sends the same one on every call); bounded against odd callers.
  const byAccept = new Map<string | null, Negotiated>();
  const negotiated = (accept: string | null): Negotiated => {
    let n = byAccept.get(accept);
    if (n === undefined) {
      const compression =
        accept === null
          ? null
          : compressionNegotiate(acceptCompression, null, accept, "grpc-accept-encoding").response;
      n = {
        compression,
        headers:
          compression === null
            ? plainHeaders
            : { ...plainHeaders, "grpc-encoding": compression.name },
      };
      if (byAccept.size < 64) byAccept.set(accept, n);
    }
    return n;
  };
  const state: RouteState = {
    readMaxBytes: deps.readMaxBytes,
    shutdownSignal: deps.shutdownSignal,
    live: new Set(),
    start(call, message) {
      calls.begin(call, call.route, call.headers);
      run(call, message, call.compression).catch((err: unknown) => {
        call.fail(ConnectError.from(err, Code.Internal));
      });
    },
  };
  // Shutdown aborts the signals of the calls in flight: one listener for all
  // of them, not an EventTarget listener added and removed by every call.
  deps.shutdownSignal.addEventListener("abort", () => {
    for (const call of state.live) call.abort(deps.shutdownSignal.reason);
  });

  return {
    accepts(headers) {
      const route = routes.get(headers[":path"] as string);
      if (route === undefined || headers[":method"] !== "POST") return false;
      // A browser's request (CORS): connect's, behind withCors.
      if (headers.origin !== undefined) return false;
      const type = headers["content-type"];
      if (type !== "application/grpc" && type !== "application/grpc+proto") return false;
      // No authority: connect answers it (as a plain 400).
      if (headers[":authority"] === undefined && headers.host === undefined) return false;
      // Compressed requests: connect's.
      const encoding = headers["grpc-encoding"];
      return encoding === undefined || encoding === "identity";
    },
    serve(stream, headers, closed) {
      const route = routes.get(headers[":path"] as string) as Route;
      grpcUnaryServed.count++;
      const { compression, headers: responseHeaders } = negotiated(
        headerOf(headers, "grpc-accept-encoding"),
      );
      const call = new Call(state, stream, headers, route, compression, responseHeaders, closed);
      // The caller's deadline runs from now, as connect's handler context's
      // does; a bad or too long one is answered before anything else.
      const timeout = parseTimeout(headerOf(headers, "grpc-timeout"), deps.maxTimeoutMs);
      if (timeout.error !== undefined) {
        call.fail(timeout.error);
        return;
      }
      if (timeout.timeoutMs !== undefined) call.deadline(timeout.timeoutMs);
      call.read();
    },
  };
}

/** A request header's value (repeats joined, as Fetch Headers join them). */
function headerOf(headers: Headers2, name: string): string | null {
  const v = headers[name];
  if (v === undefined) return null;
  return typeof v === "string" ? v : v.join(", ");
}

/** A message in a gRPC envelope, uncompressed. */
export function envelope(message: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + message.byteLength);
  frame[0] = 0;
  frame.writeUInt32BE(message.byteLength, 1);
  frame.set(message, 5);
  return frame;
}

/** The trailers of an error: connect's setTrailerStatus, after parse-errors.ts' rewrite. */
function trailersOf(err: ConnectError): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {};
  setTrailerStatus(new Headers(), asInvalidArgumentIfParseError(err)).forEach((value, key) => {
    out[key] = value;
  });
  return out;
}

const noSpan = trace.wrapSpanContext({ traceId: "", spanId: "", traceFlags: 0 });

/** A grpc-accept-encoding's answer: the response compression and headers. */
interface Negotiated {
  compression: Compression | null;
  headers: http2.OutgoingHttpHeaders;
}

/** What the calls of a route share. */
interface RouteState {
  readMaxBytes: number;
  shutdownSignal: AbortSignal;
  /** Calls whose signal is live (aborted at shutdown). */
  live: Set<Call>;
  /** Runs a call whose message has been read. */
  start(call: Call, message: unknown): void;
}

const kCall = Symbol("grpcUnaryCall");
type CallStream = http2.ServerHttp2Stream & { [kCall]?: Call };

/**
 * One call in flight, and its signal (CallerSignal, as lean-unary.ts'
 * calls): aborted at the caller's deadline, when the stream closes before
 * the answer, or at shutdown, with the reasons connect's handler context
 * aborts with. It is read when checked, so a call that only checks (submit,
 * GetJob) costs no AbortController, listener or timer; `signal()` makes a
 * real AbortSignal for the calls that wait. Its stream's listeners are
 * shared functions that find the call on the stream: no closures per call.
 */
class Call implements CallerSignal {
  readonly started = performance.now();
  tenant = "default";
  span: Span = noSpan;
  ctx: Context = ROOT_CONTEXT;
  private controller: AbortController | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  /** The caller's deadline, in performance.now() ms. */
  private deadlineAt: number | undefined;
  private abortReason: unknown;
  private answered = false;
  private body: Buffer[] = [];
  private bodyBytes = 0;
  private trailers: http2.OutgoingHttpHeaders = okTrailers;

  constructor(
    private readonly state: RouteState,
    readonly stream: http2.ServerHttp2Stream,
    readonly headers: Headers2,
    readonly route: Route,
    readonly compression: Compression | null,
    private readonly responseHeaders: http2.OutgoingHttpHeaders,
    private readonly released: () => void,
  ) {
    (stream as CallStream)[kCall] = this;
    stream.on("error", noop);
    stream.once("close", onClose);
  }

  /** Sets the caller's deadline, `timeoutMs` from the stream's arrival. */
  deadline(timeoutMs: number): void {
    this.deadlineAt = this.started + timeoutMs;
  }

  get aborted(): boolean {
    return this.reason !== undefined;
  }

  /** Why the call aborted; undefined while it runs. Once aborted it stays so; after the answer it no longer changes. */
  get reason(): unknown {
    if (this.abortReason === undefined && !this.answered) {
      if (this.state.shutdownSignal.aborted) this.abortReason = this.state.shutdownSignal.reason;
      else if (this.deadlineAt !== undefined && performance.now() >= this.deadlineAt) {
        this.abortReason = deadlineError();
      }
    }
    return this.abortReason;
  }

  throwIfAborted(): void {
    const reason = this.reason;
    if (reason !== undefined) throw reason;
  }

  /** @internal The deadline passed (the timer of a call with an AbortSignal). */
  expired(): void {
    this.deadlineTimer = undefined;
    this.abort(deadlineError());
  }

  /**
   * Reads the request body, then parses its one message as connect does, or
   * answers its error. Like connect, reads no further than a second message
   * (an error either way), and refuses an envelope announcing more than
   * readMaxBytes as soon as its prefix is here.
   */
  read(): void {
    this.stream.on("data", onData);
    this.stream.once("end", onEnd);
  }

  /** @internal A chunk of the body. */
  received(chunk: Buffer): void {
    this.body.push(chunk);
    this.bodyBytes += chunk.length;
    const scanned = this.scan(this.state.readMaxBytes);
    if (scanned === "more") return;
    this.stopReading();
    if (scanned === "two") this.requestEnded();
    else this.fail(scanned);
  }

  private stopReading(): void {
    this.stream.off("data", onData);
    this.stream.off("end", onEnd);
    // The rest of the body is discarded (its end clears the server's request timeout).
    this.stream.resume();
  }

  /** @internal The body is here (or all connect would read of it). */
  requestEnded(): void {
    const all = this.body.length === 1 ? (this.body[0] as Buffer) : Buffer.concat(this.body);
    this.body = [];
    let message: unknown;
    try {
      message = this.parse(all);
    } catch (e) {
      this.fail(ConnectError.from(e, Code.Internal));
      return;
    }
    this.state.start(this, message);
  }

  /**
   * What the body so far holds: an envelope announcing more than
   * readMaxBytes (connect's RESOURCE_EXHAUSTED), two whole messages (no
   * need to read on), or "more" to read.
   */
  private scan(readMaxBytes: number): ConnectError | "two" | "more" {
    if (this.bodyBytes < 5) return "more";
    const head = this.body.length === 1 ? (this.body[0] as Buffer) : Buffer.concat(this.body);
    this.body = [head];
    let at = 0;
    for (let n = 0; at + 5 <= head.length; n++) {
      const length = head.readUInt32BE(at + 1);
      if (length > readMaxBytes) {
        return new ConnectError(
          `message size ${length} is larger than configured readMaxBytes ${readMaxBytes}`,
          Code.ResourceExhausted,
        );
      }
      at += 5 + length;
      if (n === 1 && at <= head.length) return "two";
    }
    return "more";
  }

  /** The request's one message; throws connect's errors for anything else, in its order. */
  private parse(all: Buffer): unknown {
    // The common case: one whole, uncompressed message.
    if (all.length >= 5 && all[0] === 0 && all.readUInt32BE(1) === all.length - 5) {
      return this.route.input.parse(all.subarray(5));
    }
    const envelopes: { flags: number; data: Buffer }[] = [];
    let at = 0;
    while (at < all.length) {
      if (all.length - at < 5) break;
      const length = all.readUInt32BE(at + 1);
      if (all.length - at - 5 < length) break;
      envelopes.push({
        flags: all[at] as number,
        data: all.subarray(at + 5, at + 5 + length),
      });
      at += 5 + length;
      // connect reads no further than a second message.
      if (envelopes.length === 2) break;
    }
    const first = this.message(envelopes[0], at < all.length);
    if (envelopes.length === 0) {
      throw new ConnectError(
        "protocol error: missing input message for unary method",
        Code.Unimplemented,
      );
    }
    this.message(envelopes[1], at < all.length);
    if (envelopes.length > 1) {
      throw new ConnectError(
        "protocol error: received extra input message for unary method",
        Code.Unimplemented,
      );
    }
    return first;
  }

  /** One envelope's message as connect reads it; none (and `cut`: bytes left over) is connect's end-of-body check. */
  private message(env: { flags: number; data: Buffer } | undefined, cut: boolean): unknown {
    if (env === undefined) {
      if (cut) throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
      return undefined;
    }
    if ((env.flags & 1) === 1) {
      throw new ConnectError(
        "received compressed envelope, but do not know how to decompress",
        Code.Internal,
      );
    }
    return this.route.input.parse(env.data);
  }

  /** The call's signal as an AbortSignal (for calls that wait): aborts when the call does. */
  signal(): AbortSignal {
    if (this.controller === undefined) {
      const controller = new AbortController();
      this.controller = controller;
      const reason = this.reason;
      if (reason !== undefined) controller.abort(reason);
      else if (!this.answered) {
        this.state.live.add(this);
        if (this.deadlineAt !== undefined) {
          this.deadlineTimer = setTimeout(onDeadline, this.deadlineAt - performance.now(), this);
        }
      }
    }
    return this.controller.signal;
  }

  /** @internal Aborts the call with `reason` (its AbortSignal too, if it has one). */
  abort(reason: unknown): void {
    if (this.answered) return;
    // The first reason stays.
    this.abortReason ??= reason;
    this.state.live.delete(this);
    if (this.controller?.signal.aborted === false) this.controller.abort(this.abortReason);
  }

  /** Answers an error: headers, no message, its trailers. */
  fail(err: ConnectError): void {
    this.answer(undefined, trailersOf(err));
  }

  /** Writes the answer: headers, the message (if any), trailers; then lets go of the call. */
  answer(frame: Uint8Array | undefined, trailers: http2.OutgoingHttpHeaders): void {
    if (this.answered) return;
    this.done();
    const { stream } = this;
    if (stream.destroyed || stream.closed) return;
    this.trailers = trailers;
    try {
      stream.respond(this.responseHeaders, { waitForTrailers: true });
      stream.once("wantTrailers", onWantTrailers);
      if (frame === undefined) stream.end();
      else stream.end(frame);
    } catch {
      stream.destroy();
    }
  }

  /** @internal Node asks for the trailers. */
  sendTrailers(): void {
    this.stream.sendTrailers(this.trailers);
  }

  private done(): void {
    this.answered = true;
    if (this.deadlineTimer !== undefined) clearTimeout(this.deadlineTimer);
    this.state.live.delete(this);
  }

  /** @internal The stream closed: if the call was still on, the caller left (its signal aborts as connect-node's). */
  closed(): void {
    this.released();
    if (this.answered) return;
    const code = resetCodes[this.stream.rstCode];
    // A shutdown or deadline that came first stays the reason (read now: abort keeps the first).
    void this.reason;
    this.abort(
      code === undefined
        ? closedReason
        : new ConnectError(`http/2 stream closed with error code ${this.stream.rstCode}`, code),
    );
    this.done();
  }
}

/** connect's deadline reason (createDeadlineSignal's). */
function deadlineError(): ConnectError {
  return new ConnectError("the operation timed out", Code.DeadlineExceeded);
}

function noop(): void {}
function onData(this: CallStream, chunk: Buffer): void {
  this[kCall]?.received(chunk);
}
function onEnd(this: CallStream): void {
  this[kCall]?.requestEnded();
}
function onWantTrailers(this: CallStream): void {
  this[kCall]?.sendTrailers();
}
function onClose(this: CallStream): void {
  const call = this[kCall];
  this[kCall] = undefined;
  call?.closed();
}
function onDeadline(call: Call): void {
  call.expired();
}
