/**
 * The Connect services of the API port, registered connect-es style: one
 * `routes(router)` function. ReportService, grpc.health.v1.Health, and
 * server reflection last (it describes everything registered before it).
 */
import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { file_reports_v1_errors } from "../../gen/reports/v1/errors_pb.js";
import { ReportService } from "../../gen/reports/v1/report_service_pb.js";
import { createHealthService } from "./health-service.js";
import type { Readiness } from "./readiness.js";
import { addReflection } from "./reflection-service.js";

/** How many Health/Watch and reflection streams may be open, and for how long. */
export interface StreamLimits {
  /** Open Health/Watch streams in this process; 0: no cap. */
  healthMaxWatches: number;
  /** Open reflection streams in this process; 0: no cap. */
  reflectionMaxStreams: number;
  /** Longest a Health/Watch or reflection stream stays open, in ms. */
  streamMaxDurationMs: number;
}

/** What the routes register. */
export interface RpcRoutesDeps {
  reportService: ServiceImpl<typeof ReportService>;
  /** What health reports: the same readiness as /readyz. */
  readiness: Readiness;
  /** Bounds of the streams callable without a key. */
  streams: StreamLimits;
}

/** Returns `routes(router)`, registering every RPC service of the API port. */
export function createRpcRoutes(deps: RpcRoutesDeps): (router: ConnectRouter) => void {
  const health = createHealthService({
    readiness: deps.readiness,
    services: [ReportService.typeName],
    maxWatches: deps.streams.healthMaxWatches,
    maxWatchDurationMs: deps.streams.streamMaxDurationMs,
  });
  return (router) => {
    router.service(ReportService, deps.reportService);
    router.service(Health, health);
    // Last: reflection lists everything registered before it (and the error-detail types).
    addReflection(router, [file_reports_v1_errors], {
      maxStreams: deps.streams.reflectionMaxStreams,
      maxDurationMs: deps.streams.streamMaxDurationMs,
    });
  };
}
