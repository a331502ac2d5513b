/**
 * The gRPC unary route (src/api/grpc-unary-route.ts) answers SubmitReport,
 * GetJob, CancelJob, ListJobs and RetryJob exactly as connect does: each call is made twice on raw
 * HTTP/2, once as the route takes it and once with `grpc-encoding: gzip`
 * on an uncompressed message (which connect accepts, and which changes
 * nothing in its answer once grpc-accept-encoding names the same response
 * encoding) so that connect serves it, and the response headers (all but
 * Date), message bytes and trailers are compared.
 */
import http2 from "node:http2";
import { gunzipSync } from "node:zlib";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReportType } from "../../gen/reports/v1/job_pb.js";
import {
  CancelJobRequestSchema,
  CancelJobResponseSchema,
  GetJobRequestSchema,
  ListJobsRequestSchema,
  RetryJobRequestSchema,
  SubmitReportRequestSchema,
  SubmitReportResponseSchema,
} from "../../gen/reports/v1/report_service_pb.js";
import { grpcUnaryServed } from "../../src/api/grpc-unary-route.js";
import { capturedLogger } from "../helpers/captured-logger.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

const apiKey = "k-grpc-unary-test";
const readMaxBytes = 4096;
const auth = `Bearer ${apiKey}`;
const submitPath = "/reports.v1.ReportService/SubmitReport";
const getJobPath = "/reports.v1.ReportService/GetJob";

/** What a call answered: response headers (no Date), the body's bytes, trailers. */
interface Answer {
  headers: Record<string, unknown>;
  body: Buffer;
  trailers: Record<string, unknown>;
}

interface Call {
  path: string;
  headers?: http2.OutgoingHttpHeaders;
  /** The request body (an envelope or anything else). */
  body: Buffer;
}

function envelope(message: Uint8Array, flags = 0): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame[0] = flags;
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

function submitMessage(
  key: string,
  extra: Partial<{ userId: string; filters: Record<string, string> }> = {},
) {
  return envelope(
    toBinary(
      SubmitReportRequestSchema,
      create(SubmitReportRequestSchema, {
        idempotencyKey: key,
        userId: "u-1",
        reportType: ReportType.WEEKLY,
        ...extra,
      }),
    ),
  );
}

function getJobMessage(jobId: string): Buffer {
  return envelope(toBinary(GetJobRequestSchema, create(GetJobRequestSchema, { jobId })));
}

/** One gRPC call on its own HTTP/2 connection. */
function call(url: string, c: Call, extra: http2.OutgoingHttpHeaders = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const stream = session.request({
      ":method": "POST",
      ":path": c.path,
      "content-type": "application/grpc+proto",
      te: "trailers",
      ...c.headers,
      ...extra,
    });
    let headers: Record<string, unknown> = {};
    let trailers: Record<string, unknown> = {};
    const chunks: Buffer[] = [];
    stream.on("response", (h) => {
      const { date: _d, ...rest } = h;
      headers = { ...rest };
    });
    stream.on("trailers", (t) => {
      trailers = { ...t };
    });
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("end", () => {
      session.destroy();
      resolve({ headers, body: Buffer.concat(chunks), trailers });
    });
    stream.on("error", reject);
    stream.end(c.body);
  });
}

/** The headers that send a call to connect without changing its answer (see the module comment). */
function toConnect(c: Call): http2.OutgoingHttpHeaders {
  return {
    "grpc-encoding": "gzip",
    "grpc-accept-encoding": c.headers?.["grpc-accept-encoding"] ?? "identity",
  };
}

describe("gRPC unary route", () => {
  let t: TestApp;
  const captured = capturedLogger("info");

  /** The route's answer and connect's, and whether the route took the first one. */
  async function both(c: Call): Promise<{ lean: Answer; connect: Answer; tookLean: boolean }> {
    const before = grpcUnaryServed.count;
    const lean = await call(t.url, c);
    const tookLean = grpcUnaryServed.count === before + 1;
    const mid = grpcUnaryServed.count;
    const connect = await call(t.url, c, toConnect(c));
    expect(grpcUnaryServed.count, "grpc-encoding: gzip goes to connect").toBe(mid);
    return { lean, connect, tookLean };
  }

  /** Both answers, which must be the same; answers the route's. */
  async function expectSame(c: Call, status: string): Promise<Answer> {
    const { lean, connect, tookLean } = await both(c);
    expect(tookLean).toBe(true);
    expect(
      lean.trailers["grpc-status"],
      decodeURIComponent(String(lean.trailers["grpc-message"])),
    ).toBe(status);
    expect(lean.headers).toEqual(connect.headers);
    expect(lean.trailers).toEqual(connect.trailers);
    expect(lean.body.equals(connect.body)).toBe(true);
    return lean;
  }

  const submit = (key: string, extra: Parameters<typeof submitMessage>[1] = {}): Call => ({
    path: submitPath,
    headers: { authorization: auth },
    body: submitMessage(key, extra),
  });
  let jobId = "";

  beforeAll(async () => {
    // API only: no worker moves the job between the two answers compared.
    t = await startTestApp(
      {
        API_KEYS: `acme:${apiKey}`,
        READ_MAX_BYTES: String(readMaxBytes),
        MAX_TIMEOUT_MS: "60000",
        CORS_ORIGINS: "https://app.example",
      },
      { mode: "api", logger: captured.logger },
    );
  });
  afterAll(async () => {
    await t?.close();
  });

  it("answers a fresh submit as connect does (ids and times aside)", async () => {
    const before = grpcUnaryServed.count;
    const lean = await call(t.url, submit("g-a"));
    expect(grpcUnaryServed.count).toBe(before + 1);
    const connectCall = submit("g-b");
    const connect = await call(t.url, connectCall, toConnect(connectCall));
    expect(lean.headers).toEqual(connect.headers);
    expect(lean.headers).toMatchObject({
      ":status": 200,
      "content-type": "application/grpc+proto",
    });
    expect(lean.trailers).toEqual(connect.trailers);
    expect(Object.keys(lean.trailers)).toEqual(["grpc-status"]);
    expect(lean.trailers["grpc-status"]).toBe("0");
    const decode = (a: Answer) => {
      expect(a.body[0]).toBe(0);
      expect(a.body.readUInt32BE(1)).toBe(a.body.length - 5);
      return fromBinary(SubmitReportResponseSchema, a.body.subarray(5));
    };
    const l = decode(lean);
    const c = decode(connect);
    jobId = l.jobId;
    expect(l.deduplicated).toBe(false);
    const mask = (m: typeof l) =>
      JSON.parse(
        JSON.stringify({ ...m, job: { ...m.job, createdAt: undefined } }, (_k, v) =>
          typeof v === "bigint" ? String(v) : v,
        ).replaceAll(m.jobId, "ID"),
      );
    expect(mask(l)).toEqual(mask(c));
  });

  it("answers a deduplicated submit and GetJob byte for byte as connect (both content types)", async () => {
    expect(jobId).not.toBe("");
    const dup = await expectSame(submit("g-a"), "0");
    expect(fromBinary(SubmitReportResponseSchema, dup.body.subarray(5)).deduplicated).toBe(true);
    const get: Call = {
      path: getJobPath,
      headers: { authorization: auth },
      body: getJobMessage(jobId),
    };
    await expectSame(get, "0");
    await expectSame(
      { ...get, headers: { authorization: auth, "content-type": "application/grpc" } },
      "0",
    );
    // What grpc-js sends: its accept list, a deadline, a user agent.
    await expectSame(
      {
        ...get,
        headers: {
          authorization: auth,
          "content-type": "application/grpc",
          "grpc-accept-encoding": "identity,deflate,gzip",
          "grpc-timeout": "30S",
          "user-agent": "grpc-node-js/1.14.0",
        },
      },
      "0",
    );
  });

  it("compresses as connect does when the caller accepts gzip", async () => {
    // An answer is over compressMinBytes (1 KiB) only with long filters.
    const long = submit("g-long", { filters: { note: "x".repeat(1200) } });
    await call(t.url, long);
    const gzip: Call = {
      ...long,
      headers: { authorization: auth, "grpc-accept-encoding": "gzip" },
    };
    const answer = await expectSame(gzip, "0");
    expect(answer.headers["grpc-encoding"]).toBe("gzip");
    expect(answer.body[0]).toBe(1);
    const message = gunzipSync(answer.body.subarray(5));
    expect(fromBinary(SubmitReportResponseSchema, message).deduplicated).toBe(true);
    // A short answer: the header, an uncompressed message.
    const short = await expectSame({ ...gzip, body: getJobMessage(jobId), path: getJobPath }, "0");
    expect(short.headers["grpc-encoding"]).toBe("gzip");
    expect(short.body[0]).toBe(0);
  });

  it("answers errors as connect: validation, auth, NOT_FOUND, deadlines", async () => {
    // INVALID_ARGUMENT with its field violations (grpc-status-details-bin).
    const invalid = await expectSame(submit("g-v", { userId: "" }), "3");
    expect(invalid.trailers["grpc-status-details-bin"]).toBeDefined();
    // UNAUTHENTICATED: no key, a wrong key (with its WWW-Authenticate trailer).
    const noKey = await expectSame({ ...submit("g-u"), headers: {} }, "16");
    expect(noKey.trailers["www-authenticate"]).toBeDefined();
    await expectSame({ ...submit("g-u"), headers: { authorization: "Bearer wrong" } }, "16");
    // NOT_FOUND.
    await expectSame(
      { path: getJobPath, headers: { authorization: auth }, body: getJobMessage("no-such-job") },
      "5",
    );
    // A deadline already passed, a malformed one, one over MAX_TIMEOUT_MS.
    const deadline = { authorization: auth, "grpc-timeout": "0n" };
    await expectSame({ ...submit("g-d"), headers: deadline }, "4");
    await expectSame({ path: getJobPath, headers: deadline, body: getJobMessage(jobId) }, "4");
    await expectSame(
      { ...submit("g-d"), headers: { authorization: auth, "grpc-timeout": "x" } },
      "3",
    );
    await expectSame(
      { ...submit("g-d"), headers: { authorization: auth, "grpc-timeout": "61S" } },
      "3",
    );
  });

  it("answers malformed requests as connect: not protobuf, no message, two, flagged compressed, too large, cut short", async () => {
    const get = (body: Buffer): Call => ({
      path: getJobPath,
      headers: { authorization: auth },
      body,
    });
    const one = getJobMessage(jobId);
    await expectSame(get(envelope(Buffer.from([0xff, 0xff, 0xff]))), "3");
    await expectSame(get(Buffer.alloc(0)), "3");
    await expectSame(get(Buffer.concat([one, one])), "3");
    // A message flagged compressed: connect would decompress it under the
    // gzip that sends a call to connect, so only the route's answer is
    // checked, against the rewrite parse-errors.ts makes of connect's.
    const before = grpcUnaryServed.count;
    const flagged = await call(t.url, get(envelope(one.subarray(5), 1)));
    expect(grpcUnaryServed.count).toBe(before + 1);
    expect(flagged.trailers["grpc-status"]).toBe("3");
    expect(decodeURIComponent(String(flagged.trailers["grpc-message"]))).toBe(
      "malformed request: a message is flagged compressed but the request names no supported encoding",
    );
    const big = Buffer.alloc(5);
    big.writeUInt32BE(readMaxBytes + 1, 1);
    await expectSame(get(big), "8");
    await expectSame(get(one.subarray(0, one.length - 1)), "3");
    await expectSame(get(one.subarray(0, 3)), "3");
  });

  it("answers CancelJob, ListJobs and RetryJob as connect does", async () => {
    const path = (m: string) => `/reports.v1.ReportService/${m}`;
    const headers = { authorization: auth };
    // ListJobs: the tenant's first page, byte for byte.
    const list = envelope(
      toBinary(ListJobsRequestSchema, create(ListJobsRequestSchema, { pageSize: 3 })),
    );
    const page = await expectSame({ path: path("ListJobs"), headers, body: list }, "0");
    expect(page.body.length).toBeGreaterThan(5);
    // CancelJob of a queued job, one each way: the same answer but for ids and times.
    const cancel = (id: string) =>
      envelope(
        toBinary(
          CancelJobRequestSchema,
          create(CancelJobRequestSchema, { jobId: id, reason: "r" }),
        ),
      );
    const ids: string[] = [];
    for (const key of ["g-c1", "g-c2"]) {
      const a = await call(t.url, submit(key));
      ids.push(fromBinary(SubmitReportResponseSchema, a.body.subarray(5)).jobId);
    }
    const [c1, c2] = ids as [string, string];
    const lean = await call(t.url, { path: path("CancelJob"), headers, body: cancel(c1) });
    const c2Call = { path: path("CancelJob"), headers, body: cancel(c2) };
    const connect = await call(t.url, c2Call, toConnect(c2Call));
    expect(lean.trailers["grpc-status"]).toBe("0");
    expect(lean.headers).toEqual(connect.headers);
    expect(lean.trailers).toEqual(connect.trailers);
    const masked = (a: Answer, id: string) => {
      const { job } = fromBinary(CancelJobResponseSchema, a.body.subarray(5));
      return JSON.parse(
        JSON.stringify({ ...job, createdAt: 0, finishedAt: 0 }, (_k, v) =>
          typeof v === "bigint" ? String(v) : v,
        ).replaceAll(id, "ID"),
      );
    };
    expect(masked(lean, c1)).toEqual(masked(connect, c2));
    // Cancelling it again; retrying a job that did not fail; unknown jobs.
    const again = await both({ path: path("CancelJob"), headers, body: cancel(c1) });
    expect(again.tookLean).toBe(true);
    expect(again.lean.headers).toEqual(again.connect.headers);
    expect(again.lean.trailers).toEqual(again.connect.trailers);
    expect(again.lean.body.equals(again.connect.body)).toBe(true);
    const retry = (id: string) =>
      envelope(toBinary(RetryJobRequestSchema, create(RetryJobRequestSchema, { jobId: id })));
    const refused = await both({ path: path("RetryJob"), headers, body: retry(c1) });
    expect(refused.tookLean).toBe(true);
    expect(refused.lean.trailers["grpc-status"]).not.toBe("0");
    expect(refused.lean.trailers).toEqual(refused.connect.trailers);
    await expectSame({ path: path("RetryJob"), headers, body: retry("no-such-job") }, "5");
    await expectSame({ path: path("CancelJob"), headers, body: cancel("no-such-job") }, "5");
  });

  it("writes the request log line connect's interceptors write (ok, refused, NOT_FOUND)", async () => {
    const calls: Call[] = [
      submit("g-a"),
      { ...submit("g-a"), headers: {} },
      { path: getJobPath, headers: { authorization: auth }, body: getJobMessage("no-such-job") },
    ];
    for (const c of calls) {
      const from = captured.lines.length;
      await both(c);
      const lines = captured.lines
        .slice(from)
        .filter((l) => l.msg === "rpc" || l.msg === "rpc failed");
      expect(lines).toHaveLength(2);
      const [lean, connect] = lines.map(
        ({ time: _t, duration_ms: _d, trace_id: _ti, span_id: _s, trace_flags: _f, ...rest }) =>
          rest,
      );
      expect(lean).toEqual(connect);
      expect(lean).toMatchObject({ protocol: "grpc" });
    }
  });

  it("leaves gRPC-Web, JSON, browsers' and compressed requests to connect", async () => {
    const others: http2.OutgoingHttpHeaders[] = [
      { "content-type": "application/grpc-web+proto" },
      { "content-type": "application/grpc-web" },
      { "content-type": "application/grpc+json" },
      { origin: "https://app.example" },
      { "grpc-encoding": "gzip" },
    ];
    for (const h of others) {
      const before = grpcUnaryServed.count;
      await call(t.url, {
        path: getJobPath,
        headers: { authorization: auth, ...h },
        body: getJobMessage(jobId),
      });
      expect(grpcUnaryServed.count, JSON.stringify(h)).toBe(before);
    }
  });
});
