/**
 * Property-based fuzzing of every ReportService method over every protocol,
 * with raw HTTP/1.1 and HTTP/2 clients (so the bytes are exactly what the
 * fuzzer chose): Connect JSON and proto (unary and the enveloped streaming
 * form, POST and GET), gRPC (HTTP/2) and gRPC-Web (HTTP/1.1), with arbitrary
 * JSON, structured requests with arbitrary field values, arbitrary bytes and
 * mutated valid messages, framed and unframed.
 *
 * The server runs as a real child process. For every case: an answer comes
 * (no hang), no 5xx except 503 (UNAVAILABLE), no gRPC/Connect code that maps
 * to 5xx except UNAVAILABLE (so no INTERNAL/UNKNOWN), and nothing internal in
 * headers, body or trailers (stack frames, file paths, Redis error text);
 * every few hundred cases and at the end a valid call still works and the
 * process is still alive.
 */
import http from "node:http";
import http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { codeFromString, codeToHttpStatus } from "@connectrpc/connect/protocol-connect";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReportType } from "../../gen/reports/v1/job_pb.js";
import {
  GetJobRequestSchema,
  ListJobsRequestSchema,
  SubmitReportRequestSchema,
  WatchJobRequestSchema,
} from "../../gen/reports/v1/report_service_pb.js";
import { reportClient } from "../helpers/clients.js";
import { killAllServices, type ServiceProcess, spawnService } from "../helpers/processes.js";
import { codeOf } from "../helpers/rpc.js";
import { testEnv } from "../helpers/test-app.js";

const apiKey = "fuzz-key-0123456789abcdef";
const service = "/reports.v1.ReportService/";
const methods = [
  "SubmitReport",
  "GetJob",
  "WatchJob",
  "CancelJob",
  "ListJobs",
  "RetryJob",
] as const;
type Method = (typeof methods)[number];
const streaming = (m: Method) => m === "WatchJob";
/** Cases per property; 7 properties. */
const runs = Number(process.env.FUZZ_RUNS ?? 500);
const seed = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);

/** What came back, whichever protocol. */
interface RawResponse {
  status: number;
  headers: Record<string, string>;
  trailers: Record<string, string>;
  body: Buffer;
}

/** One case: what to send. */
interface Case {
  method: Method;
  /** HTTP method. */
  verb: "POST" | "GET";
  path: string;
  headers: Record<string, string>;
  body: Uint8Array;
  transport: "h1" | "h2";
  protocol: "connect" | "grpc" | "grpc-web";
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

function flatten(h: http.IncomingHttpHeaders | http2.IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) {
    if (v !== undefined) out[k] = Array.isArray(v) ? v.join(", ") : String(v);
  }
  return out;
}

function sendH1(base: string, c: Case): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${base}${c.path}`,
      { method: c.verb, headers: c.headers, agent, timeout: 10_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (d: Buffer) => chunks.push(d));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: flatten(res.headers),
            trailers: flatten(res.trailers),
            body: Buffer.concat(chunks),
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error("no answer within 10 s")));
    req.on("error", reject);
    req.end(c.verb === "GET" ? undefined : Buffer.from(c.body));
  });
}

function sendH2(session: http2.ClientHttp2Session, c: Case): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const stream = session.request({
      ":method": c.verb,
      ":path": c.path,
      ...c.headers,
    });
    let headers: Record<string, string> = {};
    let trailers: Record<string, string> = {};
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), 10_000);
    stream.on("response", (h) => {
      headers = flatten(h);
    });
    stream.on("trailers", (t) => {
      trailers = flatten(t);
    });
    stream.on("data", (d: Buffer) => chunks.push(d));
    stream.on("end", () => {
      clearTimeout(timer);
      resolve({
        status: Number(headers[":status"] ?? 0),
        headers,
        trailers,
        body: Buffer.concat(chunks),
      });
    });
    stream.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    stream.end(c.verb === "GET" ? undefined : Buffer.from(c.body));
  });
}

/** Splits enveloped messages (5-byte prefix: flags, big-endian length); a torn tail is ignored. */
function envelopes(body: Buffer): Array<{ flags: number; data: Buffer }> {
  const out: Array<{ flags: number; data: Buffer }> = [];
  let at = 0;
  while (at + 5 <= body.length) {
    const flags = body[at] ?? 0;
    const len = body.readUInt32BE(at + 1);
    out.push({ flags, data: body.subarray(at + 5, at + 5 + len) });
    at += 5 + len;
  }
  return out;
}

function envelope(flags: number, data: Uint8Array): Uint8Array {
  const out = Buffer.alloc(5 + data.length);
  out[0] = flags;
  out.writeUInt32BE(data.length, 1);
  out.set(data, 5);
  return out;
}

/** The RPC status a response carries: a gRPC code number, a Connect code string, or undefined (success). */
function statusOf(c: Case, r: RawResponse): { code?: Code; raw?: string } {
  if (c.protocol === "grpc") {
    const s = r.trailers["grpc-status"] ?? r.headers["grpc-status"];
    return s === undefined ? { raw: "no grpc-status" } : { code: Number(s) as Code };
  }
  if (c.protocol === "grpc-web") {
    const s = r.headers["grpc-status"];
    if (s !== undefined) return { code: Number(s) as Code };
    const trailer = envelopes(r.body).find((e) => (e.flags & 0x80) !== 0);
    const m = /grpc-status:\s*(\d+)/i.exec(trailer?.data.toString("latin1") ?? "");
    return m ? { code: Number(m[1]) as Code } : { raw: "no grpc-status" };
  }
  const contentType = r.headers["content-type"] ?? "";
  if (contentType.startsWith("application/connect+")) {
    const end = envelopes(r.body).find((e) => (e.flags & 0x02) !== 0);
    if (end === undefined) return { raw: "no end-stream message" };
    const json = JSON.parse(end.data.toString("utf8")) as { error?: { code?: string } };
    if (json.error === undefined) return {};
    return { code: codeFromString(json.error.code ?? ""), raw: json.error.code };
  }
  if (r.status === 200) return {};
  if (contentType.startsWith("application/json")) {
    const json = JSON.parse(r.body.toString("utf8")) as { code?: string };
    return { code: codeFromString(json.code ?? ""), raw: json.code };
  }
  return {};
}

/** Internals that must never reach a caller (unless the caller sent them: echoed input is fine). */
const leakMarkers: Array<[string, RegExp]> = [
  ["stack frame", /\n\s+at [^\n]+/],
  ["stack frame", /\bat [\w.<>]+ \([^)]*:\d+:\d+\)/],
  ["file path", /\/(?:work|home|usr|tmp)\/[\w./-]+/],
  ["source file", /[\w-]+\.(?:ts|js|mjs|cjs):\d+/],
  ["node_modules", /node_modules/i],
  ["redis", /redis/i],
  ["ioredis", /ioredis/i],
  ["redis error", /\b(?:ERR|WRONGTYPE|NOSCRIPT|READONLY|LOADING|BUSY)\b/],
  ["error class", /\b(?:TypeError|RangeError|ReferenceError|SyntaxError|ReplyError)\b/],
  ["bullmq", /bullmq/i],
];

function decodeMaybe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** Why this answer is wrong, or undefined when it is fine. */
function problemWith(c: Case, r: RawResponse): string | undefined {
  if (r.status >= 500 && r.status !== 503) return `HTTP ${r.status}`;
  let status: { code?: Code; raw?: string };
  try {
    status = statusOf(c, r);
  } catch {
    return "unparseable error body";
  }
  if (status.raw !== undefined && status.code === undefined) return `status: ${status.raw}`;
  // grpc-status 0 is OK (not in the Code enum).
  if (status.code !== undefined && Number(status.code) !== 0 && status.code !== Code.Unavailable) {
    if (codeToHttpStatus(status.code) >= 500) return `code ${Code[status.code]}`;
  }
  const text = [
    ...Object.entries(r.headers).map(([k, v]) => `${k}: ${decodeMaybe(v)}`),
    ...Object.entries(r.trailers).map(([k, v]) => `${k}: ${decodeMaybe(v)}`),
    r.body.toString("latin1"),
    decodeMaybe(r.body.toString("latin1")),
  ].join("\n");
  const sent = `${c.path}\n${Object.values(c.headers).join("\n")}\n${Buffer.from(c.body).toString("latin1")}`;
  const echoed = (fragment: string) => {
    const f = fragment.trim().toLowerCase();
    return sent.toLowerCase().includes(f) || decodeMaybe(sent).toLowerCase().includes(f);
  };
  for (const [what, pattern] of leakMarkers) {
    const m = pattern.exec(text);
    // Echoing the caller's own input back (a job id "ERR", say) is not a leak.
    if (m && !echoed(m[0])) return `leaks ${what}: ${JSON.stringify(m[0])}`;
  }
  return undefined;
}

// ---- generators ----

const methodArb = fc.constantFrom(...methods);
const authArb = fc.oneof(
  { weight: 8, arbitrary: fc.constant<string | undefined>(`Bearer ${apiKey}`) },
  { weight: 1, arbitrary: fc.constant<string | undefined>(undefined) },
  { weight: 1, arbitrary: fc.stringMatching(/^[\x20-\x7e]{0,80}$/).map((s) => s.trim()) },
);
/** Values for any field: strings (job ids among them), numbers, JSON, enums. */
const fieldValue = fc.oneof(
  fc.string({ maxLength: 80 }),
  fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.jsonValue({ maxDepth: 4 }),
  fc.constantFrom(
    "REPORT_TYPE_WEEKLY",
    "REPORT_TYPE_CUSTOM",
    "JOB_STATE_FAILED",
    "JOB_PRIORITY_HIGH",
    "2026-01-01T00:00:00Z",
    "1732812345678-0",
    "9999999999999-99999999",
  ),
);
const fieldNames = [
  "jobId",
  "job_id",
  "userId",
  "reportType",
  "filters",
  "idempotencyKey",
  "afterEventId",
  "pageSize",
  "pageToken",
  "states",
  "priority",
  "runAt",
  "deadline",
  "reason",
] as const;
const structuredJson = fc
  .dictionary(fc.constantFrom(...fieldNames), fieldValue, { maxKeys: 6 })
  .map((o) => JSON.stringify(o));
const anyJson = fc.jsonValue({ maxDepth: 6 }).map((v) => JSON.stringify(v) ?? "null");
const jsonText = fc.oneof(structuredJson, anyJson, fc.string({ maxLength: 200 }));

/** Valid proto messages, to mutate. */
const validProto: Record<Method, Uint8Array> = {
  SubmitReport: toBinary(
    SubmitReportRequestSchema,
    create(SubmitReportRequestSchema, {
      userId: "fuzz",
      reportType: ReportType.WEEKLY,
      idempotencyKey: "k",
      filters: { a: 1, b: ["x", { c: null }] },
    }),
  ),
  GetJob: toBinary(
    GetJobRequestSchema,
    create(GetJobRequestSchema, { jobId: "AAAAAAAAAAAAAAAAAAAAAA" }),
  ),
  WatchJob: toBinary(
    WatchJobRequestSchema,
    create(WatchJobRequestSchema, { jobId: "AAAAAAAAAAAAAAAAAAAAAA", afterEventId: "1-0" }),
  ),
  CancelJob: toBinary(
    GetJobRequestSchema,
    create(GetJobRequestSchema, { jobId: "AAAAAAAAAAAAAAAAAAAAAA" }),
  ),
  ListJobs: toBinary(
    ListJobsRequestSchema,
    create(ListJobsRequestSchema, { pageSize: 5, pageToken: "x" }),
  ),
  RetryJob: toBinary(
    GetJobRequestSchema,
    create(GetJobRequestSchema, { jobId: "AAAAAAAAAAAAAAAAAAAAAA" }),
  ),
};
const mutation = fc.record({
  at: fc.nat(),
  bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }),
  kind: fc.constantFrom("overwrite", "insert", "truncate"),
});
function mutate(base: Uint8Array, muts: Array<{ at: number; bytes: Uint8Array; kind: string }>) {
  let out = Buffer.from(base);
  for (const m of muts) {
    const at = out.length === 0 ? 0 : m.at % out.length;
    if (m.kind === "truncate") out = out.subarray(0, at);
    else if (m.kind === "insert")
      out = Buffer.concat([out.subarray(0, at), m.bytes, out.subarray(at)]);
    else {
      out = Buffer.from(out);
      out.set(m.bytes.subarray(0, out.length - at), at);
    }
  }
  return new Uint8Array(out);
}
/** Proto-ish payloads for `method`: arbitrary bytes or a mutated valid message. */
const protoBytes = (method: Method) =>
  fc.oneof(
    fc.uint8Array({ maxLength: 300 }),
    fc.array(mutation, { minLength: 1, maxLength: 4 }).map((m) => mutate(validProto[method], m)),
  );
/** Framing for enveloped protocols: one well-formed envelope, random flags, a lying length, or none. */
const framing = fc.oneof(
  { weight: 5, arbitrary: fc.constant({ kind: "good" as const, flags: 0, extra: 0 }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("flags" as const),
      flags: fc.integer({ min: 0, max: 255 }),
      extra: fc.constant(0),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("length" as const),
      flags: fc.constant(0),
      extra: fc.integer({ min: -20, max: 2_000_000 }),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: "raw" as const, flags: 0, extra: 0 }) },
);
function frame(data: Uint8Array, f: { kind: string; flags: number; extra: number }): Uint8Array {
  if (f.kind === "raw") return data;
  const out = Buffer.from(envelope(f.flags, data));
  if (f.kind === "length") out.writeUInt32BE(Math.max(0, data.length + f.extra), 1);
  return out;
}
const utf8 = (s: string) => new TextEncoder().encode(s);

function headersFor(
  auth: string | undefined,
  contentType: string,
  extra: Record<string, string> = {},
) {
  return {
    "content-type": contentType,
    ...(auth === undefined ? {} : { authorization: auth }),
    ...extra,
  };
}

/** Connect unary POST (JSON or proto) and streaming (enveloped JSON or proto), HTTP/1.1 or 2. */
const connectCase: fc.Arbitrary<Case> = methodArb.chain((method) =>
  fc
    .record({
      auth: authArb,
      json: fc.boolean(),
      text: jsonText,
      bytes: protoBytes(method),
      raw: fc.uint8Array({ maxLength: 64 }),
      framing,
      transport: fc.constantFrom("h1" as const, "h2" as const),
      versionHeader: fc.boolean(),
    })
    .map((r) => {
      const codec = r.json ? "json" : "proto";
      const payload = r.json ? utf8(r.text) : r.bytes;
      const extra: Record<string, string> = r.versionHeader
        ? { "connect-protocol-version": "1" }
        : {};
      return streaming(method)
        ? {
            method,
            verb: "POST" as const,
            path: `${service}${method}`,
            headers: headersFor(r.auth, `application/connect+${codec}`, extra),
            body: frame(payload, r.framing),
            transport: r.transport,
            protocol: "connect" as const,
          }
        : {
            method,
            verb: "POST" as const,
            path: `${service}${method}`,
            headers: headersFor(r.auth, `application/${codec}`, extra),
            body: payload,
            transport: r.transport,
            protocol: "connect" as const,
          };
    }),
);

/** Connect GET (GetJob and ListJobs are NO_SIDE_EFFECTS), with arbitrary messages and query strings. */
const connectGetCase: fc.Arbitrary<Case> = fc
  .record({
    method: fc.constantFrom<Method>("GetJob", "ListJobs", "SubmitReport", "WatchJob"),
    auth: authArb,
    kind: fc.constantFrom("json", "proto", "query"),
    text: jsonText,
    bytes: fc.uint8Array({ maxLength: 200 }),
    query: fc.string({ maxLength: 120 }),
  })
  .map((r) => {
    const q =
      r.kind === "json"
        ? `connect=v1&encoding=json&message=${encodeURIComponent(r.text)}`
        : r.kind === "proto"
          ? `connect=v1&encoding=proto&base64=1&message=${Buffer.from(r.bytes).toString("base64url")}`
          : encodeURI(r.query).replace(/#/g, "%23");
    return {
      method: r.method,
      verb: "GET" as const,
      path: `${service}${r.method}?${q}`,
      headers: r.auth === undefined ? {} : ({ authorization: r.auth } as Record<string, string>),
      body: new Uint8Array(),
      transport: "h1" as const,
      protocol: "connect" as const,
    };
  });

/** gRPC over HTTP/2 and gRPC-Web over HTTP/1.1, proto or JSON codec, framed or not. */
const grpcCase = (protocol: "grpc" | "grpc-web"): fc.Arbitrary<Case> =>
  methodArb.chain((method) =>
    fc
      .record({
        auth: authArb,
        json: fc.oneof(
          { weight: 4, arbitrary: fc.constant(false) },
          { weight: 1, arbitrary: fc.constant(true) },
        ),
        text: jsonText,
        bytes: protoBytes(method),
        framing,
        bare: fc.boolean(),
      })
      .map((r) => {
        const payload = r.json ? utf8(r.text) : r.bytes;
        const codec = r.json ? "+json" : r.bare ? "" : "+proto";
        return {
          method,
          verb: "POST" as const,
          path: `${service}${method}`,
          headers: headersFor(
            r.auth,
            `application/${protocol}${codec}`,
            protocol === "grpc" ? { te: "trailers" } : { "x-grpc-web": "1" },
          ),
          body: frame(payload, r.framing),
          transport: protocol === "grpc" ? ("h2" as const) : ("h1" as const),
          protocol,
        };
      }),
  );

/** Arbitrary bytes as a JSON body of every method (invalid UTF-8, truncated JSON, anything). */
const jsonBytesCase: fc.Arbitrary<Case> = fc
  .record({ method: methodArb, auth: authArb, bytes: fc.uint8Array({ maxLength: 200 }) })
  .map((r) => ({
    method: r.method,
    verb: "POST" as const,
    path: `${service}${r.method}`,
    headers: headersFor(
      r.auth,
      streaming(r.method) ? "application/connect+json" : "application/json",
    ),
    body: streaming(r.method) ? envelope(0, r.bytes) : r.bytes,
    transport: "h1" as const,
    protocol: "connect" as const,
  }));

describe("the fuzzer's judge", () => {
  const c: Case = {
    method: "GetJob",
    verb: "POST",
    path: `${service}GetJob`,
    headers: { "content-type": "application/json" },
    body: utf8('{"jobId":"x"}'),
    transport: "h1",
    protocol: "connect",
  };
  const answer = (status: number, body: string): RawResponse => ({
    status,
    headers: { "content-type": "application/json" },
    trailers: {},
    body: Buffer.from(body),
  });

  it("flags 5xx, INTERNAL and leaked internals, and lets echoed input through", () => {
    expect(
      problemWith(c, answer(404, '{"code":"not_found","message":"job \\"x\\" not found"}')),
    ).toBe(undefined);
    expect(problemWith(c, answer(503, '{"code":"unavailable","message":"retry"}'))).toBe(undefined);
    expect(problemWith(c, answer(500, '{"code":"internal","message":"internal error"}'))).toBe(
      "HTTP 500",
    );
    expect(
      problemWith(c, answer(400, '{"code":"invalid_argument","message":"ReplyError: ERR wrong"}')),
    ).toMatch(/^leaks/);
    expect(
      problemWith(
        c,
        answer(400, '{"code":"invalid_argument","message":"x\\n    at fn (/work/src/a.ts:1:2)"}'),
      ),
    ).toMatch(/^leaks/);
    const echo = { ...c, body: utf8('{"jobId":"Redis"}') };
    expect(
      problemWith(echo, answer(404, '{"code":"not_found","message":"job \\"Redis\\" not found"}')),
    ).toBe(undefined);
  });
});

describe("fuzzing every method over every protocol", () => {
  let api: ServiceProcess;
  let session: http2.ClientHttp2Session;
  let cases = 0;

  const send = (c: Case) => (c.transport === "h2" ? sendH2(session, c) : sendH1(api.url, c));
  const stillServes = async () => {
    const client = reportClient("connect-binary", api.url, { apiKey });
    expect(await codeOf(client.getJob({ jobId: "AAAAAAAAAAAAAAAAAAAAAA" }))).toBe(Code.NotFound);
    expect(api.exit).toBeUndefined();
  };
  const property = (arb: fc.Arbitrary<Case>) =>
    fc.asyncProperty(arb, async (c) => {
      cases++;
      if (session.closed || session.destroyed) session = http2.connect(api.url);
      const r = await send(c);
      const problem = problemWith(c, r);
      if (problem !== undefined) {
        throw new Error(
          `${problem}\nanswer: ${r.status} ${JSON.stringify(r.headers)} ${JSON.stringify(r.trailers)} ${r.body.toString("latin1").slice(0, 500)}`,
        );
      }
    });
  const check = async (arb: fc.Arbitrary<Case>) => {
    await fc.assert(property(arb), { numRuns: runs, seed, endOnFailure: true });
    await stillServes();
  };

  beforeAll(async () => {
    api = await spawnService(
      "api",
      testEnv({ API_KEYS: `fuzz:${apiKey}`, READ_MAX_BYTES: "65536", LOG_LEVEL: "warn" }),
    );
    session = http2.connect(api.url);
    session.on("error", () => undefined);
  });
  afterAll(async () => {
    session?.close();
    agent.destroy();
    await killAllServices();
  });

  it(
    "Connect (JSON and proto, unary and streaming, HTTP/1.1 and HTTP/2)",
    () => check(connectCase),
    120_000,
  );
  it("Connect GET with arbitrary messages and query strings", () => check(connectGetCase), 120_000);
  it("gRPC over HTTP/2", () => check(grpcCase("grpc")), 120_000);
  it("gRPC-Web over HTTP/1.1", () => check(grpcCase("grpc-web")), 120_000);
  it("arbitrary bytes as JSON bodies", () => check(jsonBytesCase), 120_000);
  it("arbitrary structured JSON on the plain HTTP submit route", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          jsonText,
          fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString("latin1")),
        ),
        authArb,
        async (text, auth) => {
          cases++;
          const c: Case = {
            method: "SubmitReport",
            verb: "POST",
            path: "/v1/reports",
            headers: headersFor(auth, "application/json"),
            body: Buffer.from(text, "latin1"),
            transport: "h1",
            protocol: "connect",
          };
          const r = await send(c);
          const problem = problemWith(c, r);
          if (problem !== undefined)
            throw new Error(`${problem}: ${r.status} ${r.body.toString("latin1").slice(0, 300)}`);
        },
      ),
      { numRuns: runs, seed, endOnFailure: true },
    );
    await stillServes();
  }, 120_000);

  it("ran thousands of cases and the server is still up", async () => {
    expect(cases).toBeGreaterThanOrEqual(6 * runs);
    await stillServes();
    expect(api.stderr).not.toMatch(/uncaught|unhandled|fatal/i);
  });
});
