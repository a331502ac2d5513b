/**
 * Streams a file as a response body. Unlike a bare `pipe`, a client that
 * goes away mid-file closes the file at once: `pipe` only unpipes on the
 * response's `close`, leaving the read stream paused and its descriptor open
 * for good, so clients aborting large downloads could exhaust the process's
 * file descriptors.
 */
import { createReadStream } from "node:fs";
import type { NodeResponse } from "./node-types.js";

/**
 * Pipes `file` into `res` (its headers already written), or only `length`
 * bytes from `start` when `range` is given (a report in a segment).
 * Resolves when the file (or range) was read to its end or the client
 * left; rejects on a read error.
 */
export function sendFile(
  res: NodeResponse,
  file: string,
  range?: { start: number; length: number },
): Promise<void> {
  if (range !== undefined && range.length === 0) {
    res.end();
    return Promise.resolve();
  }
  return new Promise<void>((resolve, reject) => {
    const stream = createReadStream(
      file,
      range === undefined ? undefined : { start: range.start, end: range.start + range.length - 1 },
    );
    const onClose = () => {
      stream.destroy();
      resolve();
    };
    res.once("close", onClose);
    stream.once("error", (err) => {
      res.off("close", onClose);
      reject(err);
    });
    stream.once("end", () => {
      res.off("close", onClose);
      resolve();
    });
    // The client may already have left (while the file was stat'ed): no `close` will come.
    if ("stream" in res ? res.stream.destroyed : res.destroyed) return onClose();
    stream.pipe(res as unknown as NodeJS.WritableStream);
  });
}
