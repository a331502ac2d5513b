/**
 * The answer to a request that did not arrive in full in time (a trickled
 * body, headers that never end), written by the server itself, not by the
 * handler, in the caller's protocol so every client shows the code and the
 * sentence: gRPC and gRPC-Web get a trailers-only response with
 * `grpc-status: 4` (DEADLINE_EXCEEDED); everything else (Connect, curl)
 * gets HTTP 408 with a Connect JSON error body `deadline_exceeded`.
 */
import { Code } from "@connectrpc/connect";

/** Status, headers and body of the answer. */
export interface TimeoutResponse {
  status: number;
  headers: Record<string, string>;
  /** Empty for gRPC and gRPC-Web: the status travels in the headers. */
  body: string;
}

/** The sentence callers read. */
export function requestTimeoutMessage(timeoutMs: number): string {
  return `request not received in full within ${timeoutMs} ms`;
}

/** The answer for a request of `contentType` (undefined: the headers never arrived). */
export function requestTimeoutResponse(
  contentType: string | undefined,
  timeoutMs: number,
): TimeoutResponse {
  const message = requestTimeoutMessage(timeoutMs);
  const type = (contentType ?? "").toLowerCase();
  if (type.startsWith("application/grpc")) {
    return {
      status: 200,
      headers: {
        "content-type": type.startsWith("application/grpc-web")
          ? "application/grpc-web+proto"
          : "application/grpc+proto",
        "grpc-status": String(Code.DeadlineExceeded),
        "grpc-message": encodeURIComponent(message),
      },
      body: "",
    };
  }
  return {
    status: 408,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ code: "deadline_exceeded", message }),
  };
}

/** The answer as raw HTTP/1.1 bytes, closing the connection. */
export function http1Bytes(response: TimeoutResponse): string {
  const status = response.status === 200 ? "200 OK" : `${response.status} Request Timeout`;
  const headers = Object.entries({
    ...response.headers,
    "content-length": String(Buffer.byteLength(response.body)),
    connection: "close",
  })
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join("");
  return `HTTP/1.1 ${status}\r\n${headers}\r\n${response.body}`;
}
