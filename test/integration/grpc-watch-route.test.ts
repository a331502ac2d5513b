/**
 * WatchJob over gRPC on the raw HTTP/2 stream (grpc-watch-route.ts), seen
 * from a raw HTTP/2 client that never cancels on its own: what the server
 * itself answers for a caller's deadline, and that it is what connect-node
 * answers.
 */
import http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobEventType, ReportType } from "../../gen/reports/v1/job_pb.js";
import {
  WatchJobRequestSchema,
  WatchJobResponseSchema,
} from "../../gen/reports/v1/report_service_pb.js";
import { reportClient } from "../helpers/clients.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

/** One gRPC WatchJob call with `headers`: its messages, response headers and trailers. */
function watch(
  url: string,
  jobId: string,
  headers: http2.OutgoingHttpHeaders = {},
  send?: (stream: http2.ClientHttp2Stream, frame: Buffer) => void,
) {
  return new Promise<{
    events: JobEventType[];
    headers: http2.IncomingHttpHeaders;
    trailers: http2.IncomingHttpHeaders;
  }>((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const stream = session.request({
      ":method": "POST",
      ":path": "/reports.v1.ReportService/WatchJob",
      "content-type": "application/grpc",
      te: "trailers",
      ...headers,
    });
    let got: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const events: JobEventType[] = [];
    let buf = Buffer.alloc(0);
    stream.on("response", (h) => {
      got = h;
    });
    stream.on("trailers", (t) => {
      trailers = t;
    });
    stream.on("data", (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(1)) {
        const len = buf.readUInt32BE(1);
        const msg = fromBinary(WatchJobResponseSchema, buf.subarray(5, 5 + len));
        if (msg.event) events.push(msg.event.type);
        buf = buf.subarray(5 + len);
      }
    });
    stream.on("end", () => {
      // Destroyed, not closed: a request still being sent would hold the session.
      session.destroy();
      resolve({ events, headers: got, trailers });
    });
    stream.on("error", reject);
    const msg = toBinary(WatchJobRequestSchema, create(WatchJobRequestSchema, { jobId }));
    const frame = Buffer.alloc(5 + msg.length);
    frame.writeUInt32BE(msg.length, 1);
    frame.set(msg, 5);
    if (send) send(stream, frame);
    else stream.end(frame);
  });
}

describe("WatchJob over gRPC (raw HTTP/2 route)", () => {
  let t: TestApp;
  let jobId: string;
  beforeAll(async () => {
    // API only: nothing runs the job, so only a deadline ends the watch.
    t = await startTestApp(
      { MAX_TIMEOUT_MS: "60000", CORS_ORIGINS: "https://app.example" },
      { mode: "api" },
    );
    const client = reportClient("grpc", t.url);
    ({ jobId } = await client.submitReport({ userId: "u", reportType: ReportType.WEEKLY }));
  });
  afterAll(async () => {
    await t.close();
  });

  it("ends the watch itself at the caller's grpc-timeout with DEADLINE_EXCEEDED", async () => {
    const began = Date.now();
    const res = await watch(t.url, jobId, { "grpc-timeout": "300m" });
    expect(Date.now() - began).toBeGreaterThanOrEqual(250);
    expect(res.headers["content-type"]).toBe("application/grpc+proto");
    expect(res.events).toEqual([JobEventType.QUEUED]);
    expect(res.trailers["grpc-status"]).toBe("4");
    expect(decodeURIComponent(String(res.trailers["grpc-message"]))).toBe(
      "the operation timed out",
    );
    await waitFor(() => t.app.hub?.listenerCount === 0, { what: "the hub to drop the watch" });
  });

  it("sends every watcher of a finished job its signed download link", async () => {
    const all = await startTestApp();
    try {
      const client = reportClient("grpc", all.url);
      const { jobId: done } = await client.submitReport({
        userId: "u",
        reportType: ReportType.WEEKLY,
      });
      const links = await Promise.all(
        [1, 2, 3].map(async () => {
          let url = "";
          for await (const res of client.watchJob({ jobId: done })) {
            if (res.event?.type === JobEventType.SUCCEEDED)
              url = res.event.result?.downloadUrl ?? "";
          }
          return url;
        }),
      );
      expect(links[0]).toMatch(/\?expires=\d+&signature=[A-Za-z0-9_-]{43}$/);
      expect(new Set(links).size).toBe(1);
      expect((await fetch(links[0] as string)).status).toBe(200);
    } finally {
      await all.close();
    }
  });

  it("answers with connect-node's headers (Vary: Origin, as CORS_ORIGINS lists origins)", async () => {
    const route = await watch(t.url, jobId, { "grpc-timeout": "100m" });
    // A compressed-request header sends the watch to connect-node, whose answer it leaves as is.
    const connect = await watch(t.url, jobId, {
      "grpc-timeout": "100m",
      "grpc-encoding": "gzip",
      "grpc-accept-encoding": "identity",
    });
    const { date: _a, ...routeHeaders } = route.headers;
    const { date: _b, ...connectHeaders } = connect.headers;
    expect(routeHeaders).toEqual(connectHeaders);
    expect(routeHeaders.vary).toBe("Origin");
    expect(route.trailers).toEqual(connect.trailers);
  });

  it("leaves a request with an Origin to connect-node, behind CORS", async () => {
    const res = await watch(t.url, jobId, {
      "grpc-timeout": "200m",
      origin: "https://app.example",
    });
    expect(res.headers["access-control-allow-origin"]).toBe("https://app.example");
    expect(res.events).toEqual([JobEventType.QUEUED]);
    expect(res.trailers["grpc-status"]).toBe("4");
  });

  it("reads a request message that arrives a byte at a time", async () => {
    const res = await watch(t.url, jobId, { "grpc-timeout": "500m" }, (stream, frame) => {
      let i = 0;
      const next = () => {
        if (i < frame.length) stream.write(frame.subarray(i, ++i), () => setImmediate(next));
        else stream.end();
      };
      next();
    });
    expect(res.events).toEqual([JobEventType.QUEUED]);
    expect(res.trailers["grpc-status"]).toBe("4");
  });

  it("refuses a request message over READ_MAX_BYTES from its prefix, as connect-node does", async () => {
    const res = await watch(t.url, jobId, {}, (stream) => {
      const prefix = Buffer.alloc(5);
      prefix.writeUInt32BE(t.config.api.readMaxBytes + 1, 1);
      // Only the prefix: the answer comes before the message would.
      stream.write(prefix);
    });
    expect(res.trailers["grpc-status"]).toBe("8");
    expect(decodeURIComponent(String(res.trailers["grpc-message"]))).toBe(
      `message size ${t.config.api.readMaxBytes + 1} is larger than configured readMaxBytes ${t.config.api.readMaxBytes}`,
    );
  });

  it("answers a malformed or too long grpc-timeout with INVALID_ARGUMENT, as connect-node does", async () => {
    const bad = await watch(t.url, jobId, { "grpc-timeout": "soon" });
    expect(bad.events).toEqual([]);
    expect(bad.trailers["grpc-status"]).toBe("3");
    expect(decodeURIComponent(String(bad.trailers["grpc-message"]))).toBe(
      "protocol error: invalid grpc timeout value: soon",
    );
    const long = await watch(t.url, jobId, { "grpc-timeout": "2H" });
    expect(long.trailers["grpc-status"]).toBe("3");
    expect(decodeURIComponent(String(long.trailers["grpc-message"]))).toBe(
      "timeout 7200000ms must be <= 60000",
    );
  });
});
