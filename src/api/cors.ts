/**
 * CORS for browser clients (Connect-Web), for the origins in CORS_ORIGINS.
 * Uses connect's lists of the headers each protocol needs.
 */
import { cors } from "@connectrpc/connect";
import type { NodeRequest, NodeResponse } from "./node-types.js";

type Req = NodeRequest;
type Res = NodeResponse;

/** Wraps `handler` so that allowed origins get CORS headers and preflights are answered. */
export function withCors(
  handler: (req: Req, res: Res) => void,
  origins: readonly string[],
): (req: Req, res: Res) => void {
  if (origins.length === 0) return handler;
  const any = origins.includes("*");
  const allowHeaders = [...cors.allowedHeaders, "Idempotency-Key", "Authorization"].join(", ");
  const exposeHeaders = [...cors.exposedHeaders, "Retry-After", "Location"].join(", ");
  return (req, res) => {
    const origin = req.headers.origin;
    if (typeof origin === "string" && (any || origins.includes(origin))) {
      res.setHeader("access-control-allow-origin", any ? "*" : origin);
      res.setHeader("vary", "Origin");
      res.setHeader("access-control-expose-headers", exposeHeaders);
      if (req.method === "OPTIONS") {
        res.writeHead(204, {
          "access-control-allow-methods": cors.allowedMethods.join(", "),
          "access-control-allow-headers": allowHeaders,
          "access-control-max-age": "7200",
        });
        res.end();
        return;
      }
    }
    handler(req, res);
  };
}
