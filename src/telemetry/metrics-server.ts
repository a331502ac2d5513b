/**
 * The metrics and probe port (METRICS_PORT, default 9464): GET /metrics for
 * Prometheus, GET /healthz (the process is alive) and GET /readyz (ready to
 * do its work: for a worker, Redis reachable and its BullMQ workers running).
 * Every mode runs it; a worker has no other port, so this is where
 * Kubernetes probes and Prometheus reach it.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { PrometheusExporter } from "@opentelemetry/exporter-prometheus";
import type { Logger } from "pino";

/** A started or startable metrics server. */
export interface MetricsServer {
  /** Listens; rejects with a sentence naming METRICS_PORT when the port is taken. */
  listen(port: number, host: string): Promise<AddressInfo>;
  /** Stops listening and ends open connections. Idempotent. */
  close(): Promise<void>;
}

/** Creates the server (not listening). `prometheus` is undefined when the SDK is disabled. */
export function createMetricsServer(deps: {
  prometheus?: PrometheusExporter;
  /**
   * The process's readiness (src/api/readiness.ts fits), its workers included
   * where it runs them. Typed structurally: telemetry/ does not import api/.
   */
  readiness: { status(): string };
  logger: Logger;
}): MetricsServer {
  const { prometheus, readiness, logger } = deps;
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const text = (status: number, body: string) => {
      res.writeHead(status, { "content-type": "text/plain; charset=utf-8" });
      res.end(`${body}\n`);
    };
    if (req.method !== "GET" && req.method !== "HEAD") return text(405, "method not allowed");
    switch (path) {
      case "/metrics":
        if (prometheus === undefined) return text(503, "metrics are off (OTEL_SDK_DISABLED=true)");
        return prometheus.getMetricsRequestHandler(req, res);
      case "/healthz":
        return text(200, "ok");
      case "/readyz": {
        const ok = readiness.status() === "ready";
        return text(ok ? 200 : 503, ok ? "ready" : "not ready");
      }
      default:
        return text(404, "not found: try /metrics, /healthz or /readyz");
    }
  });
  server.keepAliveTimeout = 65_000;
  let closing: Promise<void> | undefined;
  return {
    listen(port, host) {
      return new Promise((resolve, reject) => {
        const onError = (err: NodeJS.ErrnoException) => {
          server.off("listening", onListening);
          reject(
            new Error(
              err.code === "EADDRINUSE"
                ? `METRICS_PORT ${port} on ${host} is already in use (another report-jobs process on this host?): give each process its own METRICS_PORT, or 0 for a free one`
                : `metrics server cannot listen on ${host}:${port}: ${err.message}`,
            ),
          );
        };
        const onListening = () => {
          server.off("error", onError);
          server.on("error", (err) => logger.warn({ err: err.message }, "metrics server error"));
          resolve(server.address() as AddressInfo);
        };
        server.once("error", onError);
        server.once("listening", onListening);
        server.listen(port, host);
      });
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        if (!server.listening) return resolve();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
