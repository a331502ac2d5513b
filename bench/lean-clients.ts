/**
 * Lean protocol clients for the load generator. The benchmark measures the
 * service, so its callers should cost as little CPU as possible on this
 * 2-core machine: these speak Connect JSON over HTTP/1.1 and gRPC over
 * HTTP/2 directly (the same bytes a generated client sends), without the
 * generic client machinery, much as wrk or h2load would.
 */
import http from "node:http";
import http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { ReportType } from "../gen/reports/v1/job_pb.js";
import { SubmitReportRequestSchema } from "../gen/reports/v1/report_service_pb.js";
import { type GrpcAnswer, type GrpcH2Connection, openGrpcH2Connection } from "./grpc-h2-client.js";
import type { HeaderField } from "./hpack-decoder.js";

/** One kind of call, and how to stop using it. */
export interface LeanClient<A, R = void> {
  call(arg: A): Promise<R>;
  close(): void;
}

const jobIdField = /"jobId":"([^"]+)"/;

/** The `jobId` of a JSON answer (read without parsing the whole body). */
function jobIdOf(body: string): string {
  const id = jobIdField.exec(body)?.[1];
  if (id === undefined) throw new Error(`no jobId in ${body.slice(0, 200)}`);
  return id;
}

function parseUrl(baseUrl: string): { host: string; port: number } {
  const u = new URL(baseUrl);
  return { host: u.hostname, port: Number(u.port) };
}

/** HTTP/1.1 keep-alive request returning status and body. */
function request(
  agent: http.Agent,
  target: { host: string; port: number },
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { agent, host: target.host, port: target.port, method, path, headers },
      (res) => {
        let data = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          data += c;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: data }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

/**
 * A JSON POST over keep-alive HTTP/1.1 whose body is `fields` plus a unique
 * `idempotencyKey` per call; answers the job id of a `okStatus` answer.
 */
function jsonSubmit(
  baseUrl: string,
  concurrency: number,
  path: string,
  headers: Record<string, string>,
  fields: object,
  okStatus: number,
): LeanClient<string, string> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const target = parseUrl(baseUrl);
  const rest = JSON.stringify(fields).slice(1);
  return {
    async call(key) {
      const body = `{"idempotencyKey":${JSON.stringify(key)},${rest}`;
      const res = await request(agent, target, "POST", path, headers, body);
      if (res.status !== okStatus) throw new Error(`HTTP ${res.status}: ${res.body.slice(0, 200)}`);
      if (res.body.includes('"deduplicated":true'))
        throw new Error("a unique idempotency key was deduplicated");
      return jobIdOf(res.body);
    },
    close: () => agent.destroy(),
  };
}

/** SubmitReport as Connect JSON over HTTP/1.1, one idempotency key per call; answers the job id. */
export function connectJsonSubmit(
  baseUrl: string,
  concurrency: number,
  filters: object,
): LeanClient<string, string> {
  return jsonSubmit(
    baseUrl,
    concurrency,
    "/reports.v1.ReportService/SubmitReport",
    { "content-type": "application/json", "connect-protocol-version": "1" },
    { userId: "bench-user", reportType: "REPORT_TYPE_WEEKLY", filters },
    200,
  );
}

/**
 * The naive baseline's submit (bench/baselines/express-bullmq): a JSON POST
 * over HTTP/1.1, one idempotency key per call; answers the job id.
 */
export function baselineSubmit(
  baseUrl: string,
  concurrency: number,
  filters: object,
): LeanClient<string, string> {
  return jsonSubmit(
    baseUrl,
    concurrency,
    "/v1/reports",
    { "content-type": "application/json" },
    { userId: "bench-user", reportType: "weekly", filters },
    202,
  );
}

/** A keep-alive HTTP/1.1 GET of `path` that must answer 200 with the job's id in the body. */
function jobGet(
  baseUrl: string,
  concurrency: number,
  jobId: string,
  path: string,
): LeanClient<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const target = parseUrl(baseUrl);
  return {
    async call() {
      const res = await request(agent, target, "GET", path, {});
      if (res.status !== 200 || !res.body.includes(jobId))
        throw new Error(`HTTP ${res.status}: ${res.body.slice(0, 200)}`);
    },
    close: () => agent.destroy(),
  };
}

/** The naive baseline's status route: GET /v1/jobs/{id} (BullMQ getJob + getState). */
export function baselineStatus(
  baseUrl: string,
  concurrency: number,
  jobId: string,
): LeanClient<void> {
  return jobGet(baseUrl, concurrency, jobId, `/v1/jobs/${encodeURIComponent(jobId)}`);
}

/** GetJob as a Connect GET (JSON over HTTP/1.1). */
export function connectGetJob(
  baseUrl: string,
  concurrency: number,
  jobId: string,
): LeanClient<void> {
  const message = encodeURIComponent(JSON.stringify({ jobId }));
  return jobGet(
    baseUrl,
    concurrency,
    jobId,
    `/reports.v1.ReportService/GetJob?connect=v1&encoding=json&message=${message}`,
  );
}

/**
 * SubmitReport as gRPC over one HTTP/2 connection (as a grpc-js channel
 * uses one), one idempotency key per call, with the headers @grpc/grpc-js
 * sends on a call without deadline (and `extraHeaders`) and its session
 * options; answers the job id. The connection is grpc-h2-client.ts': the
 * bytes of Node's HTTP/2 client (which grpc-js runs on), at a fraction of
 * its CPU per call.
 *
 * Every answer is checked as a generated client would: HTTP status 200, a
 * gRPC content type, `grpc-status` 0 (in the trailers, or the headers of a
 * trailers-only answer), and one uncompressed message whose top-level
 * fields hold a job id and no `deduplicated: true`.
 */
export function grpcSubmit(
  baseUrl: string,
  filters: object,
  extraHeaders: http2.OutgoingHttpHeaders = {},
): LeanClient<string, string> {
  const headers = {
    ...extraHeaders,
    ":method": "POST",
    ":path": "/reports.v1.ReportService/SubmitReport",
    "content-type": "application/grpc",
    te: "trailers",
    "user-agent": "grpc-node-js/1.14.7",
    "grpc-accept-encoding": "identity,deflate,gzip",
    "accept-encoding": "identity",
  };
  // grpc-js's session options (transport.ts): the same SETTINGS frame.
  const connecting = openGrpcH2Connection(baseUrl, headers, {
    settings: { initialWindowSize: http2.getDefaultSettings().initialWindowSize ?? 65535 },
    maxSendHeaderBlockLength: Number.MAX_SAFE_INTEGER,
    maxSessionMemory: Number.MAX_SAFE_INTEGER,
  });
  connecting.catch(() => undefined);
  let connection: GrpcH2Connection | undefined;
  // The request without its key, encoded once; each call prepends its key
  // (field 1; protobuf fields may come in any order), as cheap for the
  // caller as a generated client's encoding can be.
  const rest = toBinary(
    SubmitReportRequestSchema,
    create(SubmitReportRequestSchema, {
      userId: "bench-user",
      reportType: ReportType.WEEKLY,
      filters: filters as Record<string, string>,
    }),
  );
  return {
    async call(key) {
      const keyBytes = Buffer.byteLength(key);
      if (keyBytes >= 128) throw new Error("grpcSubmit: keys under 128 bytes");
      const length = 2 + keyBytes + rest.length;
      const frame = Buffer.allocUnsafe(5 + length);
      frame[0] = 0;
      frame.writeUInt32BE(length, 1);
      frame[5] = 0x0a; // field 1, length-delimited
      frame[6] = keyBytes;
      frame.write(key, 7, "utf8");
      frame.set(rest, 7 + keyBytes);
      connection ??= await connecting;
      const answer = await connection.call(frame);
      const jobId = submitAnswer(answer);
      if (typeof jobId !== "string") throw jobId;
      return jobId;
    },
    close: () => {
      connecting.then(
        (c) => c.close(),
        () => undefined,
      );
    },
  };
}

/** A field of a header list (the last one of that name). */
function field(fields: readonly HeaderField[], name: string): string | undefined {
  let value: string | undefined;
  for (const [n, v] of fields) if (n === name) value = v;
  return value;
}

/** The job id of a SubmitReport answer, or what is wrong with it. */
function submitAnswer(answer: GrpcAnswer): string | Error {
  const { headers, trailers, body } = answer;
  if (field(headers, ":status") !== "200") {
    return new Error(`HTTP status ${field(headers, ":status") ?? "missing"}`);
  }
  if (!field(headers, "content-type")?.startsWith("application/grpc")) {
    return new Error(`content-type ${field(headers, "content-type") ?? "missing"}`);
  }
  // A trailers-only answer (an error) has its status in the headers.
  const end = trailers.length > 0 ? trailers : headers;
  const status = field(end, "grpc-status");
  if (status !== "0") {
    return new Error(`grpc-status ${status ?? "missing"}: ${field(end, "grpc-message") ?? ""}`);
  }
  if (body.length < 5 || body[0] !== 0 || body.readUInt32BE(1) !== body.length - 5) {
    return new Error("the answer is not one uncompressed message");
  }
  const jobId = submitAnswerJobId(body);
  if (jobId === undefined) return new Error("no job id in the answer");
  if (jobId === "") return new Error("a unique idempotency key was deduplicated");
  return jobId;
}

/**
 * Reads the top-level fields of an enveloped SubmitReportResponse: its
 * job_id (1), or "" when deduplicated (4) is true, or undefined when the
 * message is malformed or has no job id.
 */
function submitAnswerJobId(frame: Buffer): string | undefined {
  let at = 5;
  let jobId: string | undefined;
  while (at < frame.length) {
    const tag = frame[at++] as number;
    if (tag >= 0x80) return undefined; // field numbers under 16 only
    const wireType = tag & 7;
    if (wireType === 0) {
      let value = 0;
      let shift = 0;
      let b: number;
      do {
        b = frame[at++] as number;
        if (shift < 28) value |= (b & 0x7f) << shift;
        shift += 7;
      } while (b >= 0x80 && at < frame.length);
      if (tag >> 3 === 4 && value !== 0) return "";
    } else if (wireType === 2) {
      let length = 0;
      let shift = 0;
      let b: number;
      do {
        b = frame[at++] as number;
        length |= (b & 0x7f) << shift;
        shift += 7;
      } while (b >= 0x80 && shift < 28);
      if (at + length > frame.length) return undefined;
      if (tag >> 3 === 1) jobId = frame.toString("latin1", at, at + length);
      at += length;
    } else {
      return undefined;
    }
  }
  return jobId === "" ? undefined : jobId;
}
