/**
 * The OpenTelemetry SDK of one process: tracing (HTTP and ioredis
 * instrumentation, plus the spans our own code makes), and metrics read by the
 * Prometheus endpoint and, when an OTLP endpoint is configured, pushed over
 * OTLP. Started once, before the app is imported (see preload.ts); tests call
 * startTelemetry() themselves with in-memory exporters.
 */
import { getBooleanFromEnv } from "@opentelemetry/core";
import { OTLPMetricExporter } from "@opentelemetry/exporter-metrics-otlp-http";
import { PrometheusExporter } from "@opentelemetry/exporter-prometheus";
import { HttpInstrumentation } from "@opentelemetry/instrumentation-http";
import { IORedisInstrumentation } from "@opentelemetry/instrumentation-ioredis";
import {
  AggregationTemporality,
  type IMetricReader,
  InstrumentType,
  PeriodicExportingMetricReader,
} from "@opentelemetry/sdk-metrics";
import { NodeSDK } from "@opentelemetry/sdk-node";
import {
  AlwaysOffSampler,
  NoopSpanProcessor,
  type SpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import type { TelemetrySettings } from "../config/config.js";
import { HistogramProducer, setHistogramProducer } from "./histograms.js";
import { setKeepJobTraces } from "./job-traces.js";
import { setSpansUnrecorded } from "./spans.js";
import { SyncContextManager } from "./sync-context-manager.js";

/** How to start telemetry. */
export interface TelemetryOptions {
  /** From loadTelemetrySettings(process.env, mode). */
  settings: TelemetrySettings;
  /** Replaces the span exporters chosen from OTEL_* (tests pass an in-memory exporter). */
  spanProcessors?: SpanProcessor[];
  /** Extra metric readers (tests), besides the Prometheus reader and OTLP. */
  metricReaders?: IMetricReader[];
}

/** The started SDK of this process. */
export interface Telemetry {
  /** False when OTEL_SDK_DISABLED=true. */
  readonly enabled: boolean;
  /** Serves /metrics (the metrics server calls its request handler). Undefined when disabled. */
  readonly prometheus?: PrometheusExporter;
  /** Flushes and stops exporters. Idempotent. */
  shutdown(): Promise<void>;
}

let current: Telemetry | undefined;

/** URL paths of probes and scrapes: traced by nobody (they are noise, every few seconds). */
const untracedPaths = new Set(["/metrics", "/healthz", "/readyz"]);

/**
 * Request paths of the RPC methods the API serves (`/package.Service/Method`):
 * the RPC interceptor (api/telemetry-interceptor.ts) makes their SERVER span,
 * continuing the caller's traceparent, on every protocol, so the HTTP
 * instrumentation makes none: its span (over HTTP/1.1 only; HTTP/2 it does not
 * see) cost about a third of an RPC's CPU and said nothing the RPC span does
 * not. The API's server does not even hand them to the instrumentation
 * (server.ts `uninstrumented`), since ignoring a request still costs it a
 * context and a patched emitter per request.
 */
const rpcPaths = new Set<string>();

/**
 * Marks `paths` as RPC paths (see rpcPaths): the HTTP instrumentation leaves
 * their requests to the RPC interceptor. The API part registers its routes'
 * paths when it is built.
 */
export function registerRpcPaths(paths: Iterable<string>): void {
  for (const p of paths) rpcPaths.add(p);
}

/** The path of a request target (path and query). */
function pathOf(url: string): string {
  const query = url.indexOf("?");
  return query === -1 ? url : url.slice(0, query);
}

/** Whether a request to `url` (path and query) is an RPC of a registered path (see rpcPaths). */
export function isRpcPath(url: string): boolean {
  return rpcPaths.has(pathOf(url));
}

/** Whether the HTTP instrumentation makes no span for a request to `url` (path and query). */
export function untracedByHttp(url: string): boolean {
  const path = pathOf(url);
  return untracedPaths.has(path) || rpcPaths.has(path);
}

/**
 * Starts the SDK and registers it globally. OpenTelemetry's global providers
 * can be set once per process, so a second call returns the first one.
 */
export function startTelemetry(options: TelemetryOptions): Telemetry {
  if (current !== undefined) return current;
  const { settings } = options;
  if (settings.disabled) {
    current = { enabled: false, shutdown: async () => undefined };
    return current;
  }
  // The histograms recorded on every call skip the SDK's work per record
  // (histograms.ts) when every reader reads them cumulative: Prometheus, and
  // OTLP unless its temporality preference says delta. Readers a test hands
  // in get the SDK's.
  const otlp = settings.exportMetricsOtlp ? new OTLPMetricExporter() : undefined;
  const cumulative =
    options.metricReaders === undefined &&
    (otlp === undefined ||
      otlp.selectAggregationTemporality(InstrumentType.HISTOGRAM) ===
        AggregationTemporality.CUMULATIVE);
  const histograms = cumulative ? new HistogramProducer() : undefined;
  const metricProducers = histograms === undefined ? undefined : [histograms];
  // The Prometheus exporter is only a reader here: our metrics server (which
  // also answers the worker's probes) calls its request handler.
  const prometheus = new PrometheusExporter({ preventServerStart: true, metricProducers });
  const readers: IMetricReader[] = [prometheus, ...(options.metricReaders ?? [])];
  if (otlp !== undefined) {
    readers.push(
      new PeriodicExportingMetricReader({
        exporter: otlp,
        exportIntervalMillis: settings.metricExportIntervalMs,
        metricProducers,
      }),
    );
  }
  // Nothing receives spans when no exporter is configured (and no test hands
  // in its own processors).
  const sendsSpans = options.spanProcessors !== undefined || settings.exportTraces;
  // Every span is non-recording: spans.ts makes them without the SDK's work,
  // unless the SDK counts its spans (that instrument would miss them).
  const unrecorded = !sendsSpans && !getBooleanFromEnv("OTEL_NODE_EXPERIMENTAL_SDK_METRICS");
  // A worker that records no span needs its contexts only for the ids in its
  // log lines, and its code enters a job's context where it logs
  // (job-traces.ts): no AsyncLocalStorage, whose hooks Node 20 runs for every
  // promise of the process (sync-context-manager.ts). The API keeps it: its
  // log lines, the enqueue's parent and WatchJob follow awaits.
  const syncContext = unrecorded && settings.mode === "worker";
  const sdk = new NodeSDK({
    serviceName: settings.serviceName,
    // Undefined: AsyncLocalStorage.
    contextManager: syncContext ? new SyncContextManager() : undefined,
    // Undefined: the SDK builds exporters from OTEL_TRACES_EXPORTER and
    // OTEL_EXPORTER_OTLP_*. Without any, spans are dropped instead of sent to
    // a default endpoint that is not there.
    spanProcessors: options.spanProcessors ?? (sendsSpans ? undefined : [new NoopSpanProcessor()]),
    // ...and not even recorded: the always-off sampler makes non-recording
    // spans, which still carry fresh trace and span ids (they go in logs, job
    // records, WatchJob events and the BullMQ job, unsampled, so the worker
    // does not record either), without the attribute, event and timing work
    // of a recorded span that nobody would read. Undefined: the SDK's default
    // (OTEL_TRACES_SAMPLER, else parent-based always-on).
    sampler: sendsSpans ? undefined : new AlwaysOffSampler(),
    metricReaders: readers,
    // Logs stay on stdout (pino); no OTLP log pipeline.
    logRecordProcessors: [],
    instrumentations: [
      new HttpInstrumentation({
        // A signed download link's signature is a credential (it downloads the
        // file without a key): never in url.query. The default list has only
        // "Signature" (case-sensitive) and cloud storage parameters.
        redactedQueryParamsServer: ["signature"],
        ignoreIncomingRequestHook: (req) => untracedByHttp(req.url ?? ""),
      }),
      // Redis command spans only when spans go somewhere: the instrumentation
      // builds each command's attributes and wraps its promise before the
      // sampler is asked, so unsampled spans would cost as much as recorded ones.
      ...(sendsSpans
        ? [
            new IORedisInstrumentation({
              // Only commands made inside a traced operation (a request, a job):
              // the worker's idle polling would otherwise be a stream of root traces.
              requireParentSpan: true,
              // The command name only: arguments carry job payloads and filters.
              dbStatementSerializer: (command: string) => command,
            }),
          ]
        : []),
    ],
  });
  sdk.start();
  setHistogramProducer(histograms);
  setSpansUnrecorded(unrecorded);
  setKeepJobTraces(syncContext);
  let stopping: Promise<void> | undefined;
  current = {
    enabled: true,
    prometheus,
    shutdown() {
      stopping ??= sdk.shutdown().catch(() => undefined);
      return stopping;
    },
  };
  return current;
}

/** The telemetry this process started, if any. */
export function currentTelemetry(): Telemetry | undefined {
  return current;
}
