/**
 * What the connection-level protections of the API port did, as metrics
 * (refused connections, timeouts that cut a connection or stream, open
 * connections) and as debug log lines that a flood cannot turn into a flood
 * of logs.
 */
import { type Attributes, type Meter, metrics, type ObservableResult } from "@opentelemetry/api";
import type { Logger } from "pino";

/** Why a connection was refused at accept. */
export type RefusalReason = "max_connections" | "max_connections_per_address";

/** Which timeout cut a connection, session or stream. */
export type ServerTimeout =
  | "handshake"
  | "headers"
  | "request"
  | "http2_idle"
  | "stream_max_duration";

/** The instruments the server records on. */
export interface ServerMetrics {
  /** A connection was closed at accept. */
  refused(reason: RefusalReason): void;
  /** A timeout closed a connection, an HTTP/2 session or a stream. */
  timedOut(timeout: ServerTimeout): void;
  /** Observes the open connections; returns the stop function. */
  observeConnections(read: () => number): () => void;
}

/** Creates the instruments on `meter` (the global provider's by default). */
export function createServerMetrics(meter: Meter = metrics.getMeter("report-jobs")): ServerMetrics {
  const refusals = meter.createCounter("reports.server.connections.refused", {
    description:
      "Connections closed at accept: the server's or the remote address's connection cap was reached",
    unit: "{connection}",
  });
  const timeouts = meter.createCounter("reports.server.timeouts", {
    description:
      "Connections, HTTP/2 sessions or streams closed by a server timeout, by which timeout",
    unit: "{timeout}",
  });
  const open = meter.createObservableGauge("reports.server.connections.open", {
    description: "Open connections on the API port (HTTP/1.1 and HTTP/2)",
    unit: "{connection}",
  });
  const labels = new Map<string, Attributes>();
  const label = (name: string, value: string): Attributes => {
    const key = `${name}=${value}`;
    let attrs = labels.get(key);
    if (attrs === undefined) {
      attrs = { [name]: value };
      labels.set(key, attrs);
    }
    return attrs;
  };
  return {
    refused(reason) {
      refusals.add(1, label("reason", reason));
    },
    timedOut(timeout) {
      timeouts.add(1, label("timeout", timeout));
    },
    observeConnections(read) {
      const callback = (result: ObservableResult) => result.observe(read());
      open.addCallback(callback);
      return () => open.removeCallback(callback);
    },
  };
}

/**
 * A debug logger for events a peer can cause at will (refused connections,
 * timeouts): the first one is logged at once, later ones at most once per
 * `intervalMs`, each line carrying how many were left out since the last.
 */
export function createRateLimitedLog(
  logger: Logger,
  intervalMs: number,
): (fields: Record<string, unknown>, message: string) => void {
  let lastAt = Number.NEGATIVE_INFINITY;
  let suppressed = 0;
  return (fields, message) => {
    if (!logger.isLevelEnabled("debug")) return;
    const now = Date.now();
    if (now - lastAt < intervalMs) {
      suppressed++;
      return;
    }
    lastAt = now;
    logger.debug(suppressed > 0 ? { ...fields, suppressed } : fields, message);
    suppressed = 0;
  };
}
