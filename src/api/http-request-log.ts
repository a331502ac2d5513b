/**
 * One log line per plain-HTTP request (POST /v1/reports, GET /v1/jobs/{id},
 * downloads), the counterpart of the RPC request log for the routes Connect
 * interceptors do not see: method, path (no query string), status, duration
 * and tenant. Probes (/healthz, /readyz) log at debug only. Never bodies or
 * headers.
 */
import type { ContextValues } from "@connectrpc/connect";
import type { Logger } from "pino";
import { kTenant } from "./context-keys.js";
import type { NodeRequest, NodeResponse } from "./node-types.js";

const probes = new Set(["/healthz", "/readyz"]);

/** Wraps `handler` so each request logs one line when its response is done. */
export function withHttpRequestLog(
  handler: (req: NodeRequest, res: NodeResponse) => void,
  deps: { logger: Logger; contextValues: (req: NodeRequest) => ContextValues },
): (req: NodeRequest, res: NodeResponse) => void {
  const { contextValues } = deps;
  // Fixed, safe fields (no bodies, no headers): no redaction pass (see request-log-interceptor.ts).
  const logger = deps.logger.child({}, { redact: [] });
  return (req, res) => {
    const started = performance.now();
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    res.once("close", () => {
      let tenant: string | undefined;
      try {
        tenant = contextValues(req).get(kTenant);
      } catch {
        tenant = undefined;
      }
      const fields = {
        method: req.method,
        path,
        protocol: "http",
        status: res.statusCode,
        duration_ms: Math.round((performance.now() - started) * 1000) / 1000,
        tenant,
      };
      if (probes.has(path)) logger.debug(fields, "http");
      else if (res.statusCode >= 500) logger.warn(fields, "http failed");
      else logger.info(fields, "http");
    });
    handler(req, res);
  };
}
