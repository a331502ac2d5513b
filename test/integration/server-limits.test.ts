/**
 * The dual-protocol server's own protections, over real sockets, with a
 * plain handler (no Connect, no auth): whatever the handler, a peer cannot
 * hold a connection without showing its protocol, trickle headers or a body,
 * keep an idle session, open more connections than its share, or keep a
 * stream forever; and long responses are never cut by the request timeout.
 */
import http from "node:http";
import http2 from "node:http2";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { createDualServer, type DualServer, type ServerLimits } from "../../src/api/server.js";
import type { ServerMetrics, ServerTimeout } from "../../src/api/server-metrics.js";
import { type RawConnection, rawConnection } from "../helpers/raw-connection.js";
import { waitFor } from "../helpers/wait-for.js";

/** What the server counted: refusals and timeouts by kind. */
function recordingMetrics() {
  const timeouts: ServerTimeout[] = [];
  const refusals: string[] = [];
  const metrics: ServerMetrics = {
    refused: (reason) => refusals.push(reason),
    streamRefused: (reason) => refusals.push(reason),
    timedOut: (timeout) => timeouts.push(timeout),
    observe: () => () => undefined,
  };
  const count = (list: string[], value: string) => list.filter((x) => x === value).length;
  return { metrics, timeouts, refusals, count };
}

/** Body bytes each path's handler has read, by path. */
const bodyBytes = new Map<string, number>();

/**
 * /hang: reads the body, never answers. /stream: answers at once and writes
 * "tick" every 50 ms until the client leaves. /read: reads the body to its
 * end, then answers "ok". Anything else: "ok" at once.
 */
function handler(req: http.IncomingMessage | http2.Http2ServerRequest, res: unknown): void {
  const out = res as http.ServerResponse;
  const path = req.url ?? "/";
  req.on("data", (chunk: Buffer) => bodyBytes.set(path, (bodyBytes.get(path) ?? 0) + chunk.length));
  if (path === "/hang") return;
  if (path === "/stream") {
    out.writeHead(200, { "content-type": "text/plain" });
    const timer = setInterval(() => out.write("tick\n"), 50);
    out.on("close", () => clearInterval(timer));
    return;
  }
  if (path === "/read" || path === "/bidi") {
    req.on("end", () => out.end("ok"));
    return;
  }
  out.end("ok");
}

describe("createDualServer() limits", () => {
  let server: DualServer | undefined;
  const open: RawConnection[] = [];
  const sessions: http2.ClientHttp2Session[] = [];
  afterEach(async () => {
    for (const c of open.splice(0)) c.destroy();
    for (const s of sessions.splice(0)) s.destroy();
    await server?.close(500);
    server = undefined;
    bodyBytes.clear();
  });

  async function start(limits: Partial<ServerLimits>) {
    const rec = recordingMetrics();
    server = createDualServer(handler, {
      keepaliveMs: 30_000,
      logger: pino({ level: "silent" }),
      limits,
      streamingRequestPaths: new Set(["/bidi"]),
      metrics: rec.metrics,
    });
    const { port } = await server.listen(0, "127.0.0.1");
    return { url: `http://127.0.0.1:${port}`, ...rec };
  }
  async function raw(url: string, localAddress?: string) {
    const c = await rawConnection(url, { localAddress });
    open.push(c);
    return c;
  }
  function h2(url: string, settings: http2.Settings = {}) {
    const s = http2.connect(url, { settings });
    s.on("error", () => undefined);
    sessions.push(s);
    return s;
  }
  /** GET `path` over HTTP/1.1 from 127.0.0.1 on a fresh connection: status and body. */
  function get(url: string, path = "/"): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = http.get(`${url}${path}`, { agent: false }, (res) => {
        let body = "";
        res.on("data", (c: Buffer) => {
          body += c.toString();
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on("error", reject);
    });
  }
  /** Writes one byte every 50 ms until the connection closes. */
  function trickle(write: (b: string) => void, isClosed: () => boolean) {
    const timer = setInterval(() => (isClosed() ? clearInterval(timer) : write("x")), 50);
    return () => clearInterval(timer);
  }

  it("closes a connection that sends nothing, or only part of the HTTP/2 connection preface, at the handshake timeout", async () => {
    const { url, count, timeouts } = await start({ handshakeTimeoutMs: 300 });
    const silent = await raw(url);
    const partial = await raw(url);
    partial.write("PRI * HTTP/2.0\r\n");
    // The magic of the preface, but never the SETTINGS frame that completes it.
    const magic = await raw(url);
    magic.write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    const slow = await raw(url);
    // The whole preface, one byte every 50 ms: 1.2 s, longer than the timeout.
    const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let sent = 0;
    const timer = setInterval(() => slow.write(preface[sent++] ?? ""), 50);
    try {
      await waitFor(() => silent.closed && partial.closed && magic.closed && slow.closed, {
        timeoutMs: 5000,
        what: "the four connections to be closed",
      });
    } finally {
      clearInterval(timer);
    }
    for (const c of [silent, partial, slow]) {
      expect(c.openForMs).toBeGreaterThanOrEqual(250);
      expect(c.openForMs).toBeLessThan(3000);
      expect(c.received).toBe("");
    }
    // The HTTP/2 server had answered with its own SETTINGS.
    expect(magic.openForMs).toBeGreaterThanOrEqual(250);
    expect(magic.openForMs).toBeLessThan(3000);
    expect(count(timeouts, "handshake")).toBe(4);
    expect(await get(url)).toEqual({ status: 200, body: "ok" });
  });

  it("answers 408 deadline_exceeded to HTTP/1.1 headers that do not arrive in time, a partial request line included", async () => {
    const { url, count, timeouts } = await start({ headersTimeoutMs: 300, requestTimeoutMs: 3000 });
    const line = await raw(url);
    line.write("GET /partial-requ");
    const headers = await raw(url);
    headers.write("GET / HTTP/1.1\r\nhost: x\r\n");
    const stop = trickle(
      (b) => headers.write(`x-${b}: 1\r\n`),
      () => headers.closed,
    );
    try {
      await waitFor(() => line.closed && headers.closed, { timeoutMs: 5000, what: "both closed" });
    } finally {
      stop();
    }
    for (const c of [line, headers]) {
      expect(c.received).toMatch(/^HTTP\/1\.1 408 /);
      expect(c.received).toContain('"code":"deadline_exceeded"');
      expect(c.received).toContain("request not received in full within 300 ms");
      expect(c.openForMs).toBeLessThan(1500);
    }
    expect(count(timeouts, "headers")).toBe(2);
  });

  it("cuts a trickled HTTP/1.1 body at the request timeout, in the caller's protocol", async () => {
    const { url, count, timeouts } = await start({ headersTimeoutMs: 200, requestTimeoutMs: 600 });
    const connect = await raw(url);
    connect.write(
      "POST /read HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n",
    );
    const grpcWeb = await raw(url);
    grpcWeb.write(
      "POST /read HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc-web+proto\r\ncontent-length: 1000\r\n\r\n",
    );
    const stops = [connect, grpcWeb].map((c) =>
      trickle(
        (b) => c.write(b),
        () => c.closed,
      ),
    );
    try {
      await waitFor(() => connect.closed && grpcWeb.closed, {
        timeoutMs: 5000,
        what: "both closed",
      });
    } finally {
      for (const stop of stops) stop();
    }
    expect(connect.received).toMatch(/^HTTP\/1\.1 408 /);
    expect(connect.received).toContain(
      '{"code":"deadline_exceeded","message":"request not received in full within 600 ms"}',
    );
    expect(grpcWeb.received).toMatch(/^HTTP\/1\.1 200 /);
    expect(grpcWeb.received).toContain("grpc-status: 4\r\n");
    for (const c of [connect, grpcWeb]) {
      expect(c.openForMs).toBeGreaterThanOrEqual(500);
      expect(c.openForMs).toBeLessThan(3000);
    }
    // The handler saw part of the body, never all of it.
    expect(bodyBytes.get("/read") ?? 0).toBeLessThan(2000);
    expect(count(timeouts, "request")).toBe(2);
  });

  it("closes a connection still trickling a body its handler has answered, without a second answer", async () => {
    const { url, count, timeouts } = await start({ headersTimeoutMs: 200, requestTimeoutMs: 600 });
    const c = await raw(url);
    c.write(
      "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n",
    );
    const stop = trickle(
      (b) => c.write(b),
      () => c.closed,
    );
    try {
      await waitFor(() => c.closed, { timeoutMs: 5000, what: "the connection closed" });
    } finally {
      stop();
    }
    expect(c.received).toMatch(/^HTTP\/1\.1 200 /);
    expect(c.received.match(/HTTP\/1\.1 /g)).toHaveLength(1);
    expect(count(timeouts, "request")).toBe(1);
  });

  it("cuts a trickled HTTP/2 body at the request timeout, except on streaming-request paths", async () => {
    const { url, count, timeouts } = await start({ requestTimeoutMs: 500 });
    const session = h2(url);
    const trickled = (path: string, contentType: string) => {
      const stream = session.request({
        ":method": "POST",
        ":path": path,
        "content-type": contentType,
      });
      stream.on("error", () => undefined);
      let headers: http2.IncomingHttpHeaders | undefined;
      let body = "";
      stream.on("response", (h) => {
        headers = h;
      });
      stream.on("data", (c: Buffer) => {
        body += c.toString();
      });
      const stop = trickle(
        (b) => stream.write(b),
        () => stream.closed || stream.destroyed,
      );
      return {
        stream,
        stop,
        get headers() {
          return headers;
        },
        get body() {
          return body;
        },
      };
    };
    const grpc = trickled("/read", "application/grpc+proto");
    const json = trickled("/read", "application/json");
    const bidi = trickled("/bidi", "application/grpc+proto");
    try {
      await waitFor(() => grpc.stream.closed && json.stream.closed, {
        timeoutMs: 5000,
        what: "both unary streams closed",
      });
      expect(grpc.headers?.[":status"]).toBe(200);
      expect(grpc.headers?.["grpc-status"]).toBe("4");
      expect(decodeURIComponent(String(grpc.headers?.["grpc-message"]))).toBe(
        "request not received in full within 500 ms",
      );
      // Answered, then told to stop sending without error.
      expect(grpc.stream.rstCode).toBe(http2.constants.NGHTTP2_NO_ERROR);
      expect(json.stream.rstCode).toBe(http2.constants.NGHTTP2_NO_ERROR);
      expect(json.headers?.[":status"]).toBe(408);
      expect(JSON.parse(json.body)).toEqual({
        code: "deadline_exceeded",
        message: "request not received in full within 500 ms",
      });
      // The bidi stream keeps receiving long after: 30 bytes at 50 ms each is 1.5 s.
      await waitFor(() => (bodyBytes.get("/bidi") ?? 0) >= 30, {
        timeoutMs: 10_000,
        what: "30 bytes of the bidi stream",
      });
      expect(bidi.stream.closed).toBe(false);
      expect(count(timeouts, "request")).toBe(2);
      // The session itself is fine: a request whose body arrives at once is answered.
      const ok = session.request({ ":method": "POST", ":path": "/read" });
      ok.end("done");
      const status = await new Promise((resolve) =>
        ok.once("response", (h) => resolve(h[":status"])),
      );
      expect(status).toBe(200);
    } finally {
      for (const t of [grpc, json, bidi]) t.stop();
    }
  });

  it("resets a timed-out HTTP/2 stream whose answer the client's flow control holds back", async () => {
    const { url, count, timeouts } = await start({ requestTimeoutMs: 300 });
    // A window of 0: the server may send headers, never a body.
    const stream = h2(url, { initialWindowSize: 0 }).request({
      ":method": "POST",
      ":path": "/read",
      "content-type": "application/json",
    });
    stream.on("error", () => undefined);
    stream.write("x");
    await waitFor(() => stream.closed, { timeoutMs: 5000, what: "the stream reset" });
    expect(stream.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
    expect(count(timeouts, "request")).toBe(1);
  });

  it("never cuts a long response with the request timeout, on HTTP/1.1 or HTTP/2", async () => {
    const { url, timeouts } = await start({ headersTimeoutMs: 100, requestTimeoutMs: 200 });
    let h1Ticks = 0;
    const h1 = http.request(`${url}/stream`, { method: "POST", agent: false }, (res) =>
      res.on("data", (c: Buffer) => {
        h1Ticks += c.toString().split("tick").length - 1;
      }),
    );
    h1.on("error", () => undefined);
    h1.end("a body, sent at once");
    let h2Ticks = 0;
    const stream = h2(url).request({ ":method": "POST", ":path": "/stream" });
    stream.on("error", () => undefined);
    stream.on("data", (c: Buffer) => {
      h2Ticks += c.toString().split("tick").length - 1;
    });
    stream.end("a body, sent at once");
    try {
      // 20 ticks at 50 ms: a second, five times the request timeout.
      await waitFor(() => h1Ticks >= 20 && h2Ticks >= 20, {
        timeoutMs: 10_000,
        what: "20 ticks on both responses",
      });
      expect(timeouts).toEqual([]);
    } finally {
      h1.destroy();
      stream.close();
    }
  });

  it("closes an HTTP/2 session without streams after the idle timeout, never one with an open stream", async () => {
    const { url, count, timeouts } = await start({ http2IdleTimeoutMs: 300 });
    const idle = h2(url);
    let idleGoaway: number | undefined;
    idle.on("goaway", (code) => {
      idleGoaway = code;
    });
    const busy = h2(url);
    let ticks = 0;
    const stream = busy.request({ ":path": "/stream" });
    stream.on("data", () => ticks++);
    stream.on("error", () => undefined);
    await waitFor(() => idle.closed || idle.destroyed, { timeoutMs: 5000, what: "idle closed" });
    expect(idleGoaway).toBe(http2.constants.NGHTTP2_NO_ERROR);
    // 20 ticks: a second, over three idle timeouts, with the busy session still open.
    await waitFor(() => ticks >= 20, { timeoutMs: 10_000, what: "20 ticks" });
    expect(busy.closed || busy.destroyed).toBe(false);
    expect(count(timeouts, "http2_idle")).toBe(1);
    stream.close();
    // Its last stream gone, the busy session idles out too.
    await waitFor(() => busy.closed || busy.destroyed, { timeoutMs: 5000, what: "busy closed" });
    expect(count(timeouts, "http2_idle")).toBe(2);
  });

  it("closes an idle HTTP/1.1 keep-alive connection after its timeout", async () => {
    const { url } = await start({ http1KeepAliveTimeoutMs: 300 });
    const c = await raw(url);
    c.write("GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    await waitFor(() => c.closed, { timeoutMs: 5000, what: "the keep-alive connection closed" });
    expect(c.received).toMatch(/^HTTP\/1\.1 200 /);
    expect(c.openForMs).toBeGreaterThanOrEqual(250);
    expect(c.openForMs).toBeLessThan(3000);
  });

  it("closes connections beyond the per-address cap at once, and still serves other addresses", async () => {
    const { url, count, refusals } = await start({ maxConnectionsPerAddress: 5 });
    const flood = await Promise.all(Array.from({ length: 12 }, () => raw(url, "127.0.0.2")));
    await waitFor(() => flood.filter((c) => c.closed).length === 7, {
      timeoutMs: 5000,
      what: "7 of 12 connections closed",
    });
    for (const c of flood.filter((x) => x.closed)) expect(c.openForMs).toBeLessThan(1000);
    expect(server?.connections).toBe(5);
    expect(count(refusals, "max_connections_per_address")).toBe(7);
    // 127.0.0.1 has its own share.
    expect(await get(url)).toEqual({ status: 200, body: "ok" });
    // A closed connection frees its slot.
    flood.find((c) => !c.closed)?.destroy();
    await waitFor(() => server?.connections === 4, { what: "4 connections" });
    const again = await raw(url, "127.0.0.2");
    again.write("GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    await waitFor(() => again.received.startsWith("HTTP/1.1 200"), { what: "an answer" });
  });

  it("closes connections beyond the total cap at once, and serves again below it", async () => {
    const { url, count, refusals } = await start({
      maxConnections: 5,
      maxConnectionsPerAddress: 0,
    });
    const held = await Promise.all(Array.from({ length: 5 }, () => raw(url, "127.0.0.2")));
    await waitFor(() => server?.connections === 5, { what: "5 connections" });
    const extra = await raw(url, "127.0.0.3");
    await waitFor(() => extra.closed, { timeoutMs: 5000, what: "the sixth connection closed" });
    expect(count(refusals, "max_connections")).toBe(1);
    for (const c of held) expect(c.closed).toBe(false);
    held[0]?.destroy();
    await waitFor(() => server?.connections === 4, { what: "4 connections" });
    expect(await get(url)).toEqual({ status: 200, body: "ok" });
  });

  it("answers UNAVAILABLE, before the handler, to streams beyond the per-address and total stream caps", async () => {
    const { url, count, refusals } = await start({ maxStreamsPerAddress: 3, maxStreams: 5 });
    const session = h2(url);
    const hang = () => {
      const s = session.request({ ":method": "POST", ":path": "/hang" });
      s.on("error", () => undefined);
      s.write("x");
      return s;
    };
    const held = [hang(), hang(), hang()];
    await waitFor(() => (bodyBytes.get("/hang") ?? 0) === 3, { what: "3 streams at the handler" });
    // The fourth stream from 127.0.0.1, in gRPC and over HTTP/1.1 in Connect JSON.
    const fourth = session.request({
      ":method": "POST",
      ":path": "/read",
      "content-type": "application/grpc",
    });
    fourth.on("error", () => undefined);
    fourth.end("x");
    const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) =>
      fourth.once("response", resolve),
    );
    expect(headers["grpc-status"]).toBe("14");
    expect(decodeURIComponent(String(headers["grpc-message"]))).toBe(
      "too many open streams from your address on this server (3); retry later",
    );
    // A refused stream whose body is still coming is told to stop (RST_STREAM NO_ERROR).
    const sending = session.request({
      ":method": "POST",
      ":path": "/read",
      "content-type": "application/grpc",
    });
    sending.on("error", () => undefined);
    sending.write("x");
    await waitFor(() => sending.closed, { timeoutMs: 5000, what: "the refused stream closed" });
    expect(sending.rstCode).toBe(http2.constants.NGHTTP2_NO_ERROR);
    // Nor does a client that never lets the answer through (window 0) keep a refused stream.
    const stuck = h2(url, { initialWindowSize: 0 }).request({ ":path": "/read" });
    stuck.on("error", () => undefined);
    await waitFor(() => stuck.closed, { timeoutMs: 5000, what: "the held-back refusal reset" });
    expect(stuck.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
    const h1 = await raw(url);
    h1.write("GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    await waitFor(() => h1.received.includes("retry later"), { what: "the HTTP/1.1 answer" });
    expect(h1.received).toMatch(/^HTTP\/1\.1 503 /);
    expect(h1.received).toContain('"code":"unavailable"');
    expect(count(refusals, "max_streams_per_address")).toBe(4);
    expect(bodyBytes.get("/read")).toBeUndefined(); // the handler never saw them

    // Another address has its own share, up to the total of 5.
    const other = await Promise.all([
      raw(url, "127.0.0.2"),
      raw(url, "127.0.0.2"),
      raw(url, "127.0.0.2"),
    ]);
    for (const c of other) c.write("GET /hang HTTP/1.1\r\nhost: x\r\n\r\n");
    await waitFor(() => other.some((c) => c.received.includes("503")), { what: "the total cap" });
    expect(other.filter((c) => c.received.includes("503"))).toHaveLength(1);
    expect(count(refusals, "max_streams")).toBe(1);

    // A stream that ends frees its place.
    held[0]?.close();
    await waitFor(async () => (await get(url)).status === 200, { what: "a free place" });
  });

  it("ends a stream or response that outlives the lifetime backstop", async () => {
    const { url, count, timeouts } = await start({ streamMaxLifetimeMs: 400 });
    const stream = h2(url).request({ ":path": "/hang" });
    stream.on("error", () => undefined);
    const h1 = await raw(url);
    h1.write("GET /hang HTTP/1.1\r\nhost: x\r\n\r\n");
    await waitFor(() => stream.closed && h1.closed, { timeoutMs: 5000, what: "both ended" });
    expect(stream.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
    expect(h1.openForMs).toBeGreaterThanOrEqual(350);
    expect(count(timeouts, "stream_max_duration")).toBe(2);
  });

  it("sends GOAWAY to a session that resets streams in a flood (rapid reset), and serves new sessions", async () => {
    const { url } = await start({});
    const session = h2(url);
    await new Promise((resolve) => session.once("connect", resolve));
    let goaway: number | undefined;
    session.on("goaway", (code) => {
      goaway = code;
    });
    let resets = 0;
    for (let i = 0; i < 5000 && !session.closed && !session.destroyed; i++) {
      const s = session.request({ ":method": "POST", ":path": "/hang" });
      s.on("error", () => undefined);
      s.close(http2.constants.NGHTTP2_CANCEL);
      resets++;
      // Let the frames go out (and GOAWAY come in) every hundred streams.
      if (i % 100 === 99) await new Promise((resolve) => setImmediate(resolve));
    }
    await waitFor(() => session.closed || session.destroyed, {
      timeoutMs: 10_000,
      what: "the flooding session closed",
    });
    expect(goaway).toBeDefined();
    expect(goaway).not.toBe(http2.constants.NGHTTP2_NO_ERROR);
    expect(resets).toBeLessThan(5000);
    const fresh = h2(url).request({ ":path": "/" });
    const status = await new Promise((resolve) =>
      fresh.once("response", (h) => resolve(h[":status"])),
    );
    expect(status).toBe(200);
  });
});
