/**
 * SubmitReport and GetJob over Connect JSON on HTTP/1.1 (POST, and GET for
 * GetJob), without connect's per-call machinery: its handler context (two
 * linked AbortControllers, three Fetch `Headers`, a `DOMException` built by
 * `context.abort()` at the end of every call), the universal request and
 * the interceptor chain. These are the two calls the API serves most.
 *
 * Only the plainest requests are taken, the ones bench:compare and most
 * server-side callers send: HTTP/1.1, no Origin (CORS stays connect's), a
 * body of known length within readMaxBytes, `application/json` (GET:
 * `encoding=json`, no compression or base64 parameter), an uncompressed
 * body, no timeout header. The answer is compressed as connect compresses
 * it (Accept-Encoding, from compressMinBytes). Everything else goes to connect,
 * which stays the reference: lean-unary.test.ts compares the answers of
 * both, byte for byte.
 *
 * What connect does is done here in its order: the request message is parsed
 * by connect's own JSON serialization (the plainest SubmitReport bodies by
 * submit-json-reader.ts, which reads them as it does; a parse error is
 * answered before any interceptor runs: no span, no log line), then what the
 * interceptors do (api-part.ts): the SERVER span from the caller's
 * traceparent and the rpc.server.call.duration metric
 * (telemetry-interceptor.ts), the request log line
 * (request-log-interceptor.ts), authentication (auth.ts), then the handler
 * (report-service.ts' ReportCalls); a JSON answer is the text connect's
 * serialization writes (job-json.ts writes SubmitReport's and GetJob's
 * without reflection). Errors are answered as connect answers them:
 * codeToHttpStatus, the error's metadata as headers, and connect's error JSON.
 */

import {
  type DescMessage,
  type DescMethodUnary,
  type MessageShape,
  toJsonString,
} from "@bufbuild/protobuf";
import { base64Decode } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  compressionNegotiate,
  createMethodSerializationLookup,
  getJsonOptions,
  type Serialization,
  validateReadWriteMaxBytes,
} from "@connectrpc/connect/protocol";
import { codeToHttpStatus, errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import { type Context, ROOT_CONTEXT, type Span, type SpanOptions, trace } from "@opentelemetry/api";
import type { Logger } from "pino";
import {
  GetJobResponseSchema,
  ReportService,
  SubmitReportResponseSchema,
} from "../../gen/reports/v1/report_service_pb.js";
import type { CallerSignal } from "../queue/caller-signal.js";
import type { Authenticator } from "./auth.js";
import { type ConnectGetQuery, readConnectGetQuery } from "./connect-get-query.js";
import { readGetJobJson, readGetJobJsonText } from "./get-job-json-reader.js";
import { getJobResponseFrame, submitReportResponseFrame } from "./job-binary.js";
import { getJobResponseJson, submitReportResponseJson } from "./job-json.js";
import { createLeanCallRunner } from "./lean-call.js";
import type { NodeRequest, NodeResponse } from "./node-types.js";
import { asInvalidArgumentIfParseError } from "./parse-errors.js";
import type { ReportCalls } from "./report-service.js";
import { readSubmitReportJson } from "./submit-json-reader.js";
import { rpcServerSpanOptions } from "./telemetry-interceptor.js";

/** What the route needs. */
export interface LeanUnaryDeps {
  calls: ReportCalls;
  auth: Authenticator;
  /** Largest request body taken here, in bytes (connect's readMaxBytes; larger ones go to connect). */
  readMaxBytes: number;
  /** Aborts the signal of calls in flight, as connect's handler context does. */
  shutdownSignal: AbortSignal;
  logger: Logger;
}

/** Calls this process served here (tests and diagnostics: which path answered). */
export const leanUnaryServed = { count: 0 };

/** Serves a request if it is one the lean route takes; false when connect must. */
export type LeanUnary = (req: NodeRequest, res: NodeResponse) => boolean;

/** Marks a successful binary answer (content type application/proto). */
const protoHeaders: Record<string, string> = Object.freeze({}) as Record<string, string>;

/** The reason a call's signal aborts with when the client leaves before the answer (rpc-node-handler.ts'). */
const closed = new ConnectError("the request was closed", Code.Canceled);

type Invoke = (
  message: never,
  tenant: string,
  req: NodeRequest,
  signal: CallerSignal,
) => Promise<unknown>;

interface Route {
  name: string;
  method: string;
  get: boolean;
  input: Serialization<unknown>;
  /** Reads the plainest JSON requests without reflection; undefined: `input` must parse. */
  readJson: ((body: Uint8Array) => unknown) | undefined;
  /** The same for a GET's `message` parameter, as text (methods served over GET); undefined: parse its bytes. */
  readJsonText: ((text: string) => unknown) | undefined;
  inputBinary: Serialization<unknown>;
  outputBinary: Serialization<MessageShape<DescMessage>>;
  outputSchema: DescMessage;
  /** Writes a successful answer's JSON without reflection; undefined: toJsonString must. */
  writeJson: ((message: never) => string | undefined) | undefined;
  /** A successful answer's gRPC frame without reflection (job-binary.ts; the message follows its 5 bytes); undefined: outputBinary must. */
  writeFrame: ((message: never) => Buffer | undefined) | undefined;
  spanOptions: SpanOptions;
  invoke: Invoke;
}

/** Creates the route. */
export function createLeanUnary(deps: LeanUnaryDeps): LeanUnary {
  const calls = createLeanCallRunner({ protocol: "connect", auth: deps.auth, logger: deps.logger });
  const routes = new Map<string, Route>();
  // The limits connect's handler serializes with (its defaults for the rest).
  const limits = validateReadWriteMaxBytes(deps.readMaxBytes, undefined, undefined);
  // connect-node's default, as rpc-node-handler.ts configures the router.
  const acceptCompression = [compressionGzip, compressionBrotli];
  const add = (
    method: DescMethodUnary,
    outputSchema: DescMessage,
    get: boolean,
    invoke: Invoke,
    readJson?: (body: Uint8Array) => unknown,
    writeJson?: (message: never) => string | undefined,
    writeFrame?: (message: never) => Buffer | undefined,
    readJsonText?: (text: string) => unknown,
  ) => {
    // Connect's own (JSON) serialization of the method, as its handler makes it.
    const serialization = createMethodSerializationLookup(method, undefined, undefined, limits);
    routes.set(`/${ReportService.typeName}/${method.name}`, {
      name: `${ReportService.typeName}/${method.name}`,
      method: method.name,
      get,
      input: serialization.getI(false) as Serialization<unknown>,
      readJson,
      readJsonText,
      inputBinary: serialization.getI(true) as Serialization<unknown>,
      outputBinary: serialization.getO(true) as unknown as Serialization<MessageShape<DescMessage>>,
      outputSchema,
      writeJson,
      writeFrame,
      spanOptions: rpcServerSpanOptions("connect", ReportService.typeName, method.name),
      invoke,
    });
  };
  add(
    ReportService.method.submitReport,
    SubmitReportResponseSchema,
    false,
    (m, t, req, signal) => deps.calls.submitReport(m, t, headerOf(req, "idempotency-key"), signal),
    readSubmitReportJson,
    submitReportResponseJson,
    submitReportResponseFrame,
  );
  add(
    ReportService.method.getJob,
    GetJobResponseSchema,
    true,
    (m, t, _req, signal) => deps.calls.getJob(m, t, signal),
    readGetJobJson,
    getJobResponseJson,
    getJobResponseFrame,
    readGetJobJsonText,
  );

  /** Runs a parsed call and answers it; never rejects (a failed answer destroys the response). */
  const run = async (call: Call, message: unknown, binary: boolean): Promise<void> => {
    const { req, res, route } = call;
    let body: Uint8Array | string;
    let status = 200;
    let headers: Record<string, string | string[]> | undefined;
    try {
      const output = await calls.run(call, route, headerOf(req, "authorization"), message, req);
      if (binary) {
        // The same bytes as outputBinary's, within the write limit it checks.
        const frame = route.writeFrame?.(output as never);
        body =
          frame !== undefined && frame.byteLength - 5 <= limits.writeMaxBytes
            ? frame.subarray(5)
            : route.outputBinary.serialize(output);
        headers = protoHeaders;
      } else {
        body = jsonText(route, output);
      }
    } catch (e) {
      ({ status, body, headers } = errorAnswer(ConnectError.from(e)));
    }
    call.done();
    try {
      const compressing = answer(res, status, body, headers, headerOf(req, "accept-encoding"));
      if (compressing !== undefined) await compressing;
    } catch {
      if (!res.destroyed) res.destroy();
    }
  };

  /**
   * Parses a request's message and runs the call; a parse error is answered
   * before any interceptor, as connect does. (Shared by every call: no
   * closures per request.)
   */
  const parseAndRun = (call: Call, bytes: Uint8Array, binary: boolean): void => {
    const { req, res, route } = call;
    let message: unknown;
    try {
      message = binary
        ? route.inputBinary.parse(bytes)
        : (route.readJson?.(bytes) ?? route.input.parse(bytes));
    } catch (e) {
      call.done();
      const { status, body, headers } = errorAnswer(ConnectError.from(e));
      answer(res, status, body, headers, headerOf(req, "accept-encoding"))?.catch(() => {
        if (!res.destroyed) res.destroy();
      });
      return;
    }
    startRun(call, message, binary);
  };

  const startRun = (call: Call, message: unknown, binary: boolean): void => {
    calls.begin(call, call.route, call.req.headers);
    void run(call, message, binary);
  };

  /**
   * A successful answer's JSON as connect's JSON serialization makes it
   * (toJsonString, or job-json.ts' writers of the same text, then its
   * writeMaxBytes check), kept as text: connect's
   * TextEncoder pass is saved, and Node joins a text body to the head
   * (bytes go as an iovec of their own; end() adds an empty one either way).
   */
  const jsonText = (route: Route, message: MessageShape<DescMessage>): string => {
    let json: string;
    try {
      json =
        route.writeJson?.(message as never) ??
        toJsonString(route.outputSchema, message, jsonOptions);
    } catch (e) {
      throw ConnectError.from(e, Code.Internal);
    }
    const size = Buffer.byteLength(json);
    if (size > limits.writeMaxBytes) {
      throw new ConnectError(
        `message size ${size} is larger than configured writeMaxBytes ${limits.writeMaxBytes}`,
        Code.ResourceExhausted,
      );
    }
    return json;
  };

  /**
   * Writes an answer, compressed as connect would (its headers sorted, as
   * Fetch Headers are). Synchronous unless the answer is compressed.
   */
  const answer = (
    res: NodeResponse,
    status: number,
    body: Uint8Array | string,
    headers: Record<string, string | string[]> | undefined,
    acceptEncoding: string | null,
  ): Promise<void> | undefined => {
    const size = typeof body === "string" ? Buffer.byteLength(body) : body.byteLength;
    if (acceptEncoding !== null && size >= limits.compressMinBytes) {
      const compression = compressionNegotiate(
        acceptCompression,
        null,
        acceptEncoding,
        "Accept-Encoding",
      ).response;
      if (compression !== null) {
        return compression
          .compress(typeof body === "string" ? Buffer.from(body) : body)
          .then((bytes) => write(res, status, bytes, bytes.byteLength, headers, compression.name));
      }
    }
    write(res, status, body, size, headers, undefined);
    return undefined;
  };

  return (req, res) => {
    const url = req.url ?? "";
    const q = url.indexOf("?");
    const route = routes.get(q === -1 ? url : url.slice(0, q));
    if (route === undefined || !plain(req)) return false;
    let query: ConnectGetQuery | undefined;
    let binary: boolean;
    if (req.method === "GET") {
      if (!route.get) return false;
      query = readConnectGetQuery(q === -1 ? "" : url.slice(q + 1));
      const encoding = query.encoding;
      if (encoding !== "json" && encoding !== "proto") return false;
      if (query.compression) return false;
      binary = encoding === "proto";
    } else {
      if (req.method !== "POST") return false;
      const type = req.headers["content-type"];
      if (type === "application/proto") binary = true;
      else if (type === "application/json" || type === "application/json; charset=utf-8") {
        binary = false;
      } else return false;
      const encoding = req.headers["content-encoding"];
      if (encoding !== undefined && encoding !== "identity") return false;
      const length = req.headers["content-length"];
      if (length !== undefined) {
        // connect answers a promised size over readMaxBytes before reading: left to it.
        const n = Number(length);
        if (!Number.isSafeInteger(n) || n > deps.readMaxBytes) return false;
      }
    }
    leanUnaryServed.count++;
    const call = new Call(req, res, route, deps.shutdownSignal);
    if (query !== undefined) {
      // As connect reads a GET's message (readUnaryMessageFromQuery).
      const message = query.message ?? "";
      if (query.base64 === "1") parseAndRun(call, base64Decode(message), binary);
      else {
        // The plainest GetJob JSON read from the text itself (ASCII: its
        // length is its size in bytes, within readMaxBytes as connect checks).
        const fast =
          !binary && message.length <= deps.readMaxBytes
            ? route.readJsonText?.(message)
            : undefined;
        if (fast !== undefined) startRun(call, fast, binary);
        else parseAndRun(call, Buffer.from(message), binary);
      }
      return true;
    }
    const chunks: Buffer[] = [];
    let bytes = 0;
    const onData = (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > deps.readMaxBytes) {
        // A chunked body over the limit: connect's readAllBytes error, answered as it answers it.
        req.off("data", onData);
        req.off("end", onEnd);
        req.resume();
        call.done();
        const error = new ConnectError(
          `message size is larger than configured readMaxBytes ${deps.readMaxBytes}`,
          Code.ResourceExhausted,
        );
        const { status, body, headers } = errorAnswer(error);
        answer(res, status, body, headers, headerOf(req, "accept-encoding"))?.catch(() => {
          if (!res.destroyed) res.destroy();
        });
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () =>
      parseAndRun(
        call,
        chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks),
        binary,
      );
    req.on("data", onData);
    req.once("end", onEnd);
    req.once("error", () => {
      call.done();
      if (!res.destroyed) res.destroy();
    });
    return true;
  };
}

/** connect's JSON serialization options, as its handler makes them (no options of ours). */
const jsonOptions = getJsonOptions(undefined);

/** Writes the head and the body of an answer of `size` bytes. */
function write(
  res: NodeResponse,
  status: number,
  body: Uint8Array | string,
  size: number,
  headers: Record<string, string | string[]> | undefined,
  encoding: string | undefined,
): void {
  if (res.destroyed) return;
  const contentType = headers === protoHeaders ? "application/proto" : "application/json";
  if (headers === protoHeaders) headers = undefined;
  const length = String(size);
  const out =
    headers === undefined
      ? { "content-length": length, "content-type": contentType }
      : { ...headers, "content-length": length };
  res.writeHead(status, encoding === undefined ? out : { "content-encoding": encoding, ...out });
  res.end(body);
}

/** Whether a request is one this route may take at all (before its method's own checks). */
function plain(req: NodeRequest): boolean {
  const h = req.headers;
  return (
    req.httpVersion === "1.1" &&
    h.origin === undefined &&
    h["connect-accept-encoding"] === undefined &&
    h["connect-timeout-ms"] === undefined &&
    h.host !== undefined
  );
}

/** A request header's first value (Fetch Headers would join repeats; they go to connect). */
function headerOf(req: NodeRequest, name: string): string | null {
  const v = req.headers[name];
  if (v === undefined) return null;
  return typeof v === "string" ? v : v.join(", ");
}

/** Connect's unary error answer: status, headers (the error's metadata with its content type) and error JSON. */
function errorAnswer(error: ConnectError): {
  status: number;
  body: Uint8Array;
  headers: Record<string, string | string[]>;
} {
  // As withParseErrorsAsInvalidArgument rewrites connect's answer.
  error = asInvalidArgumentIfParseError(error);
  const body = errorToJsonBytes(error, undefined);
  const h = new Headers({ "content-type": "application/json" });
  error.metadata.forEach((value, key) => {
    h.set(key, value);
  });
  h.set("content-length", String(body.byteLength));
  const headers: Record<string, string | string[]> = Object.create(null);
  h.forEach((value, key) => {
    headers[key] = key === "set-cookie" ? h.getSetCookie() : value;
  });
  return { status: codeToHttpStatus(error.code), body, headers };
}

const noSpan = trace.wrapSpanContext({ traceId: "", spanId: "", traceFlags: 0 });

/**
 * One call in flight, and its signal (CallerSignal): aborted when the client
 * leaves before the answer or the server shuts down, as connect's handler
 * context aborts. The submit and GetJob calls only check it before they send
 * (queue/caller-signal.ts), so it is read from the response and the shutdown
 * signal when asked, instead of an AbortController and two listeners per
 * call; once aborted it stays so, and after done() it no longer changes.
 */
class Call implements CallerSignal {
  readonly started = performance.now();
  tenant = "default";
  span: Span = noSpan;
  ctx: Context = ROOT_CONTEXT;
  private finished = false;
  private abortReason: unknown;

  constructor(
    readonly req: NodeRequest,
    readonly res: NodeResponse,
    readonly route: Route,
    private readonly shutdownSignal: AbortSignal,
  ) {}

  get aborted(): boolean {
    return this.reason !== undefined;
  }

  /** Why the call aborted (the shutdown's reason, or `closed` for a client that left); undefined while it runs. */
  get reason(): unknown {
    if (this.abortReason === undefined && !this.finished) {
      if (this.shutdownSignal.aborted) this.abortReason = this.shutdownSignal.reason;
      else if (this.res.closed) this.abortReason = closed;
    }
    return this.abortReason;
  }

  throwIfAborted(): void {
    const reason = this.reason;
    if (reason !== undefined) throw reason;
  }

  done(): void {
    this.finished = true;
  }
}
