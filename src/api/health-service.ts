/**
 * grpc.health.v1.Health on the API port, for load balancers, Kubernetes
 * gRPC probes and grpc-health-probe. The whole server ("") and
 * reports.v1.ReportService are SERVING while the API is ready (readiness.ts:
 * storage answers, shutdown has not begun), and NOT_SERVING otherwise: every
 * RPC of ReportService needs Redis, so there is no partial health to report.
 *
 * Health is callable without a key (AUTH_EXEMPT_SERVICES), so Watch streams
 * are bounded: at most `maxWatches` open in the process (then
 * RESOURCE_EXHAUSTED; Check still answers), each for at most
 * `maxWatchDurationMs` (then UNAVAILABLE, and the client watches again).
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  type Health,
  type HealthCheckRequest,
  type HealthCheckResponse,
  HealthCheckResponseSchema,
  HealthListResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../../gen/grpc/health/v1/health_pb.js";
import type { Readiness } from "./readiness.js";
import { createStreamBudget, startStreamDeadline } from "./stream-limits.js";

/** What the health service needs. */
export interface HealthServiceDeps {
  /** The API's readiness, shared with its /readyz; "stopping" once shutdown begins. */
  readiness: Readiness;
  /** Full names of the services to report besides "" (the server as a whole). */
  services: readonly string[];
  /** Open Watch streams in this process; 0: no cap. */
  maxWatches: number;
  /** Longest a Watch stream stays open, in ms; it then ends with UNAVAILABLE. */
  maxWatchDurationMs: number;
}

/** Creates the Health implementation. */
export function createHealthService(deps: HealthServiceDeps): ServiceImpl<typeof Health> {
  const { readiness } = deps;
  const known = new Set(["", ...deps.services]);
  const serving = () =>
    readiness.status() === "ready" ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
  const response = (status: ServingStatus) => create(HealthCheckResponseSchema, { status });
  const watches = createStreamBudget("health watches", deps.maxWatches);

  return {
    check(req: HealthCheckRequest): HealthCheckResponse {
      if (!known.has(req.service)) {
        throw new ConnectError(`unknown service "${req.service}"`, Code.NotFound);
      }
      return response(serving());
    },

    list() {
      const status = serving();
      return create(HealthListResponseSchema, {
        statuses: Object.fromEntries([...known].map((name) => [name, response(status)])),
      });
    },

    async *watch(req: HealthCheckRequest, ctx: HandlerContext) {
      const current = () => (known.has(req.service) ? serving() : ServingStatus.SERVICE_UNKNOWN);
      // `changes` counts notifications, so one that arrives while a response
      // is being written is not lost: the loop only sleeps when nothing
      // changed since it last looked.
      let changes = 0;
      let wake: (() => void) | undefined;
      const notify = () => {
        changes++;
        wake?.();
      };
      const release = watches.acquire();
      const deadline = startStreamDeadline("health watch", deps.maxWatchDurationMs, notify);
      const unsubscribe = readiness.subscribe(notify);
      ctx.signal.addEventListener("abort", notify);
      try {
        let last: ServingStatus | undefined;
        for (;;) {
          const seen = changes;
          const status = current();
          if (status !== last) {
            last = status;
            yield response(status);
          }
          // Shutdown ends the watch after its NOT_SERVING (ctx.signal aborts
          // too: connect-node links the server's shutdownSignal to it).
          if (ctx.signal.aborted || readiness.status() === "stopping") return;
          if (deadline.expired) throw deadline.error();
          if (changes === seen) {
            await new Promise<void>((resolve) => {
              wake = resolve;
            });
            wake = undefined;
          }
        }
      } finally {
        release();
        deadline.clear();
        unsubscribe();
        ctx.signal.removeEventListener("abort", notify);
      }
    },
  };
}
