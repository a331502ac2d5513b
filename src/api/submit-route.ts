/**
 * `POST /v1/reports`: SubmitReport for curl users. The body is the
 * SubmitReportRequest's JSON (report types may be short: "weekly"), the
 * idempotency key may come in an `Idempotency-Key` header (IETF draft, bare
 * or as a structured-field string), and the answer is `202 {jobId,
 * statusUrl, deduplicated}` with a Location header. The SubmitReport handler
 * does the work, so validation, errors and idempotency are the RPC's.
 */
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import {
  SubmitReportRequestSchema,
  type SubmitReportResponseSchema,
} from "../../gen/reports/v1/report_service_pb.js";
import { MalformedRequestError } from "../domain/errors.js";
import { reportTypes } from "../domain/job.js";
import { sendJson } from "./http-responses.js";
import { bridgedCall, type RouteHandler } from "./http-router.js";
import { reportTypeToProtoName } from "./proto-mapping.js";
import { readJsonBody } from "./request-body.js";
import { type BridgedUnary, clientLeftSignal } from "./rpc-bridge.js";

/** Creates the handler over the bridged SubmitReport. */
export function createSubmitRoute(deps: {
  submitReport: BridgedUnary<typeof SubmitReportRequestSchema, typeof SubmitReportResponseSchema>;
}): RouteHandler {
  return async (request) => {
    const body = await readJsonBody(request.req);
    const left = clientLeftSignal(request.res);
    try {
      const call = bridgedCall(request, left.signal);
      // The Idempotency-Key draft sends the key as a structured-field string: "abc".
      const key = call.requestHeader.get("idempotency-key");
      if (key !== null) call.requestHeader.set("idempotency-key", key.replace(/^"(.*)"$/, "$1"));
      const out = await deps.submitReport(decode(body), call);
      sendJson(
        request.res,
        202,
        { jobId: out.jobId, statusUrl: out.statusUrl, deduplicated: out.deduplicated },
        { location: out.statusUrl },
      );
    } finally {
      left.done();
    }
  };
}

/**
 * The SubmitReportRequest of a body, short report type names ("weekly")
 * read as their enum names.
 * @throws MalformedRequestError when the body is not the message's JSON form.
 */
function decode(body: JsonValue) {
  const normalized =
    body !== null && typeof body === "object" && !Array.isArray(body) ? { ...body } : body;
  if (normalized !== null && typeof normalized === "object" && !Array.isArray(normalized)) {
    for (const field of ["reportType", "report_type"]) {
      const value = normalized[field];
      const short =
        typeof value === "string" ? reportTypes.find((t) => t === value.toLowerCase()) : undefined;
      if (short !== undefined) normalized[field] = reportTypeToProtoName(short);
    }
  }
  try {
    return fromJson(SubmitReportRequestSchema, normalized);
  } catch (err) {
    const detail =
      err instanceof Error ? err.message.replace(/^cannot decode [^:]*: /, "") : "malformed";
    throw new MalformedRequestError(`request body is not a valid SubmitReportRequest: ${detail}`);
  }
}
