/**
 * The API part of a process, built unstarted: the ReportService handlers and
 * the plain HTTP routes behind one Connect handler (interceptors, CORS,
 * request log) on the dual-protocol server. The queue-side services and the
 * event hub are handed in, so nothing here touches Redis or BullMQ.
 */
import type { AddressInfo } from "node:net";
import { type ConnectRouter, createConnectRouter, createContextValues } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { ApiConfig, AuthConfig } from "../config/config.js";
import type { EventHub } from "../events/event-hub.js";
import type { EventLog } from "../events/event-log.js";
import { shareReplays } from "../events/shared-replays.js";
import type { JobControl } from "../queue/job-control.js";
import type { JobLister } from "../queue/job-lister.js";
import type { JobReader } from "../queue/job-reader.js";
import type { Submitter } from "../queue/submitter.js";
import { isRpcPath, registerRpcPaths } from "../telemetry/telemetry.js";
import {
  authenticateHttp,
  createAuthenticator,
  createAuthInterceptor,
  logAuthMode,
} from "./auth.js";
import { kTenant } from "./context-keys.js";
import { corsVariesByOrigin, withCors } from "./cors.js";
import { createDownloadSigner } from "./download-signer.js";
import { createGrpcUnaryRoute } from "./grpc-unary-route.js";
import { createGrpcWatchRoute } from "./grpc-watch-route.js";
import { withHttpRequestLog } from "./http-request-log.js";
import { createHttpRoutes } from "./http-routes.js";
import { createLeanUnary } from "./lean-unary.js";
import { withParseErrorsAsInvalidArgument } from "./parse-errors.js";
import type { StorageState } from "./readiness.js";
import { createReadiness } from "./readiness.js";
import { createReportCalls, createReportService } from "./report-service.js";
import { createRequestLogInterceptor } from "./request-log-interceptor.js";
import { createRpcNodeHandler } from "./rpc-node-handler.js";
import { createRpcRoutes } from "./rpc-routes.js";
import { createDualServer, type DualServer } from "./server.js";
import { createTelemetryInterceptor } from "./telemetry-interceptor.js";
import { createWatchLimiter } from "./watch-limiter.js";
import { createWatchSessions } from "./watch-sessions.js";

/** What the API part is built from. */
export interface ApiPartDeps {
  /** The api slice of the configuration. */
  settings: ApiConfig;
  /** The auth slice of the configuration. */
  auth: AuthConfig;
  /** Concurrent WatchJob streams per tenant in this process (TENANT_MAX_WATCHES; 0: no cap). */
  maxWatchesPerTenant: number;
  /** How far ahead a submit's run_at may be, in ms (MAX_RUN_AT_SECONDS). */
  maxRunAtAheadMs: number;
  /**
   * The deployment's report folder (the worker writes them; artifact-paths.ts
   * deploymentArtifactDir), served by download URLs.
   */
  artifactDir: string;
  submitter: Submitter;
  control: JobControl;
  jobs: JobReader;
  lister: JobLister;
  log: EventLog;
  hub: EventHub;
  /** Whether storage answers: gRPC health and /readyz report it. */
  storage: StorageState;
  /** Aborted when shutdown begins: open streams end with UNAVAILABLE. */
  shutdownSignal: AbortSignal;
  logger: Logger;
}

/** The built, unstarted API. */
export interface ApiPart {
  readonly server: DualServer;
  /** Listens on the configured host and port; resolves with the base URL and the port taken. */
  listen(): Promise<{ url: string; port: number }>;
}

/** Builds the API part (not listening). Logs once how callers are authenticated. */
export function createApiPart(deps: ApiPartDeps): ApiPart {
  const { settings, auth: authConfig, storage, shutdownSignal, logger } = deps;
  const auth = createAuthenticator(authConfig.apiKeys);
  logAuthMode({ auth: authConfig, api: settings }, logger);
  const downloadSigner = createDownloadSigner({
    secret: authConfig.downloadUrlSecret,
    ttlMs: settings.downloadUrlTtlMs,
  });
  // The API's readiness: /readyz and gRPC health answer it, so the two probes never disagree.
  const readiness = createReadiness({ storage, shutdownSignal });
  // Watchers of one job opening together read its history once.
  const watchLog = shareReplays(deps.log);
  const watchLimiter = createWatchLimiter(deps.maxWatchesPerTenant);
  const service = createReportService({
    submitter: deps.submitter,
    jobs: deps.jobs,
    control: deps.control,
    lister: deps.lister,
    log: watchLog,
    hub: deps.hub,
    publicUrl: settings.publicUrl,
    keepaliveMs: settings.watchKeepaliveMs,
    watchMaxDurationMs: settings.watchMaxDurationMs,
    maxRunAtAheadMs: deps.maxRunAtAheadMs,
    downloadSigner,
    watchLimiter,
    shutdownSignal,
    logger,
  });
  // WatchJob over gRPC, served on the raw HTTP/2 stream (grpc-watch-route.ts says why).
  const grpcWatches = createGrpcWatchRoute({
    sessions: createWatchSessions({
      log: watchLog,
      hub: deps.hub,
      publicUrl: settings.publicUrl,
      keepaliveMs: settings.watchKeepaliveMs,
      watchMaxDurationMs: settings.watchMaxDurationMs,
      downloadSigner,
      watchLimiter,
      shutdownSignal,
      logger,
    }),
    auth,
    readMaxBytes: settings.readMaxBytes,
    maxTimeoutMs: settings.maxTimeoutMs,
    varyOrigin: corsVariesByOrigin(settings.corsOrigins),
    logger,
  });
  // RPCs start in the open tenant; the auth interceptor sets the caller's.
  const contextValues = () => createContextValues().set(kTenant, "default");
  const fallback = createHttpRoutes({
    service,
    jobs: deps.jobs,
    artifactDir: deps.artifactDir,
    contextValues: (req) => authenticateHttp(auth, req),
    signer: downloadSigner,
    readiness,
    shutdownSignal,
    logger,
  });
  const routes = withParseErrorsAsInvalidArgument(
    createRpcRoutes({ reportService: service, readiness, streams: settings }),
  );
  const registered = registeredHandlers(routes);
  // The RPC interceptor spans these; the HTTP instrumentation leaves them alone.
  registerRpcPaths(registered.map((h) => h.requestPath));
  const calls = createReportCalls({
    submitter: deps.submitter,
    jobs: deps.jobs,
    control: deps.control,
    lister: deps.lister,
    publicUrl: settings.publicUrl,
    downloadSigner,
    maxRunAtAheadMs: deps.maxRunAtAheadMs,
  });
  // SubmitReport and GetJob over plain Connect JSON, without connect's per-call machinery (lean-unary.ts).
  const lean = createLeanUnary({
    calls,
    auth,
    readMaxBytes: settings.readMaxBytes,
    shutdownSignal,
    logger,
  });
  const handler = createRpcNodeHandler({
    routes,
    // Tracing first, so its span covers every other interceptor (and the request
    // log line); authentication last, so a refused call is still traced and logged.
    // gRPC WatchJob and lean unary calls bypass them (grpc-watch-route.ts does
    // their work itself; grpc-unary-route.ts and lean-unary.ts through
    // lean-call.ts): an interceptor added here must be mirrored there.
    interceptors: [
      createTelemetryInterceptor(),
      createRequestLogInterceptor(logger),
      createAuthInterceptor(auth, authConfig.exemptServices, logger),
    ],
    readMaxBytes: settings.readMaxBytes,
    maxTimeoutMs: settings.maxTimeoutMs,
    shutdownSignal,
    contextValues,
    lean,
    // The log line names the tenant the request authenticated as (none when refused).
    fallback: withHttpRequestLog(fallback, {
      logger,
      contextValues: (req) => authenticateHttp(auth, req),
    }),
  });
  const server = createDualServer(withCors(handler, settings.corsOrigins), {
    keepaliveMs: 30_000,
    logger,
    limits: {
      ...settings,
      // A backstop behind every handler's own clean limit (watches, Health and
      // reflection streams, client deadlines): nothing lives a minute longer.
      streamMaxLifetimeMs:
        Math.max(settings.watchMaxDurationMs, settings.streamMaxDurationMs, settings.maxTimeoutMs) +
        60_000,
    },
    streamingRequestPaths: streamingRequestPaths(registered),
    uninstrumented: isRpcPath,
    // SubmitReport and GetJob over plain gRPC (grpc-unary-route.ts), and gRPC WatchJob.
    rawStreamRoutes: [
      createGrpcUnaryRoute({
        calls,
        auth,
        readMaxBytes: settings.readMaxBytes,
        maxTimeoutMs: settings.maxTimeoutMs,
        shutdownSignal,
        varyOrigin: corsVariesByOrigin(settings.corsOrigins),
        logger,
      }),
      grpcWatches,
    ],
  });
  return {
    server,
    async listen() {
      const address = await server.listen(settings.port, settings.host);
      const url = httpUrl(address);
      logger.info({ url }, "api listening (gRPC, gRPC-Web and Connect on one port)");
      return { url, port: address.port };
    },
  };
}

/** The handlers `routes` registers. */
function registeredHandlers(routes: (router: ConnectRouter) => void): ConnectRouter["handlers"] {
  const router = createConnectRouter();
  routes(router);
  return router.handlers;
}

/** The paths of the client-streaming and bidi methods among `handlers` (their request is a stream). */
function streamingRequestPaths(handlers: ConnectRouter["handlers"]): Set<string> {
  return new Set(
    handlers
      .filter(
        (h) =>
          h.method.methodKind === "client_streaming" || h.method.methodKind === "bidi_streaming",
      )
      .map((h) => h.requestPath),
  );
}

/** `http://host:port` of a listening address (IPv6 hosts in brackets). */
export function httpUrl(address: AddressInfo): string {
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}`;
}
