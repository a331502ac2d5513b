/**
 * What the connection-level protections of the API port did, as metrics
 * (refused connections and streams, timeouts that cut a connection or
 * stream, open connections and streams) and as debug log lines that a flood cannot turn into a flood
 * of logs.
 */
import {
  type Attributes,
  type BatchObservableResult,
  type Meter,
  metrics,
} from "@opentelemetry/api";
import type { Logger } from "pino";

/** Why a connection was refused at accept. */
export type RefusalReason = "max_connections" | "max_connections_per_address";

/** Why a stream (an HTTP/2 stream, an HTTP/1.1 request) was refused before its handler. */
export type StreamRefusalReason = "max_streams" | "max_streams_per_address";

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
  /** A stream was answered UNAVAILABLE without reaching its handler. */
  streamRefused(reason: StreamRefusalReason): void;
  /** A timeout closed a connection, an HTTP/2 session or a stream. */
  timedOut(timeout: ServerTimeout): void;
  /** Observes the open connections and streams; returns the stop function. */
  observe(read: () => { connections: number; streams: number }): () => void;
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
  const streamRefusals = meter.createCounter("reports.server.streams.refused", {
    description:
      "Streams (HTTP/2 streams, HTTP/1.1 requests) answered UNAVAILABLE before their handler: the server's or the remote address's stream cap was reached",
    unit: "{stream}",
  });
  const openConnections = meter.createObservableGauge("reports.server.connections.open", {
    description: "Open connections on the API port (HTTP/1.1 and HTTP/2)",
    unit: "{connection}",
  });
  const openStreams = meter.createObservableGauge("reports.server.streams.open", {
    description: "Open streams on the API port (HTTP/2 streams and HTTP/1.1 requests in progress)",
    unit: "{stream}",
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
    streamRefused(reason) {
      streamRefusals.add(1, label("reason", reason));
    },
    timedOut(timeout) {
      timeouts.add(1, label("timeout", timeout));
    },
    observe(read) {
      const callback = (result: BatchObservableResult) => {
        const { connections, streams } = read();
        result.observe(openConnections, connections);
        result.observe(openStreams, streams);
      };
      meter.addBatchObservableCallback(callback, [openConnections, openStreams]);
      return () => meter.removeBatchObservableCallback(callback, [openConnections, openStreams]);
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
