/**
 * A GetJobRequest read from the JSON most callers send, `{"jobId":"…"}` with
 * a job id of printable ASCII (no quote or backslash), without protobuf's
 * reflection: for such a text the result equals what connect's JSON
 * serialization parses (fromJsonString with connect's options; no escape,
 * no other character and no other key can be in it, so JSON.parse would give
 * the same string). Any other text (whitespace, another or a second key, the
 * proto name `job_id`, an escape, non-ASCII, `null`, ...) answers undefined and
 * the caller parses with connect, which stays the reference and words every
 * error. get-job-json-reader.test.ts compares the two.
 *
 * Parsing with reflection (a TextDecoder pass, JSON.parse, fromJson) cost a
 * Connect GET about 1.5 µs; this, a scan of the id and a create().
 */
import { create } from "@bufbuild/protobuf";
import { type GetJobRequest, GetJobRequestSchema } from "../../gen/reports/v1/report_service_pb.js";

const head = '{"jobId":"';
const tail = '"}';

/** The request in `text`, or undefined when connect must parse it (see above). */
export function readGetJobJsonText(text: string): GetJobRequest | undefined {
  const end = text.length - tail.length;
  if (end < head.length || !text.startsWith(head) || !text.endsWith(tail)) return undefined;
  for (let i = head.length; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return undefined;
  }
  return create(GetJobRequestSchema, { jobId: text.slice(head.length, end) });
}

/** The same for a request body (UTF-8; non-ASCII bytes are left to connect). */
export function readGetJobJson(body: Uint8Array): GetJobRequest | undefined {
  return readGetJobJsonText(
    Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString("latin1"),
  );
}
