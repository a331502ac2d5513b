/**
 * Plain HTTP for people with curl, next to Connect's own JSON: the route
 * table. Submit, read and follow call the very same ReportService handlers
 * as the RPCs (through rpc-bridge.ts), so validation, errors and idempotency
 * are identical; each route lives in its own file.
 */
import type { ContextValues, ServiceImpl } from "@connectrpc/connect";
import type { Logger } from "pino";
import { ReportService } from "../../gen/reports/v1/report_service_pb.js";
import type { JobReader } from "../queue/job-reader.js";
import { createDownloadRoute } from "./download-route.js";
import type { DownloadSigner } from "./download-signer.js";
import { createHttpRouter, type Route, route } from "./http-router.js";
import { createJobRoute } from "./job-route.js";
import type { NodeHandler, NodeRequest } from "./node-types.js";
import { createReadinessRoute, livenessRoute } from "./probe-routes.js";
import type { Readiness } from "./readiness.js";
import { createRpcBridge } from "./rpc-bridge.js";
import { createSseRoute } from "./sse-route.js";
import { createStaticAssets } from "./static-assets.js";
import { createSubmitRoute } from "./submit-route.js";

/** What the plain routes need. */
export interface HttpRoutesDeps {
  service: ServiceImpl<typeof ReportService>;
  jobs: JobReader;
  artifactDir: string;
  /**
   * The request's context values with its authenticated tenant (kTenant).
   * Throws UnauthenticatedError; every `/v1/*` route calls it first
   * (downloads only when they carry no signature).
   */
  contextValues: (req: NodeRequest) => ContextValues;
  /** Checks the signature of download URLs (and signs the ones handed out). */
  signer?: DownloadSigner;
  /** The API's readiness, shared with gRPC health: `/readyz` answers it. */
  readiness: Readiness;
  shutdownSignal: AbortSignal;
  logger: Logger;
  /** The built browser app served at `/` (default web/dist). */
  webDir?: string;
}

/** Creates the fallback handler for connect-node; answers 404 for anything it does not know. */
export function createHttpRoutes(deps: HttpRoutesDeps): NodeHandler {
  const { service, logger } = deps;
  const bridge = createRpcBridge({ shutdownSignal: deps.shutdownSignal });
  const m = ReportService.method;
  const submit = createSubmitRoute({
    submitReport: bridge.unary(m.submitReport, service.submitReport),
  });
  const job = createJobRoute({ getJob: bridge.unary(m.getJob, service.getJob) });
  const events = createSseRoute({
    watchJob: bridge.serverStream(m.watchJob, service.watchJob),
    logger,
  });
  const download = createDownloadRoute(deps);
  const readiness = createReadinessRoute(deps.readiness);
  const assets = createStaticAssets(deps.webDir);
  const browserApp: Route["handle"] = async ({ req, res, url }) => {
    await assets(req, res, url.pathname);
  };

  // Tried in order; the first whose path and method match answers.
  const routes: Route[] = [
    route(["POST"], "/v1/reports", "api-key", submit),
    route(["GET", "HEAD"], "/v1/jobs/{jobId}", "api-key", job),
    route(["GET"], "/v1/jobs/{jobId}/events", "api-key", events),
    // Public: a signed link stands in for the key (the route asks for one without it).
    route(["GET", "HEAD"], "/v1/artifacts/{jobId}/{attemptTag}/{fileName}", "public", download),
    route(["GET", "HEAD"], "/v1/artifacts/{jobId}/{fileName}", "public", download),
    route("any", "/healthz", "public", livenessRoute),
    route("any", "/readyz", "public", readiness),
    route("any", "/", "public", browserApp),
    route("any", "/index.html", "public", browserApp),
    route("any", "/assets/*", "public", browserApp),
  ];
  return createHttpRouter(routes, {
    authenticate: deps.contextValues,
    protectedPrefix: "/v1/",
    logger,
  });
}
