/**
 * The Node adapter of the RPC routes, on connect's public universal-handler
 * API (as connect-fastify and connect-express are): connect-node's
 * `connectNodeAdapter`, with two costs it pays on every call taken out.
 *
 * - A unary response (one message, or an error) is collected and written in
 *   one go: status, headers (with its Content-Length over HTTP/1.1), body
 *   and trailers, instead of a header write, an awaited write per chunk and
 *   an end.
 * - The request's signal aborts with a reason made once, not with a fresh
 *   DOMException (and its stack trace) when the response closes, which it
 *   does at the end of every call.
 *
 * Streaming responses (WatchJob, Health/Watch, reflection) are written by
 * connect-node's own `universalResponseToNodeResponse`.
 */

import type http2 from "node:http2";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  type ConnectRouterOptions,
  type ContextValues,
  createConnectRouter,
} from "@connectrpc/connect";
import type { UniversalServerRequest, UniversalServerResponse } from "@connectrpc/connect/protocol";
import {
  compressionBrotli,
  compressionGzip,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import type { NodeHandler, NodeRequest, NodeResponse } from "./node-types.js";

/** What the handler serves. */
export interface RpcNodeHandlerOptions extends ConnectRouterOptions {
  routes: (router: ConnectRouter) => void;
  /** The context values each call starts with. */
  contextValues?: (req: NodeRequest) => ContextValues;
  /** Requests for paths no RPC has. */
  fallback: NodeHandler;
  /** Serves the requests it takes (lean-unary.ts) ahead of connect; false: connect serves it. */
  lean?: (req: NodeRequest, res: NodeResponse) => boolean;
}

/** The reason a request's signal aborts with when its response closes (the call is over, or the client left). */
const closed = new ConnectError("the request was closed", Code.Canceled);

/** HTTP/2 stream reset codes that mean a failure, as connect-node maps them (others: the client cancelled). */
const resetCodes: Record<number, Code> = {
  1: Code.Internal, // PROTOCOL_ERROR
  2: Code.Internal, // INTERNAL_ERROR
  3: Code.Internal, // FLOW_CONTROL_ERROR
  4: Code.Internal, // SETTINGS_TIMEOUT
  6: Code.Internal, // FRAME_SIZE_ERROR
  7: Code.Unavailable, // REFUSED_STREAM
  8: Code.Canceled, // CANCEL
  9: Code.Internal, // COMPRESSION_ERROR
  10: Code.Internal, // CONNECT_ERROR
  11: Code.ResourceExhausted, // ENHANCE_YOUR_CALM
  12: Code.PermissionDenied, // INADEQUATE_SECURITY
  13: Code.PermissionDenied, // HTTP_1_1_REQUIRED
};

/** Creates the handler; requests for other paths go to `fallback`. */
export function createRpcNodeHandler(options: RpcNodeHandlerOptions): NodeHandler {
  const router = createConnectRouter({
    // connect-node's default.
    acceptCompression: [compressionGzip, compressionBrotli],
    ...options,
  });
  options.routes(router);
  const handlers = new Map(router.handlers.map((h) => [h.requestPath, h]));
  return (req, res) => {
    const url = req.url ?? "";
    const query = url.indexOf("?");
    const handler = handlers.get(query === -1 ? url : url.slice(0, query));
    if (handler === undefined) {
      options.fallback(req, res);
      return;
    }
    if (options.lean?.(req, res) === true) return;
    const unary = handler.method.methodKind === "unary";
    let uReq: UniversalServerRequest;
    try {
      uReq = universalRequest(req, res, options.contextValues?.(req));
    } catch {
      // No authority (an HTTP/1.0 request without Host): nothing to build a URL from.
      res.writeHead(400, { "content-type": "text/plain", connection: "close" });
      res.end("the request names no host\n");
      return;
    }
    handler(uReq)
      .then((uRes) => (unary ? writeUnary(uRes, res) : universalResponseToNodeResponse(uRes, res)))
      .catch(() => {
        // The client left, or the response could not be written: nothing to answer.
        if (!res.destroyed) res.destroy();
      });
  };
}

/** The universal request of a Node request (connect-node's universalRequestFromNodeRequest, with a made-once abort reason). */
function universalRequest(
  req: NodeRequest,
  res: NodeResponse,
  contextValues: ContextValues | undefined,
): UniversalServerRequest {
  const encrypted = "encrypted" in req.socket && req.socket.encrypted === true;
  const authority = "authority" in req ? req.authority : req.headers.host;
  if (authority === undefined) {
    throw new ConnectError("unable to determine request authority", Code.InvalidArgument);
  }
  const controller = new AbortController();
  if ("stream" in req) {
    req.once("close", () => {
      const code = resetCodes[(req.stream as http2.ServerHttp2Stream).rstCode];
      controller.abort(
        code === undefined
          ? closed
          : new ConnectError(`http/2 stream closed with error code ${req.stream.rstCode}`, code),
      );
    });
  } else {
    // Node emits "close" on the request once its body is read: the response's says the exchange is over.
    const onError = (err: Error) => {
      req.off("error", onError);
      res.off("close", onClose);
      controller.abort(ConnectError.from(err, Code.Aborted));
    };
    const onClose = () => {
      req.off("error", onError);
      res.off("close", onClose);
      controller.abort(req.errored ? ConnectError.from(req.errored, Code.Aborted) : closed);
    };
    req.once("error", onError);
    res.once("close", onClose);
  }
  return {
    httpVersion: req.httpVersion,
    method: req.method ?? "",
    url: new URL(req.url ?? "", `${encrypted ? "https" : "http"}://${authority}`).toString(),
    header: webHeaders(req.headers),
    body: req as AsyncIterable<Uint8Array>,
    signal: controller.signal,
    contextValues,
  };
}

/** Writes a unary response (one message or an error) at once. */
async function writeUnary(uRes: UniversalServerResponse, res: NodeResponse): Promise<void> {
  const chunks: Uint8Array[] = [];
  if (uRes.body !== undefined) for await (const chunk of uRes.body) chunks.push(chunk);
  if (res.destroyed) return;
  const body = chunks.length === 1 ? (chunks[0] as Uint8Array) : Buffer.concat(chunks);
  const headers = nodeHeaders(uRes.header);
  if (!("stream" in res) && headers["transfer-encoding"] === undefined) {
    headers["content-length"] = String(body.byteLength);
  }
  res.writeHead(uRes.status, headers);
  if (uRes.trailer !== undefined) res.addTrailers(nodeHeaders(uRes.trailer));
  res.end(body);
}

/** Node request headers as Fetch Headers (HTTP/2 pseudo-headers left out). */
function webHeaders(h: NodeRequest["headers"]): Headers {
  const out = new Headers();
  for (const k in h) {
    if (k.startsWith(":")) continue;
    const v = h[k];
    if (v === undefined) continue;
    if (typeof v === "string") out.append(k, v);
    else for (const e of v) out.append(k, e);
  }
  return out;
}

/** Fetch Headers as a Node header object (a repeated header as a list). */
function nodeHeaders(h: Headers | undefined): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = Object.create(null);
  h?.forEach((value, key) => {
    if (key === "set-cookie") {
      out[key] = h.getSetCookie();
      return;
    }
    out[key] = value;
  });
  return out;
}
