/**
 * Answers the server writes itself, not the handler: to a request that did
 * not arrive in full in time (a trickled body, headers that never end), and
 * to a request over the stream caps. They are written in the caller's
 * protocol so every client shows the code and the sentence: gRPC and
 * gRPC-Web get a trailers-only response (`grpc-status`, `grpc-message`);
 * everything else (Connect, curl) gets an HTTP status with a Connect JSON
 * error body.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { errorToJson } from "@connectrpc/connect/protocol-connect";

/** Status, headers and body of an answer. */
export interface ServerAnswer {
  status: number;
  headers: Record<string, string>;
  /** Empty for gRPC and gRPC-Web: the status travels in the headers. */
  body: string;
}

/** The answer carrying `code` and `message` for a request of `contentType` (undefined: not known). */
export function errorAnswer(
  contentType: string | undefined,
  code: Code,
  message: string,
  httpStatus: number,
): ServerAnswer {
  const type = (contentType ?? "").toLowerCase();
  if (type.startsWith("application/grpc")) {
    return {
      status: 200,
      headers: {
        "content-type": type.startsWith("application/grpc-web")
          ? "application/grpc-web+proto"
          : "application/grpc+proto",
        "grpc-status": String(code),
        "grpc-message": encodeURIComponent(message),
      },
      body: "",
    };
  }
  return {
    status: httpStatus,
    headers: { "content-type": "application/json" },
    body: JSON.stringify(errorToJson(new ConnectError(message, code), undefined)),
  };
}

/** DEADLINE_EXCEEDED (HTTP 408): the request did not arrive in full within `timeoutMs`. */
export function requestTimeoutAnswer(contentType: string | undefined, timeoutMs: number) {
  return errorAnswer(
    contentType,
    Code.DeadlineExceeded,
    `request not received in full within ${timeoutMs} ms`,
    408,
  );
}

/** UNAVAILABLE (HTTP 503): `what` (e.g. "streams from your address") is at its cap of `max`. */
export function overCapAnswer(contentType: string | undefined, what: string, max: number) {
  return errorAnswer(
    contentType,
    Code.Unavailable,
    `too many open ${what} on this server (${max}); retry later`,
    503,
  );
}

/** An answer as raw HTTP/1.1 bytes, closing the connection. */
export function http1Bytes(answer: ServerAnswer): string {
  const reasons: Record<number, string> = { 200: "OK", 408: "Request Timeout" };
  const headers = Object.entries({
    ...answer.headers,
    "content-length": String(Buffer.byteLength(answer.body)),
    connection: "close",
  })
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join("");
  return `HTTP/1.1 ${answer.status} ${reasons[answer.status] ?? "Error"}\r\n${headers}\r\n${answer.body}`;
}
