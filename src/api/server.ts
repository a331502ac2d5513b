/**
 * One port, every protocol: a TCP server that looks at each connection's
 * first bytes and hands it to an HTTP/2 server (h2c, for gRPC and Connect
 * over HTTP/2) when they are the HTTP/2 preface, or to an HTTP/1.1 server
 * (Connect JSON, gRPC-Web, curl) otherwise. Node's `allowHTTP1` only works
 * under TLS (ALPN), hence the sniffing. Both servers share one handler.
 *
 * Nothing a peer does before it is authenticated (the handler authenticates)
 * can hold the server's resources for long: every protection here works at
 * the connection, session or stream level, whatever the handler.
 *
 * - Connections: at most `maxConnections` open, and `maxConnectionsPerAddress`
 *   per remote address (IPv6: per /64); more are closed at accept.
 * - Streams (HTTP/2 streams and HTTP/1.1 requests, headers to end of
 *   response): at most `maxStreams` open, and `maxStreamsPerAddress` per
 *   address; more are answered UNAVAILABLE before they reach the handler.
 *   Connections times streams per connection is no bound at all, so this is
 *   what bounds the memory a peer can make the server hold.
 * - A new connection must show its protocol within `handshakeTimeoutMs`:
 *   the whole HTTP/2 connection preface (the magic and a SETTINGS frame), or
 *   any other first byte (HTTP/1.1, whose headers timeout then applies).
 * - HTTP/1.1: a request's headers within `headersTimeoutMs`, the whole
 *   request (headers and body) within `requestTimeoutMs`; an idle keep-alive
 *   connection closes after `http1KeepAliveTimeoutMs`. Node's requestTimeout
 *   covers receiving the request only, so a long response (a watch) is never cut.
 * - HTTP/2: a session without streams for `http2IdleTimeoutMs` is closed
 *   (GOAWAY); at most `http2MaxConcurrentStreams` streams per session and
 *   `http2MaxSessionMemoryMb` of nghttp2 memory; a request (headers and body)
 *   within `requestTimeoutMs`, except on `streamingRequestPaths`
 *   (client-streaming and bidi methods, bounded by their own maximum duration);
 *   PINGs every `keepaliveMs`, and a session that does not answer is closed.
 *   Rapid reset (CVE-2023-44487) is nghttp2's own defence: a session
 *   resetting more than 1000 streams at once, then 33 per second, gets
 *   GOAWAY (INTERNAL_ERROR); Node 20 does not make it configurable.
 * - Every stream and HTTP/1.1 response ends after `streamMaxLifetimeMs`,
 *   a backstop behind the handler's own (clean) limits.
 */
import { EventEmitter } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import type { ApiConfig } from "../config/config.js";
import { createAddressLimiter } from "./address-limiter.js";
import type { NodeHandler } from "./node-types.js";
import {
  http1Bytes,
  overCapAnswer,
  requestTimeoutAnswer,
  type ServerAnswer,
} from "./server-answers.js";
import {
  createRateLimitedLog,
  createServerMetrics,
  type RefusalReason,
  type ServerMetrics,
  type ServerTimeout,
  type StreamRefusalReason,
} from "./server-metrics.js";

type Handler = NodeHandler;

/** What both protocols' responses offer for an answer written before the handler. */
interface AnswerTarget {
  writeHead(status: number, headers: Record<string, string>): unknown;
  end(body: string): unknown;
  once(event: "close", listener: () => void): unknown;
}

/** The server's resource limits (see the module comment): the api config's, and a lifetime backstop. */
export type ServerLimits = Pick<
  ApiConfig,
  | "handshakeTimeoutMs"
  | "headersTimeoutMs"
  | "requestTimeoutMs"
  | "http1KeepAliveTimeoutMs"
  | "http2IdleTimeoutMs"
  | "http2MaxConcurrentStreams"
  | "http2MaxSessionMemoryMb"
  | "maxConnections"
  | "maxConnectionsPerAddress"
  | "maxStreams"
  | "maxStreamsPerAddress"
> & {
  /** Hard cap on the life of any stream or HTTP/1.1 response, in ms. */
  streamMaxLifetimeMs: number;
};

/** Limits used when `ServerOptions.limits` leaves one out (the config's defaults). */
export const defaultServerLimits: ServerLimits = {
  handshakeTimeoutMs: 10_000,
  headersTimeoutMs: 15_000,
  requestTimeoutMs: 30_000,
  http1KeepAliveTimeoutMs: 65_000,
  http2IdleTimeoutMs: 1_200_000,
  http2MaxConcurrentStreams: 2_500,
  http2MaxSessionMemoryMb: 64,
  maxConnections: 20_000,
  maxConnectionsPerAddress: 1_000,
  maxStreams: 20_000,
  maxStreamsPerAddress: 10_000,
  streamMaxLifetimeMs: 3_660_000,
};

/** Listening options. */
export interface ServerOptions {
  /** HTTP/2 PING interval; a connection that does not answer within it is closed. */
  keepaliveMs: number;
  logger: Logger;
  /** Resource limits; each one left out takes its default. */
  limits?: Partial<ServerLimits>;
  /**
   * Request paths (`/package.Service/Method`) whose request is a stream
   * (client-streaming and bidi methods): their body may take longer than
   * `requestTimeoutMs` on HTTP/2.
   */
  streamingRequestPaths?: ReadonlySet<string>;
  /** Where refusals and timeouts are counted (the global meter's by default). */
  metrics?: ServerMetrics;
  /**
   * HTTP/1.1 requests (by request target) that are dispatched beneath any
   * instrumentation patched into `http.Server` (OpenTelemetry's HTTP
   * instrumentation wraps its `emit`): RPCs, which the RPC interceptor
   * traces. Even a request that instrumentation ignores costs a context and
   * a patched emitter.
   */
  uninstrumented?: (url: string) => boolean;
  /**
   * HTTP/2 streams one of these routes accepts (the first that does) are
   * served on the raw stream, without the compatibility API and the handler
   * (the stream caps and timeouts still apply).
   */
  rawStreamRoutes?: readonly RawStreamRoute[];
}

/** A route served on the raw HTTP/2 stream, ahead of the compatibility API and the handler. */
export interface RawStreamRoute {
  /** Whether this route serves a stream with these request headers (nothing is read yet). */
  accepts(headers: http2.IncomingHttpHeaders): boolean;
  /**
   * Serves the stream; it owns it from now on, and calls `closed` once when
   * the stream has closed (it frees the stream's slot under the caps).
   */
  serve(
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    closed: () => void,
  ): void;
}

/** The server; not listening until `listen`. */
export interface DualServer {
  listen(port: number, host: string): Promise<net.AddressInfo>;
  /** Stops accepting, ends idle connections, and destroys the rest after `deadlineMs`. */
  close(deadlineMs: number): Promise<void>;
  /** Open connections (both protocols). */
  readonly connections: number;
}

const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** How long a session that got GOAWAY for idleness may take to close before it is destroyed. */
const goawayGraceMs = 5_000;
/** How long an answer the server writes itself may take to flush before its stream is reset. */
const answerGraceMs = 1_000;

/**
 * Writes `answer` on a stream the handler does not own, then resets it:
 * RST_STREAM(NO_ERROR) once the answer is out ("stop sending, no error",
 * RFC 9113 8.1), or CANCEL after `answerGraceMs` if the client's flow
 * control holds the answer back, so the stream never outlives its answer.
 */
function answerAndReset(stream: http2.ServerHttp2Stream, answer: ServerAnswer): void {
  const reset = (code: number) => {
    if (!stream.closed && !stream.destroyed) stream.close(code);
  };
  const fallback = setTimeout(() => reset(http2.constants.NGHTTP2_CANCEL), answerGraceMs);
  fallback.unref();
  stream.once("close", () => clearTimeout(fallback));
  stream.once("finish", () => reset(http2.constants.NGHTTP2_NO_ERROR));
  try {
    stream.respond(
      { ":status": answer.status, ...answer.headers },
      { endStream: answer.body === "" },
    );
    if (answer.body !== "") stream.end(answer.body);
  } catch {
    reset(http2.constants.NGHTTP2_CANCEL);
  }
}

/** Creates the dual-protocol server around `handler`. */
export function createDualServer(handler: Handler, options: ServerOptions): DualServer {
  const { logger } = options;
  const merged: ServerLimits = { ...defaultServerLimits, ...options.limits };
  // Node refuses a headers timeout longer than the request timeout.
  const limits = {
    ...merged,
    headersTimeoutMs: Math.min(merged.headersTimeoutMs, merged.requestTimeoutMs),
  };
  const streamingPaths = options.streamingRequestPaths ?? new Set<string>();
  const metrics = options.metrics ?? createServerMetrics();
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  const perAddress = createAddressLimiter(limits.maxConnectionsPerAddress);
  const logRefusal = createRateLimitedLog(logger, 10_000);
  const logTimeout = createRateLimitedLog(logger, 10_000);
  const refuse = (reason: RefusalReason, remoteAddress: string | undefined) => {
    metrics.refused(reason);
    logRefusal({ reason, remoteAddress }, "connection refused");
  };
  const timedOut = (timeout: ServerTimeout, remoteAddress: string | undefined) => {
    metrics.timedOut(timeout);
    logTimeout({ timeout, remoteAddress }, "connection or stream closed by a server timeout");
  };
  const refuseStream = (reason: StreamRefusalReason, remoteAddress: string | undefined) => {
    metrics.streamRefused(reason);
    logRefusal({ reason, remoteAddress }, "stream refused");
  };

  // Open streams: HTTP/2 streams and HTTP/1.1 requests, from their headers
  // to the end of their response, all addresses together and per address.
  let openStreams = 0;
  const streamsByAddress = createAddressLimiter(limits.maxStreamsPerAddress);
  /**
   * Takes one of the open-stream slots for a stream from `remoteAddress`:
   * its release, or the answer to send instead when the caps are reached.
   */
  const takeStreamSlot = (
    remoteAddress: string | undefined,
    contentType: string | undefined,
  ): (() => void) | ServerAnswer => {
    const release =
      openStreams < limits.maxStreams ? streamsByAddress.admit(remoteAddress) : undefined;
    if (release === undefined) {
      const total = openStreams >= limits.maxStreams;
      refuseStream(total ? "max_streams" : "max_streams_per_address", remoteAddress);
      return total
        ? overCapAnswer(contentType, "streams", limits.maxStreams)
        : overCapAnswer(contentType, "streams from your address", limits.maxStreamsPerAddress);
    }
    openStreams++;
    return () => {
      openStreams--;
      release();
    };
  };
  /** The handler behind the stream caps: a stream over them is answered here, unseen by the handler. */
  const admitted: Handler = (req, res) => {
    const out = res as unknown as AnswerTarget;
    const slot = takeStreamSlot(req.socket?.remoteAddress, req.headers["content-type"]);
    if (typeof slot !== "function") {
      if ("stream" in req) {
        // Not through the compat response: a refused stream, uncounted, must
        // not outlive its answer (a client window of 0 would hold it).
        answerAndReset(req.stream, slot);
      } else {
        // HTTP/1.1 discards the rest of the request.
        out.writeHead(slot.status, slot.headers);
        out.end(slot.body);
      }
      return;
    }
    out.once("close", slot);
    handler(req, res);
  };
  const stopObserving = metrics.observe(() => ({
    connections: sockets.size,
    streams: openStreams,
  }));

  const h2 = http2.createServer(
    {
      settings: { maxConcurrentStreams: limits.http2MaxConcurrentStreams },
      maxSessionMemory: limits.http2MaxSessionMemoryMb,
    },
    admitted,
  );
  const rawRoutes = options.rawStreamRoutes ?? [];
  if (rawRoutes.length > 0) {
    // The compatibility API listens to the server's "stream" event (one
    // listener, added for the request handler): streams the raw route takes
    // never reach it, so they cost neither its request and response objects
    // nor the handler's.
    const compat = h2.listeners("stream") as ((...args: unknown[]) => void)[];
    h2.removeAllListeners("stream");
    h2.on("stream", (stream: http2.ServerHttp2Stream, headers, ...rest: unknown[]) => {
      let rawRoute: RawStreamRoute | undefined;
      for (const r of rawRoutes) {
        if (r.accepts(headers)) {
          rawRoute = r;
          break;
        }
      }
      if (rawRoute === undefined) {
        for (const l of compat) l.call(h2, stream, headers, ...rest);
        return;
      }
      const slot = takeStreamSlot(stream.session?.socket?.remoteAddress, headers["content-type"]);
      if (typeof slot !== "function") {
        answerAndReset(stream, slot);
        return;
      }
      rawRoute.serve(stream, headers, slot);
    });
  }
  const h1 = http.createServer(
    {
      keepAliveTimeout: limits.http1KeepAliveTimeoutMs,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      // Node checks both timeouts on this interval: a tenth of the shorter
      // one keeps the overshoot small (at most 1 s at the defaults).
      connectionsCheckingInterval: Math.min(
        1000,
        Math.max(25, Math.floor(Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs) / 10)),
      ),
    },
    admitted,
  );
  const uninstrumented = options.uninstrumented;
  if (uninstrumented !== undefined) {
    const instrumentedEmit = h1.emit;
    h1.emit = function emit(this: http.Server, event: string | symbol, ...args: unknown[]) {
      if (event === "request" && uninstrumented((args[0] as http.IncomingMessage).url ?? "")) {
        return Reflect.apply(EventEmitter.prototype.emit, this, [event, ...args]);
      }
      return Reflect.apply(instrumentedEmit, this, [event, ...args]);
    } as typeof h1.emit;
  }
  // h1 never listens (the TCP server hands it sockets), and Node tracks
  // HTTP/1.1 connections (closeIdleConnections, headersTimeout, requestTimeout)
  // only once its server emits "listening".
  h1.emit("listening");

  // The exchange in progress on each HTTP/1.1 connection (until both its
  // request and its response are done), for the answer to a request timeout.
  const h1Responses = new WeakMap<Duplex, http.ServerResponse>();
  h1.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    const socket = req.socket;
    h1Responses.set(socket, res);
    const lifetime = setTimeout(() => {
      timedOut("stream_max_duration", socket.remoteAddress);
      socket.destroy();
    }, limits.streamMaxLifetimeMs);
    lifetime.unref();
    let pending = 2;
    const done = () => {
      if (--pending === 0 && h1Responses.get(socket) === res) h1Responses.delete(socket);
    };
    req.once("close", done);
    res.once("close", () => {
      clearTimeout(lifetime);
      done();
    });
  });
  h1.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
    const res = h1Responses.get(socket);
    const remoteAddress = (socket as net.Socket).remoteAddress;
    const canAnswer = socket.writable && !res?.headersSent;
    if (err.code === "ERR_HTTP_REQUEST_TIMEOUT") {
      // Node's headersTimeout and requestTimeout both end here; a response
      // object exists once the headers were complete.
      const which = res === undefined ? "headers" : "request";
      timedOut(which, remoteAddress);
      const ms = which === "headers" ? limits.headersTimeoutMs : limits.requestTimeoutMs;
      const answer = requestTimeoutAnswer(res?.req.headers["content-type"], ms);
      if (canAnswer) socket.write(http1Bytes(answer));
      socket.destroy();
      return;
    }
    if (canAnswer && err.code !== "ECONNRESET") {
      const status =
        err.code === "HPE_HEADER_OVERFLOW"
          ? "431 Request Header Fields Too Large"
          : "400 Bad Request";
      socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    } else {
      socket.destroy();
    }
    logger.debug({ err: err.message }, "http/1.1 client error");
  });

  // Set while a socket is handed to h2: its "session" event fires synchronously within.
  let handshakeOfNextSession: (() => void) | undefined;
  h2.on("session", (session) => {
    sessions.add(session);
    // The client's SETTINGS frame completes its connection preface.
    const handshakeDone = handshakeOfNextSession;
    handshakeOfNextSession = undefined;
    if (handshakeDone) session.once("remoteSettings", handshakeDone);
    const remoteAddress = session.socket?.remoteAddress;
    let awaitingPing = false;
    const pinger = setInterval(() => {
      if (awaitingPing) {
        session.destroy();
        return;
      }
      awaitingPing = true;
      session.ping((err) => {
        awaitingPing = false;
        if (err && !session.destroyed) session.destroy();
      });
    }, options.keepaliveMs);
    pinger.unref();

    // Idle: no open stream for http2IdleTimeoutMs. PINGs do not count.
    let sessionStreams = 0;
    let idle: NodeJS.Timeout | undefined;
    const armIdle = () => {
      idle = setTimeout(() => {
        timedOut("http2_idle", remoteAddress);
        // Node's nghttp2 ignores every stream that arrives after a GOAWAY (it
        // has no two-step graceful GOAWAY), so a request the client sends
        // just now is refused: gRPC clients retry it, and connect-node
        // clients close idle connections first (after 15 min, below the
        // default here).
        session.close();
        setTimeout(() => session.destroy(), goawayGraceMs).unref();
      }, limits.http2IdleTimeoutMs);
      idle.unref();
    };
    armIdle();
    session.on("stream", (stream: http2.ServerHttp2Stream, headers) => {
      sessionStreams++;
      clearTimeout(idle);
      const release = guardStream(stream, headers, remoteAddress);
      stream.once("close", () => {
        release();
        sessionStreams--;
        if (sessionStreams === 0 && !session.closed && !session.destroyed) armIdle();
      });
    });
    session.on("close", () => {
      clearInterval(pinger);
      clearTimeout(idle);
      sessions.delete(session);
    });
    session.on("error", (err) => logger.debug({ err: err.message }, "http2 session error"));
  });
  h2.on("sessionError", (err) => logger.debug({ err: err.message }, "http2 session error"));

  /** Arms a stream's request timeout and lifetime; returns what clears them. */
  const guardStream = (
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    remoteAddress: string | undefined,
  ): (() => void) => {
    const lifetime = setTimeout(() => {
      timedOut("stream_max_duration", remoteAddress);
      if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL);
    }, limits.streamMaxLifetimeMs);
    lifetime.unref();
    let receive: NodeJS.Timeout | undefined;
    const path = String(headers[":path"] ?? "").split("?")[0] as string;
    // Only this is kept, not the headers: a watch holds its stream for long.
    const contentType = headers["content-type"];
    // The request is complete when its readable side ends: at once for a
    // request without a body, else once the handler has read the body to its
    // end (every Connect handler reads it). A handler that never reads a
    // body it was sent gets the timeout too.
    if (!stream.endAfterHeaders && !streamingPaths.has(path)) {
      receive = setTimeout(() => {
        timedOut("request", remoteAddress);
        answerTimeout(stream, contentType);
      }, limits.requestTimeoutMs);
      receive.unref();
      stream.once("end", () => {
        clearTimeout(receive);
        receive = undefined;
      });
    }
    return () => {
      clearTimeout(lifetime);
      clearTimeout(receive);
    };
  };

  /** Answers a stream whose request did not arrive in time, then resets it so the client stops sending. */
  const answerTimeout = (stream: http2.ServerHttp2Stream, contentType: string | undefined) => {
    if (stream.destroyed || stream.closed) return;
    if (stream.headersSent) {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      return;
    }
    answerAndReset(stream, requestTimeoutAnswer(contentType, limits.requestTimeoutMs));
  };

  const tcp = net.createServer((socket) => {
    const release = perAddress.admit(socket.remoteAddress);
    if (release === undefined) {
      refuse("max_connections_per_address", socket.remoteAddress);
      socket.destroy();
      return;
    }
    sockets.add(socket);
    const handshake = setTimeout(() => {
      timedOut("handshake", socket.remoteAddress);
      socket.destroy();
    }, limits.handshakeTimeoutMs);
    handshake.unref();
    socket.on("close", () => {
      clearTimeout(handshake);
      sockets.delete(socket);
      release();
    });
    socket.on("error", () => socket.destroy());
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const n = Math.min(head.length, preface.length);
      const isH2 = head.subarray(0, n).equals(preface.subarray(0, n));
      if (isH2 && head.length < preface.length) return; // wait for the rest of the preface
      socket.off("data", onData);
      socket.pause();
      socket.unshift(head);
      if (isH2) {
        // The http2 session takes what is already buffered (our unshifted
        // bytes) when it attaches; resuming here would drop them.
        handshakeOfNextSession = () => clearTimeout(handshake);
        h2.emit("connection", socket);
        handshakeOfNextSession = undefined;
      } else {
        clearTimeout(handshake);
        h1.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", onData);
  });
  // Beyond maxConnections Node closes new connections before they reach JS.
  tcp.maxConnections = limits.maxConnections;
  tcp.on("drop", (data?: net.DropArgument) => refuse("max_connections", data?.remoteAddress));

  return {
    get connections() {
      return sockets.size;
    },
    listen(port, host) {
      return new Promise((resolve, reject) => {
        tcp.once("error", reject);
        tcp.listen(port, host, () => {
          tcp.off("error", reject);
          resolve(tcp.address() as net.AddressInfo);
        });
      });
    },
    async close(deadlineMs) {
      const closed = new Promise<void>((resolve) => tcp.close(() => resolve()));
      for (const s of sessions) s.close();
      h1.closeIdleConnections();
      const timer = setTimeout(() => {
        for (const s of sessions) s.destroy();
        for (const s of sockets) s.destroy();
      }, deadlineMs);
      timer.unref();
      const drained = new Promise<void>((resolve) => {
        // Keep-alive HTTP/1.1 connections become idle as their last
        // response (a watch ended by the shutdown, say) completes.
        const check = () => {
          h1.closeIdleConnections();
          if (sockets.size === 0) resolve();
          else setTimeout(check, 20).unref();
        };
        check();
      });
      await Promise.all([closed, drained]);
      clearTimeout(timer);
      stopObserving();
      // Stops Node's connection-checking timer; h1 never listened, so the error is expected.
      h1.close(() => undefined);
    },
  };
}
