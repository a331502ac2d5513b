/**
 * The lean unary route (src/api/lean-unary.ts) answers SubmitReport and
 * GetJob over Connect JSON exactly as connect does: each request is sent
 * twice on raw HTTP/1.1, once as the lean route takes it and once with a
 * `connect-timeout-ms` header (which changes nothing in connect's answer but
 * sends the request to connect), and the answers are compared byte for byte
 * (all but the Date header).
 */
import net from "node:net";
import { gunzipSync } from "node:zlib";
import { create, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GetJobRequestSchema } from "../../gen/reports/v1/report_service_pb.js";
import { leanUnaryServed } from "../../src/api/lean-unary.js";
import { capturedLogger } from "../helpers/captured-logger.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

const apiKey = "k-lean-unary-test";
const readMaxBytes = 4096;
const auth = `Bearer ${apiKey}`;

/** Sends raw bytes on a new connection; answers everything read until the server closes it. */
function raw(url: string, bytes: string | Buffer): Promise<Buffer> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => socket.write(bytes));
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("close", () => resolve(Buffer.concat(chunks)));
    socket.on("error", reject);
  });
}

interface Req {
  method?: "POST" | "GET";
  path: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  /** Sends the body chunked (in two chunks), without Content-Length, as connect-node's client does. */
  chunked?: boolean;
}

function requestText(r: Req, extra: Record<string, string>): Buffer {
  const body = Buffer.from(r.body ?? "");
  const headers: Record<string, string> = {
    host: "localhost",
    connection: "close",
    ...(r.method === "GET" ? {} : { "content-type": "application/json" }),
    ...r.headers,
    ...extra,
  };
  let payload = body;
  if (r.chunked) {
    headers["transfer-encoding"] = "chunked";
    const half = Math.floor(body.length / 2);
    const chunk = (b: Buffer) =>
      b.length === 0 ? [] : [Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from("\r\n")];
    payload = Buffer.concat([
      ...chunk(body.subarray(0, half)),
      ...chunk(body.subarray(half)),
      Buffer.from("0\r\n\r\n"),
    ]);
  } else if (r.method !== "GET") headers["content-length"] = String(body.length);
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`);
  return Buffer.concat([
    Buffer.from(`${r.method ?? "POST"} ${r.path} HTTP/1.1\r\n${lines.join("")}\r\n`, "latin1"),
    payload,
  ]);
}

/** The answer without its Date header. */
function normalized(answer: Buffer): string {
  return answer.toString("latin1").replace(/\r\ndate: [^\r]*/i, "");
}

describe("lean unary route", () => {
  let t: TestApp;
  const url = () => t.url;

  /** The lean answer and connect's, and whether the lean route took the first one. */
  async function both(r: Req): Promise<{ lean: string; connect: string; tookLean: boolean }> {
    const before = leanUnaryServed.count;
    const lean = normalized(await raw(url(), requestText(r, {})));
    const tookLean = leanUnaryServed.count === before + 1;
    const mid = leanUnaryServed.count;
    const connect = normalized(await raw(url(), requestText(r, { "connect-timeout-ms": "60000" })));
    expect(leanUnaryServed.count, "connect-timeout-ms goes to connect").toBe(mid);
    return { lean, connect, tookLean };
  }

  async function expectSame(r: Req, status: RegExp): Promise<string> {
    const { lean, connect, tookLean } = await both(r);
    expect(tookLean).toBe(true);
    expect(lean).toMatch(status);
    expect(lean).toBe(connect);
    return lean;
  }

  const submitBody = (extra: Record<string, unknown> = {}) =>
    JSON.stringify({
      reportType: "REPORT_TYPE_WEEKLY",
      userId: "u-1",
      ...extra,
    });
  const submit = (body: string, key?: string): Req => ({
    path: "/reports.v1.ReportService/SubmitReport",
    headers: { authorization: auth, ...(key ? { "idempotency-key": key } : {}) },
    body,
  });

  let jobId = "";
  const captured = capturedLogger("info");

  beforeAll(async () => {
    // API only: no worker moves the job between the two answers compared.
    t = await startTestApp(
      { API_KEYS: `acme:${apiKey}`, READ_MAX_BYTES: String(readMaxBytes) },
      { mode: "api", logger: captured.logger },
    );
  });
  afterAll(async () => {
    await t?.close();
  });

  it("answers a fresh submit as connect does (ids and times aside)", async () => {
    const before = leanUnaryServed.count;
    const lean = normalized(await raw(url(), requestText(submit(submitBody(), "lean-a"), {})));
    expect(leanUnaryServed.count).toBe(before + 1);
    const connect = normalized(
      await raw(
        url(),
        requestText(submit(submitBody(), "lean-b"), { "connect-timeout-ms": "60000" }),
      ),
    );
    const split = (a: string) => {
      const [head, body] = a.split("\r\n\r\n") as [string, string];
      return { head: head.replace(/content-length: \d+/i, ""), body: JSON.parse(body) };
    };
    const l = split(lean);
    const c = split(connect);
    expect(l.head).toBe(c.head);
    expect(l.head).toMatch(/^HTTP\/1\.1 200 OK/);
    jobId = l.body.jobId;
    const mask = (o: Record<string, unknown>) =>
      JSON.parse(
        JSON.stringify(o)
          .replaceAll(o.jobId as string, "ID")
          .replace(/"\d{4}-\d\d-\d\dT[^"]*"/g, '"TIME"'),
      );
    expect(mask(l.body)).toEqual(mask(c.body));
    // false: left out of the JSON, as proto3 leaves defaults out.
    expect(l.body.deduplicated).toBeUndefined();
  });

  it("answers a deduplicated submit byte for byte as connect", async () => {
    const answer = await expectSame(submit(submitBody(), "lean-a"), /^HTTP\/1\.1 200 OK/);
    expect(answer).toContain('"deduplicated":true');
  });

  it("answers GetJob (POST and GET, unknown fields ignored) byte for byte as connect", async () => {
    expect(jobId).not.toBe("");
    const get: Req = {
      path: "/reports.v1.ReportService/GetJob",
      headers: { authorization: auth },
      body: JSON.stringify({ jobId }),
    };
    await expectSame(get, /^HTTP\/1\.1 200 OK/);
    await expectSame(
      { ...get, body: JSON.stringify({ jobId, noSuchField: 1 }) },
      /^HTTP\/1\.1 200/,
    );
    const message = encodeURIComponent(JSON.stringify({ jobId }));
    await expectSame(
      {
        method: "GET",
        path: `/reports.v1.ReportService/GetJob?connect=v1&encoding=json&message=${message}`,
        headers: { authorization: auth },
      },
      /^HTTP\/1\.1 200 OK/,
    );
  });

  it("answers binary (application/proto, GET encoding=proto) and chunked requests byte for byte as connect", async () => {
    const getBinary = toBinary(GetJobRequestSchema, create(GetJobRequestSchema, { jobId }));
    const proto = { authorization: auth, "content-type": "application/proto" };
    const get = { path: "/reports.v1.ReportService/GetJob", headers: proto, body: getBinary };
    const answer = await expectSame(get, /^HTTP\/1\.1 200 OK/);
    expect(answer).toContain("content-type: application/proto");
    await expectSame({ ...get, chunked: true }, /^HTTP\/1\.1 200 OK/);
    const message = encodeURIComponent(Buffer.from(getBinary).toString("base64url"));
    await expectSame(
      {
        method: "GET",
        path: `/reports.v1.ReportService/GetJob?connect=v1&encoding=proto&base64=1&message=${message}`,
        headers: { authorization: auth },
      },
      /^HTTP\/1\.1 200 OK/,
    );
    // Not protobuf; a deduplicated submit, chunked JSON.
    await expectSame({ ...get, body: Buffer.from([0xff, 0xff, 0xff]) }, /^HTTP\/1\.1 400 /);
    await expectSame({ ...submit(submitBody(), "lean-a"), chunked: true }, /^HTTP\/1\.1 200 OK/);
    // A chunked body over readMaxBytes: connect's RESOURCE_EXHAUSTED.
    await expectSame(
      { ...submit(submitBody({ filters: { note: "x".repeat(readMaxBytes) } })), chunked: true },
      /^HTTP\/1\.1 429 /,
    );
  });

  it("compresses as connect does when the client accepts gzip", async () => {
    // A job's answer is over compressMinBytes (1 KiB) only with long filters.
    const long = submitBody({ filters: { note: "x".repeat(1200) } });
    await raw(url(), requestText(submit(long, "lean-long"), {}));
    const { lean, connect, tookLean } = await both({
      ...submit(long, "lean-long"),
      headers: { authorization: auth, "idempotency-key": "lean-long", "accept-encoding": "gzip" },
    });
    expect(tookLean).toBe(true);
    expect(lean).toBe(connect);
    expect(lean).toMatch(/content-encoding: gzip/i);
    const body = Buffer.from(lean.split("\r\n\r\n")[1] as string, "latin1");
    expect(gunzipSync(body).toString()).toContain('"deduplicated":true');
  });

  it("answers errors byte for byte as connect: validation, auth, NOT_FOUND, bad JSON, wrong field type", async () => {
    // Validation (INVALID_ARGUMENT with details).
    await expectSame(submit(submitBody({ userId: "" }), "lean-v"), /^HTTP\/1\.1 400 /);
    // No key, a wrong key (UNAUTHENTICATED, with its WWW-Authenticate header).
    const noKey = await expectSame({ ...submit(submitBody()), headers: {} }, /^HTTP\/1\.1 401 /);
    expect(noKey.toLowerCase()).toContain("www-authenticate");
    await expectSame(
      { ...submit(submitBody()), headers: { authorization: "Bearer wrong" } },
      /^HTTP\/1\.1 401 /,
    );
    // NOT_FOUND.
    await expectSame(
      {
        path: "/reports.v1.ReportService/GetJob",
        headers: { authorization: auth },
        body: JSON.stringify({ jobId: "no-such-job" }),
      },
      /^HTTP\/1\.1 404 /,
    );
    // Not JSON; a field of the wrong type; an empty body; an empty GET message.
    await expectSame(submit("{", "lean-j"), /^HTTP\/1\.1 400 /);
    await expectSame(submit('{"userId": 5}', "lean-t"), /^HTTP\/1\.1 400 /);
    await expectSame(submit("", "lean-e"), /^HTTP\/1\.1 400 /);
    await expectSame(
      {
        method: "GET",
        path: "/reports.v1.ReportService/GetJob?connect=v1&encoding=json",
        headers: { authorization: auth },
      },
      /^HTTP\/1\.1 400 /,
    );
  });

  it("writes the request log line connect's interceptors write (ok, refused, NOT_FOUND)", async () => {
    const requests: Req[] = [
      submit(submitBody(), "lean-a"),
      { ...submit(submitBody()), headers: {} },
      {
        path: "/reports.v1.ReportService/GetJob",
        headers: { authorization: auth },
        body: JSON.stringify({ jobId: "no-such-job" }),
      },
    ];
    for (const r of requests) {
      const from = captured.lines.length;
      await both(r);
      const lines = captured.lines
        .slice(from)
        .filter((l) => l.msg === "rpc" || l.msg === "rpc failed");
      expect(lines).toHaveLength(2);
      const [lean, connect] = lines.map(
        ({ time: _t, duration_ms: _d, trace_id: _ti, span_id: _s, trace_flags: _f, ...rest }) =>
          rest,
      );
      expect(lean).toEqual(connect);
      expect(lean).toMatchObject({ rpc: expect.stringMatching(/^reports\.v1\.ReportService\//) });
    }
  });

  it("leaves other requests to connect: wrong content type, SubmitReport as GET, compressed bodies", async () => {
    const others: Req[] = [
      { ...submit(submitBody()), headers: { authorization: auth, "content-type": "text/plain" } },
      { ...submit(submitBody()), headers: { authorization: auth, origin: "http://x.test" } },
      {
        method: "GET" as const,
        path: "/reports.v1.ReportService/SubmitReport?connect=v1&encoding=json&message=%7B%7D",
        headers: { authorization: auth },
      },
      {
        ...submit(submitBody()),
        headers: { authorization: auth, "content-encoding": "gzip" },
      },
    ];
    for (const r of others) {
      const { lean, connect, tookLean } = await both(r);
      expect(tookLean).toBe(false);
      // Both connect's answers (a submit without key makes a new job each time).
      expect(lean.split("\r\n")[0]).toBe(connect.split("\r\n")[0]);
    }
  });
});
