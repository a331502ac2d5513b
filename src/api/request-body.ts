/** Reading a plain-HTTP request body, bounded. */
import type { JsonValue } from "@bufbuild/protobuf";
import { MalformedRequestError, RequestTooLargeError } from "../domain/errors.js";
import type { NodeRequest } from "./node-types.js";

/** Largest plain-HTTP request body; larger ones get 413 before they are read whole. */
export const maxBodyBytes = 64 * 1024;

/**
 * Reads the body and parses it as JSON.
 * @throws RequestTooLargeError over maxBodyBytes (declared or sent), MalformedRequestError when it is not JSON.
 */
export async function readJsonBody(req: NodeRequest): Promise<JsonValue> {
  const text = (await readBody(req)).toString("utf8");
  try {
    return JSON.parse(text) as JsonValue;
  } catch {
    throw new MalformedRequestError("request body is not valid JSON");
  }
}

/**
 * Reads the body up to maxBodyBytes. Not with `for await`: leaving that loop
 * destroys the request, and on HTTP/1.1 the socket with it, before the 413
 * could be sent; here the rest is left to Node to discard.
 */
function readBody(req: NodeRequest): Promise<Buffer> {
  if (Number(req.headers["content-length"] ?? 0) > maxBodyBytes)
    return Promise.reject(new RequestTooLargeError(maxBodyBytes));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = () => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBodyBytes) {
        done();
        reject(new RequestTooLargeError(maxBodyBytes));
      } else chunks.push(chunk);
    };
    const onEnd = () => {
      done();
      resolve(Buffer.concat(chunks));
    };
    const onError = (err: Error) => {
      done();
      reject(err);
    };
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
  });
}
