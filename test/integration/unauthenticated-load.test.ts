// Telemetry first: the SDK (and its Prometheus reader) must be registered before the app loads.
import "../helpers/telemetry.js";
import { setMaxListeners } from "node:events";
/**
 * Issue 12, item 6: nothing unauthenticated can exhaust the API port. The
 * real app, with API keys, under what a peer without a key can do: many idle
 * sockets, a half-sent preface, a trickled body, thousands of Health/Watch
 * streams, idle HTTP/2 sessions. Each time the server sheds them and a
 * normal call still answers. And the limits never cut a legitimate long
 * stream: a WatchJob (every protocol) or the SSE route outlives the request
 * timeout many times over.
 */
import http2 from "node:http2";
import net from "node:net";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import {
  ServerReflection,
  type ServerReflectionRequest,
} from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { ReportType } from "../../gen/reports/v1/job_pb.js";
import { type Protocol, reportClient } from "../helpers/clients.js";
import { sample } from "../helpers/prometheus.js";
import { type RawConnection, rawConnection } from "../helpers/raw-connection.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const apiKey = "0123456789abcdef01234567";
const withKey = { API_KEYS: `acme:${apiKey}` };

/** Ends (with its error) when `iterable` ends; calls `onMessage` for each message. */
async function consume<T>(
  iterable: AsyncIterable<T>,
  onMessage: (m: T) => void,
): Promise<ConnectError | undefined> {
  try {
    for await (const m of iterable) onMessage(m);
    return undefined;
  } catch (err) {
    return ConnectError.from(err);
  }
}

describe("the API port under unauthenticated load", () => {
  let t: TestApp | undefined;
  const open: RawConnection[] = [];
  const cleanups: (() => void)[] = [];
  afterEach(async () => {
    for (const c of open.splice(0)) c.destroy();
    for (const f of cleanups.splice(0)) f();
    await t?.close();
    t = undefined;
  });
  async function start(env: Record<string, string>, mode: "api" | "all" = "all") {
    t = await startTestApp({ ...withKey, ...env }, { mode });
    return t;
  }
  async function raw(url: string, localAddress?: string) {
    const c = await rawConnection(url, { localAddress });
    open.push(c);
    return c;
  }
  /** A SubmitReport with the key, over `protocol`: the normal call that must still answer. */
  async function normalCall(url: string, protocol: Protocol = "grpc") {
    const client = reportClient(protocol, url, { apiKey });
    const { jobId } = await client.submitReport({ userId: "u", reportType: ReportType.WEEKLY });
    const { job } = await client.getJob({ jobId });
    return job?.id;
  }

  it("sheds idle sockets beyond the per-address cap, counts them, and still answers a normal call", async () => {
    const app = await start({ MAX_CONNECTIONS_PER_ADDRESS: "50", HANDSHAKE_TIMEOUT_MS: "60000" });
    const flood = await Promise.all(Array.from({ length: 120 }, () => raw(app.url, "127.0.0.2")));
    await waitFor(() => flood.filter((c) => c.closed).length === 70, {
      what: "70 of 120 idle sockets closed",
    });
    const metrics = await (await fetch(`${app.metricsUrl}/metrics`)).text();
    expect(sample(metrics, "reports_server_connections_open", {})).toBe(50);
    // 127.0.0.1 is another address: its calls are served.
    expect(await normalCall(app.url)).toBeDefined();
    expect(await normalCall(app.url, "connect-json")).toBeDefined();
    expect(
      sample(metrics, "reports_server_connections_refused_total", {
        reason: "max_connections_per_address",
      }),
    ).toBe(70);
  });

  it("holds at most MAX_STREAMS_PER_ADDRESS streams of a peer without a key, and still answers a normal call", async () => {
    const app = await start({ MAX_STREAMS_PER_ADDRESS: "50", REQUEST_TIMEOUT_MS: "60000" });
    const { hostname, port } = new URL(app.url);
    // Two connections from 127.0.0.2, 60 never-ending unary requests each.
    const statuses: (string | undefined)[] = [];
    for (let c = 0; c < 2; c++) {
      const session = http2.connect(app.url, {
        createConnection: () =>
          net.connect({ host: hostname, port: Number(port), localAddress: "127.0.0.2" }),
      });
      session.on("error", () => undefined);
      cleanups.push(() => session.destroy());
      for (let i = 0; i < 60; i++) {
        const stream = session.request({
          ":method": "POST",
          ":path": "/reports.v1.ReportService/SubmitReport",
          "content-type": "application/grpc",
        });
        stream.on("error", () => undefined);
        stream.on("response", (h) => statuses.push(h["grpc-status"] as string | undefined));
        stream.write(Buffer.from([0, 0, 0, 1, 0])); // a 256-byte message announced, never sent
      }
    }
    await waitFor(() => statuses.length === 70, { what: "70 streams answered" });
    expect(statuses.every((s) => s === String(Code.Unavailable))).toBe(true);
    const metrics = await (await fetch(`${app.metricsUrl}/metrics`)).text();
    expect(sample(metrics, "reports_server_streams_open", {})).toBe(50);
    expect(
      sample(metrics, "reports_server_streams_refused_total", {
        reason: "max_streams_per_address",
      }),
    ).toBe(70);
    expect(await normalCall(app.url)).toBeDefined();
    expect(await normalCall(app.url, "connect-json")).toBeDefined();
  });

  it("closes a half-sent HTTP/2 preface at the handshake timeout and still answers a normal call", async () => {
    const app = await start({ HANDSHAKE_TIMEOUT_MS: "300" });
    const half = await raw(app.url);
    half.write("PRI * HTTP/2.0\r\n\r\n");
    const silent = await raw(app.url);
    await waitFor(() => half.closed && silent.closed, { what: "both closed" });
    for (const c of [half, silent]) {
      expect(c.openForMs).toBeGreaterThanOrEqual(250);
      expect(c.openForMs).toBeLessThan(5000);
    }
    expect(await normalCall(app.url)).toBeDefined();
    const metrics = await (await fetch(`${app.metricsUrl}/metrics`)).text();
    expect(sample(metrics, "reports_server_timeouts_total", { timeout: "handshake" })).toBe(2);
  });

  it("cuts a trickled unary body before authentication runs, on HTTP/1.1 and HTTP/2", async () => {
    const app = await start({ HEADERS_TIMEOUT_MS: "200", REQUEST_TIMEOUT_MS: "600" });
    const path = "/reports.v1.ReportService/SubmitReport";
    // HTTP/1.1, Connect JSON, no key: the body never completes.
    const h1 = await raw(app.url);
    h1.write(
      `POST ${path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{"userId":"`,
    );
    const h1Timer = setInterval(() => h1.write("x"), 50);
    cleanups.push(() => clearInterval(h1Timer));
    // HTTP/2, gRPC, no key.
    const session = http2.connect(app.url);
    session.on("error", () => undefined);
    cleanups.push(() => session.destroy());
    const stream = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
    });
    stream.on("error", () => undefined);
    let h2Headers: http2.IncomingHttpHeaders | undefined;
    stream.on("response", (h) => {
      h2Headers = h;
    });
    stream.write(Buffer.from([0, 0, 0, 1, 0])); // a 256-byte message announced, then a trickle
    const h2Timer = setInterval(() => {
      if (!stream.closed) stream.write(Buffer.from([0x0a]));
    }, 50);
    cleanups.push(() => clearInterval(h2Timer));

    await waitFor(() => h1.closed && stream.closed, { what: "both requests cut" });
    expect(h1.received).toMatch(/^HTTP\/1\.1 408 /);
    expect(h1.received).toContain(
      '{"code":"deadline_exceeded","message":"request not received in full within 600 ms"}',
    );
    expect(h1.openForMs).toBeLessThan(3000);
    expect(h2Headers?.["grpc-status"]).toBe(String(Code.DeadlineExceeded));
    // Not UNAUTHENTICATED: the cut came first, whatever the handler would have said.
    expect(h1.received).not.toContain("unauthenticated");
    expect(await normalCall(app.url)).toBeDefined();
    expect(await normalCall(app.url, "connect-json")).toBeDefined();
  });

  it("bounds thousands of open Health/Watch streams, and still answers Check and a normal call", {
    timeout: 120_000,
  }, async () => {
    // HEALTH_MAX_WATCHES at its default (1000); two HTTP/2 connections, as two load balancers would.
    const app = await start({});
    const stop = new AbortController();
    setMaxListeners(0, stop.signal);
    cleanups.push(() => stop.abort());
    const healthClient = () => createClient(Health, createGrpcTransport({ baseUrl: app.url }));
    const clients = [healthClient(), healthClient()] as const;
    let serving = 0;
    const watches = Array.from({ length: 2000 }, (_, i) => {
      let first = true;
      const client = i % 2 === 0 ? clients[0] : clients[1];
      return consume(client.watch({ service: "" }, { signal: stop.signal }), () => {
        if (first) serving++;
        first = false;
      });
    });
    const refused: ConnectError[] = [];
    for (const w of watches) void w.then((err) => err && refused.push(err));
    await waitFor(() => serving + refused.length === 2000, {
      timeoutMs: 60_000,
      what: "every watch answered or refused",
    });
    expect(serving).toBe(1000);
    expect(refused).toHaveLength(1000);
    for (const err of refused) {
      expect(err.code).toBe(Code.ResourceExhausted);
      expect(err.rawMessage).toBe(
        "too many open health watches on this server (1000); retry later",
      );
    }
    const check = await clients[0].check({ service: "" });
    expect(check.status).toBe(1); // SERVING
    expect(await normalCall(app.url)).toBeDefined();
    // Once they end, their slots are free again.
    stop.abort();
    await Promise.all(watches);
    const again = new AbortController();
    let answered = false;
    const end = await consume(clients[1].watch({ service: "" }, { signal: again.signal }), () => {
      answered = true;
      again.abort();
    });
    expect(answered).toBe(true);
    expect(end?.code).toBe(Code.Canceled);
  });

  it("ends Health/Watch and reflection streams at STREAM_MAX_DURATION_MS with UNAVAILABLE, and caps reflection streams", async () => {
    const app = await start({ STREAM_MAX_DURATION_MS: "400", REFLECTION_MAX_STREAMS: "2" });
    const transport = createGrpcTransport({ baseUrl: app.url });
    const began = Date.now();
    let statuses = 0;
    const health = await consume(createClient(Health, transport).watch({ service: "" }), () => {
      statuses++;
    });
    expect(health?.code).toBe(Code.Unavailable);
    expect(health?.rawMessage).toBe(
      "health watch reached its maximum duration (400 ms); open a new one",
    );
    expect(statuses).toBe(1);
    expect(Date.now() - began).toBeGreaterThanOrEqual(350);

    // Reflection: two streams that ask nothing further are open; a third is refused;
    // the two end at their maximum duration.
    const reflection = createClient(ServerReflection, transport);
    const stalls: (() => void)[] = [];
    const stalled = (): AsyncIterable<ServerReflectionRequest> => ({
      async *[Symbol.asyncIterator]() {
        yield {
          $typeName: "grpc.reflection.v1.ServerReflectionRequest",
          host: "",
          messageRequest: { case: "listServices", value: "" },
        };
        await new Promise<void>((resolve) => stalls.push(resolve));
      },
    });
    cleanups.push(() => {
      for (const s of stalls) s();
    });
    let answers = 0;
    const first = consume(reflection.serverReflectionInfo(stalled()), () => answers++);
    const second = consume(reflection.serverReflectionInfo(stalled()), () => answers++);
    await waitFor(() => answers === 2, { what: "both reflection streams answered" });
    const third = await consume(reflection.serverReflectionInfo(stalled()), () => undefined);
    expect(third?.code).toBe(Code.ResourceExhausted);
    for (const err of await Promise.all([first, second])) {
      expect(err?.code).toBe(Code.Unavailable);
      expect(err?.rawMessage).toBe(
        "reflection stream reached its maximum duration (400 ms); open a new one",
      );
    }
  });

  it("ends WatchJob and the SSE route at WATCH_MAX_DURATION_MS with UNAVAILABLE", async () => {
    // API only: nothing runs the job, so only the maximum duration ends the streams.
    const app = await start({ WATCH_MAX_DURATION_MS: "1000" }, "api");
    const client = reportClient("grpc", app.url, { apiKey });
    const { jobId } = await client.submitReport({ userId: "u", reportType: ReportType.WEEKLY });
    const began = Date.now();
    const sse = fetch(`${app.url}/v1/jobs/${jobId}/events`, {
      headers: { authorization: `Bearer ${apiKey}` },
    }).then((res) => res.text());
    const rpc = await consume(client.watchJob({ jobId }), () => undefined);
    expect(rpc?.code).toBe(Code.Unavailable);
    expect(rpc?.rawMessage).toMatch(/maximum duration \(1000 ms\)/);
    const body = await sse;
    expect(body).toMatch(
      /event: error\ndata: \{"code":"unavailable","message":"[^"]*maximum duration/,
    );
    expect(Date.now() - began).toBeGreaterThanOrEqual(950);
  });

  it("closes an idle HTTP/2 session after HTTP2_IDLE_TIMEOUT_MS, and the client reconnects for the next call", async () => {
    const app = await start({ HTTP2_IDLE_TIMEOUT_MS: "300" });
    const session = http2.connect(app.url);
    session.on("error", () => undefined);
    cleanups.push(() => session.destroy());
    let goaway: number | undefined;
    session.on("goaway", (code) => {
      goaway = code;
    });
    await waitFor(() => session.closed || session.destroyed, { what: "the idle session closed" });
    expect(goaway).toBe(http2.constants.NGHTTP2_NO_ERROR);
    // A connect-node client whose session idled out opens a new one. (Wait for the
    // server to have closed it: a request crossing the GOAWAY would be refused.)
    const client = reportClient("grpc", app.url, { apiKey });
    const { jobId } = await client.submitReport({ userId: "u", reportType: ReportType.WEEKLY });
    await waitFor(
      async () => {
        const metrics = await (await fetch(`${app.metricsUrl}/metrics`)).text();
        return (
          sample(metrics, "reports_server_timeouts_total", { timeout: "http2_idle" }) === 2 &&
          sample(metrics, "reports_server_connections_open", {}) === 0
        );
      },
      { what: "the client's session to idle out too" },
    );
    expect((await client.getJob({ jobId })).job?.id).toBe(jobId);
  });

  it("never cuts a long WatchJob (Connect and gRPC-Web over HTTP/1.1, gRPC) or SSE stream with the request timeout", async () => {
    // API only: nothing runs the job, so every watch stays open, with a keepalive every 100 ms.
    const app = await start(
      { HEADERS_TIMEOUT_MS: "100", REQUEST_TIMEOUT_MS: "200", WATCH_KEEPALIVE_MS: "100" },
      "api",
    );
    const { jobId } = await reportClient("grpc", app.url, { apiKey }).submitReport({
      userId: "u",
      reportType: ReportType.WEEKLY,
    });
    const stop = new AbortController();
    cleanups.push(() => stop.abort());
    const keepalives: Record<string, number> = {};
    const ends: Promise<ConnectError | undefined>[] = [];
    for (const protocol of ["connect-json", "grpc-web", "grpc"] as const) {
      keepalives[protocol] = 0;
      ends.push(
        consume(
          reportClient(protocol, app.url, { apiKey }).watchJob({ jobId }, { signal: stop.signal }),
          (res) => {
            if (res.event === undefined) keepalives[protocol] = (keepalives[protocol] ?? 0) + 1;
          },
        ),
      );
    }
    keepalives.sse = 0;
    const sse = await fetch(`${app.url}/v1/jobs/${jobId}/events`, {
      headers: { authorization: `Bearer ${apiKey}` },
      signal: stop.signal,
    });
    expect(sse.status).toBe(200);
    ends.push(
      (async () => {
        const decoder = new TextDecoder();
        try {
          const reader = sse.body?.getReader();
          for (let r = await reader?.read(); r && !r.done; r = await reader?.read()) {
            keepalives.sse =
              (keepalives.sse ?? 0) + (decoder.decode(r.value).split(": keepalive").length - 1);
          }
        } catch {
          // Aborted at the end.
        }
        return undefined;
      })(),
    );
    // Ten keepalives 100 ms apart: a second, five times the request timeout.
    await waitFor(() => Object.values(keepalives).every((n) => n >= 10), {
      what: `10 keepalives on every stream (${JSON.stringify(keepalives)})`,
    });
    stop.abort();
    for (const err of await Promise.all(ends)) {
      expect(err === undefined || err.code === Code.Canceled).toBe(true);
    }
  });
});
