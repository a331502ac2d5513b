/**
 * One port, every protocol: a TCP server that looks at each connection's
 * first bytes and hands it to an HTTP/2 server (h2c, for gRPC and Connect
 * over HTTP/2) when they are the HTTP/2 preface, or to an HTTP/1.1 server
 * (Connect JSON, gRPC-Web, curl) otherwise. Node's `allowHTTP1` only works
 * under TLS (ALPN), hence the sniffing. Both servers share one handler.
 */
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { Logger } from "pino";
import type { NodeHandler } from "./node-types.js";

type Handler = NodeHandler;

/** Listening options. */
export interface ServerOptions {
  /** HTTP/2 PING interval; a connection that does not answer within it is closed. */
  keepaliveMs: number;
  logger: Logger;
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

/** Creates the dual-protocol server around `handler`. */
export function createDualServer(handler: Handler, options: ServerOptions): DualServer {
  const { logger } = options;
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();

  const h2 = http2.createServer(
    { settings: { maxConcurrentStreams: 10_000 }, maxSessionMemory: 64 },
    handler,
  );
  const h1 = http.createServer(
    { keepAliveTimeout: 65_000, headersTimeout: 66_000, requestTimeout: 0 },
    handler,
  );
  // h1 never listens (the TCP server hands it sockets), and Node tracks
  // HTTP/1.1 connections (closeIdleConnections, headersTimeout) only once its
  // server emits "listening".
  h1.emit("listening");

  h2.on("session", (session) => {
    sessions.add(session);
    let awaitingPing = false;
    const timer = setInterval(() => {
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
    timer.unref();
    session.on("close", () => {
      clearInterval(timer);
      sessions.delete(session);
    });
    session.on("error", (err) => logger.debug({ err: err.message }, "http2 session error"));
  });
  h2.on("sessionError", (err) => logger.debug({ err: err.message }, "http2 session error"));
  h1.on("clientError", (err, socket) => {
    if (!socket.destroyed) socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
    logger.debug({ err: err.message }, "http/1.1 client error");
  });

  const tcp = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
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
        h2.emit("connection", socket);
      } else {
        h1.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", onData);
  });

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
      // Stops Node's connection-checking timer; h1 never listened, so the error is expected.
      h1.close(() => undefined);
    },
  };
}
