/**
 * How the plain-HTTP routes answer: JSON bodies, and errors as Connect's own
 * JSON error body (`{"code": "not_found", "message": …}`) with the HTTP status
 * Connect gives the code, so a curl user reads the same errors as an RPC
 * caller. Two statuses depend on the domain error rather than the code; see
 * httpStatusOf.
 */
import type { ConnectError } from "@connectrpc/connect";
import { codeToHttpStatus, errorToJson } from "@connectrpc/connect/protocol-connect";
import type { Logger } from "pino";
import { IdempotencyConflictError, RequestTooLargeError } from "../domain/errors.js";
import { toConnectError } from "./error-map.js";
import type { NodeResponse } from "./node-types.js";

/** Headers of a ConnectError that plain HTTP passes on. */
const passedHeaders = ["retry-after", "www-authenticate"] as const;

/** Sends `body` as JSON with `status`. */
export function sendJson(
  res: NodeResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

/** Sends `err` (any error; error-map.ts makes it safe) as a Connect JSON error body. */
export function sendError(res: NodeResponse, err: unknown, logger: Logger): void {
  const ce = toConnectError(err, logger);
  const headers: Record<string, string> = {};
  for (const name of passedHeaders) {
    const value = ce.metadata.get(name);
    if (value !== null) headers[name] = value;
  }
  sendJson(res, httpStatusOf(ce), errorToJson(ce, undefined), headers);
}

/**
 * The HTTP status of an error on the plain routes: Connect's for its code,
 * except where plain HTTP has a more precise one for the domain error behind it:
 * - an idempotency key reused with another payload is 422 Unprocessable
 *   Content (IETF Idempotency-Key draft); RPCs keep ALREADY_EXISTS, which is
 *   409, as does a key that outlived its job (a conflict, not a bad payload);
 * - a body over the size limit is 413 Content Too Large (RESOURCE_EXHAUSTED, 429, otherwise).
 */
export function httpStatusOf(ce: ConnectError): number {
  const cause = ce.cause;
  if (cause instanceof IdempotencyConflictError && cause.reason === "payload-mismatch") return 422;
  if (cause instanceof RequestTooLargeError) return 413;
  return codeToHttpStatus(ce.code);
}
