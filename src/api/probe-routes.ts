/**
 * The API port's probes, public like gRPC health: `/healthz` (the process
 * answers) and `/readyz` (readiness.ts, the same answer gRPC health gives:
 * 200 `{"status":"ready"}`, or 503 with the reason).
 */
import { sendJson } from "./http-responses.js";
import type { RouteHandler } from "./http-router.js";
import type { Readiness } from "./readiness.js";

/** `/healthz`: 200 while the process answers at all. */
export const livenessRoute: RouteHandler = ({ res }) => sendJson(res, 200, { status: "ok" });

/** `/readyz`: 200 when ready, 503 otherwise; `status` says which. */
export function createReadinessRoute(readiness: Readiness): RouteHandler {
  return ({ res }) => {
    const status = readiness.status();
    sendJson(res, status === "ready" ? 200 : 503, { status });
  };
}
