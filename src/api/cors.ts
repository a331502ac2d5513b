/**
 * CORS for browser clients (Connect-Web, gRPC-Web, fetch of the plain
 * routes), for the origins in CORS_ORIGINS. Uses connect's lists of the
 * methods and headers each protocol needs, plus the app's own: Authorization
 * and Idempotency-Key (sent), Retry-After, Location and WWW-Authenticate (read).
 *
 * Credentials mode is never allowed (no Access-Control-Allow-Credentials):
 * callers authenticate with an explicit Authorization header, not cookies, so
 * `*` never combines with credentials. An origin not on the list gets no
 * Access-Control-* header at all, and its preflight a bare 403.
 */
import { cors } from "@connectrpc/connect";
import type { NodeRequest, NodeResponse } from "./node-types.js";

type Req = NodeRequest;
type Res = NodeResponse;

/** Headers a browser may send. */
export const corsAllowedHeaders = [...cors.allowedHeaders, "Authorization", "Idempotency-Key"];
/** Response headers a browser script may read. */
export const corsExposedHeaders = [
  ...cors.exposedHeaders,
  "Retry-After",
  "Location",
  "WWW-Authenticate",
];
/** How long a browser may cache a preflight answer, in seconds. */
export const corsMaxAgeSeconds = 7200;

/**
 * Whether every answer carries `Vary: Origin` (withCors sets it when the
 * answer depends on the caller's Origin: a list of origins, not `*`). Routes
 * that answer outside withCors (the raw HTTP/2 routes) add it themselves.
 */
export function corsVariesByOrigin(origins: readonly string[]): boolean {
  return origins.length > 0 && !origins.includes("*");
}

/** Wraps `handler` so that allowed origins get CORS headers and preflights are answered. */
export function withCors(
  handler: (req: Req, res: Res) => void,
  origins: readonly string[],
): (req: Req, res: Res) => void {
  if (origins.length === 0) return handler;
  const any = origins.includes("*");
  const varies = corsVariesByOrigin(origins);
  const allowHeaders = corsAllowedHeaders.join(", ");
  const exposeHeaders = corsExposedHeaders.join(", ");
  const allowMethods = cors.allowedMethods.join(", ");
  return (req, res) => {
    const origin = req.headers.origin;
    const preflight =
      req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined;
    // Answers differ by Origin: caches must key on it.
    if (varies) res.setHeader("vary", "Origin");
    if (typeof origin !== "string" || !(any || origins.includes(origin))) {
      if (preflight && typeof origin === "string") {
        res.writeHead(403, { "content-length": 0 });
        res.end();
        return;
      }
      handler(req, res);
      return;
    }
    res.setHeader("access-control-allow-origin", any ? "*" : origin);
    res.setHeader("access-control-expose-headers", exposeHeaders);
    if (preflight) {
      res.writeHead(204, {
        "access-control-allow-methods": allowMethods,
        "access-control-allow-headers": allowHeaders,
        "access-control-max-age": String(corsMaxAgeSeconds),
      });
      res.end();
      return;
    }
    handler(req, res);
  };
}
