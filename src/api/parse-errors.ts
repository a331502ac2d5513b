/**
 * connect-es answers a request whose protobuf binary cannot be decoded with
 * INTERNAL "parse binary: …" (its JSON counterpart is INVALID_ARGUMENT): the
 * serializer is shared with clients, where a bad message is the server's
 * fault. Likewise a malformed request stream (no message for a unary method,
 * two messages, …) is UNIMPLEMENTED "protocol error: …", and a message
 * flagged compressed without an encoding INTERNAL. On a server all are
 * the caller's fault, and INTERNAL/UNIMPLEMENTED read as server errors (HTTP
 * 500/501), so this rewrites exactly those answers, on every protocol, to
 * INVALID_ARGUMENT with the same explanation.
 * The rewrite happens where the protocols serialize errors (Connect unary
 * JSON body, Connect end-stream message, gRPC trailers or trailers-only
 * headers, gRPC-Web trailer frame); nothing else is touched.
 */
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerResponse } from "@connectrpc/connect/protocol";
import { codeToHttpStatus, codeToString } from "@connectrpc/connect/protocol-connect";

/** The answers rewritten: gRPC code, Connect code name, message prefix, and the prefix that replaces it. */
const rules = [
  {
    grpc: "13",
    connect: "internal",
    prefix: "parse binary: ",
    to: "request message is not valid protobuf: ",
  },
  {
    grpc: "13",
    connect: "internal",
    prefix: "received compressed envelope, but do not know how to decompress",
    to: "malformed request: a message is flagged compressed but the request names no supported encoding",
  },
  { grpc: "12", connect: "unimplemented", prefix: "protocol error: ", to: "malformed request: " },
] as const;
const invalidArgument = "3";

/** The rule matching (code, message), if any. */
function ruleFor(code: string | undefined, message: string | undefined) {
  if (code === undefined || message === undefined) return undefined;
  return rules.find((r) => (r.grpc === code || r.connect === code) && message.startsWith(r.prefix));
}

function rename(message: string): string {
  const r = rules.find((x) => message.startsWith(x.prefix));
  return r ? r.to + message.slice(r.prefix.length) : message;
}

/** Wraps a `routes` function so that every handler it registers gets the rewrite. */
export function withParseErrorsAsInvalidArgument(
  routes: (router: ConnectRouter) => void,
): (router: ConnectRouter) => void {
  return (router) => {
    routes(router);
    const handlers = router.handlers;
    for (let i = 0; i < handlers.length; i++) {
      const h = handlers[i] as UniversalHandler;
      handlers[i] = Object.assign((req: Parameters<UniversalHandler>[0]) => h(req).then(fix), h);
    }
  };
}

function fix(res: UniversalServerResponse): UniversalServerResponse {
  if (res.header) fixGrpcHeaders(res.header);
  const body = res.body;
  if (body === undefined || !mayCarryRewrittenError(res)) return res;
  const out: UniversalServerResponse = { ...res };
  out.body = fixedBody(body, out, res.trailer);
  return out;
}

/**
 * `body` with each chunk passed through fixChunk, and `trailer` fixed once
 * the body has ended (connect fills it in meanwhile). A plain iterator that
 * maps each step: an async generator here cost gRPC calls (every one of
 * which comes through it) a measurable share of their CPU.
 */
function fixedBody(
  body: AsyncIterable<Uint8Array>,
  out: UniversalServerResponse,
  trailer: Headers | undefined,
): AsyncIterable<Uint8Array> {
  return {
    [Symbol.asyncIterator]() {
      const it = body[Symbol.asyncIterator]();
      const step = (r: IteratorResult<Uint8Array>): IteratorResult<Uint8Array> => {
        if (r.done === true) {
          if (trailer) fixGrpcHeaders(trailer);
          return r;
        }
        return { done: false, value: fixChunk(r.value, out) };
      };
      return {
        next: () => it.next().then(step),
        return: (value?: unknown) =>
          it.return !== undefined
            ? it.return(value)
            : Promise.resolve({ done: true as const, value: undefined }),
        throw: (err?: unknown) => (it.throw !== undefined ? it.throw(err) : Promise.reject(err)),
      };
    },
  };
}

/**
 * False for answers that cannot carry an error to rewrite, which then pass
 * through without a wrapped body: a Connect unary answer (the body is the
 * whole message, or a JSON error) below HTTP 500. The errors rewritten are
 * 500 (INTERNAL) and 501 (UNIMPLEMENTED) there; streaming protocols (gRPC,
 * gRPC-Web, Connect streams) put errors in trailers or an end frame, after
 * any status, so they are always checked.
 */
function mayCarryRewrittenError(res: UniversalServerResponse): boolean {
  if (res.status >= 500) return true;
  const contentType = res.header?.get("content-type") ?? "";
  return (
    contentType.startsWith("application/grpc") || contentType.startsWith("application/connect+")
  );
}

/** gRPC: grpc-status 13 with a percent-encoded "parse binary" message. */
function fixGrpcHeaders(h: Headers): void {
  const message = h.get("grpc-message");
  if (message === null) return;
  const decoded = safeDecode(message);
  if (!ruleFor(h.get("grpc-status") ?? undefined, decoded)) return;
  h.set("grpc-status", invalidArgument);
  h.set("grpc-message", encodeURIComponent(rename(decoded)));
}

function fixChunk(chunk: Uint8Array, out: UniversalServerResponse): Uint8Array {
  // Connect unary error: the whole JSON body, with an HTTP 500.
  if (out.status >= 500 && out.header?.get("content-type")?.startsWith("application/json")) {
    const json = parse(chunk) as { code?: string; message?: string } | undefined;
    if (json?.message !== undefined && ruleFor(json.code, json.message)) {
      const bytes = Buffer.from(
        JSON.stringify({ ...json, code: "invalid_argument", message: rename(json.message) }),
      );
      out.status = 400;
      out.header.set("content-length", String(bytes.byteLength));
      return bytes;
    }
    return chunk;
  }
  // Enveloped end frames: Connect end-stream (flag 0x02, JSON) and gRPC-Web trailers (flag 0x80).
  const flags = chunk[0];
  if (chunk.length < 5 || (flags !== 0x02 && flags !== 0x80)) return chunk;
  const data = Buffer.from(chunk.buffer, chunk.byteOffset + 5, chunk.byteLength - 5);
  if (data.length !== Buffer.from(chunk.buffer, chunk.byteOffset, 5).readUInt32BE(1)) return chunk;
  let replaced: string | undefined;
  if (flags === 0x02) {
    const json = parse(data) as { error?: { code?: string; message?: string } } | undefined;
    if (json?.error?.message !== undefined && ruleFor(json.error.code, json.error.message)) {
      replaced = JSON.stringify({
        ...json,
        error: { ...json.error, code: "invalid_argument", message: rename(json.error.message) },
      });
    }
  } else {
    const text = data.toString("latin1");
    const status = /^grpc-status: *(\d+)\r?$/im.exec(text)?.[1];
    const message = /^grpc-message: *(.*?)\r?$/im.exec(text)?.[1];
    if (message !== undefined && ruleFor(status, safeDecode(message))) {
      replaced = text
        .replace(/^grpc-status: *\d+/im, `grpc-status: ${invalidArgument}`)
        .replace(
          /^grpc-message: *.*?(\r?)$/im,
          (_m, cr: string) =>
            `grpc-message: ${encodeURIComponent(rename(safeDecode(message)))}${cr}`,
        );
    }
  }
  if (replaced === undefined) return chunk;
  const payload = Buffer.from(replaced, flags === 0x02 ? "utf8" : "latin1");
  const framed = Buffer.alloc(5 + payload.length);
  framed[0] = flags;
  framed.writeUInt32BE(payload.length, 1);
  payload.copy(framed, 5);
  return framed;
}

function parse(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(
      Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"),
    );
  } catch {
    return undefined;
  }
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * The rewrite of a Connect unary error answer, on the error itself: what the
 * wrapper makes of the JSON of an error answered with HTTP 5xx (for
 * lean-unary.ts, which answers without connect's handler).
 */
export function asInvalidArgumentIfParseError(error: ConnectError): ConnectError {
  if (codeToHttpStatus(error.code) < 500) return error;
  if (!ruleFor(codeToString(error.code), error.rawMessage)) return error;
  const out = new ConnectError(
    rename(error.rawMessage),
    Code.InvalidArgument,
    error.metadata,
    undefined,
    error.cause,
  );
  out.details.push(...error.details);
  return out;
}
