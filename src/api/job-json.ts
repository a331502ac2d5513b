/**
 * The JSON of SubmitReportResponse and GetJobResponse as protobuf-es's
 * toJsonString writes it with connect's options (JSON names, implicit
 * defaults left out, enums by name, int64 as text, Timestamps in RFC 3339),
 * without its reflection: its writer turns the job's filters (a JsonObject)
 * into a Struct message and back, and costs about 3 µs per answer against
 * 1.8 here. For what it would refuse or write otherwise (an enum value the
 * schema lacks, a Timestamp out of range, filters holding what JSON.parse
 * cannot give: a number that is not finite, a `__proto__` key, undefined,
 * functions, other objects), these answer undefined and the caller uses
 * toJsonString, the reference. job-json.test.ts compares the two.
 */
import type { DescEnum } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import {
  type Job,
  JobPrioritySchema,
  JobStateSchema,
  type ReportResult,
  ReportTypeSchema,
} from "../../gen/reports/v1/job_pb.js";
import type {
  GetJobResponse,
  SubmitReportResponse,
} from "../../gen/reports/v1/report_service_pb.js";

/** Thrown inside this module when the reference writer must take over. */
const refer = Symbol("refer");

/** toJsonString of a SubmitReportResponse; undefined: use toJsonString. */
export function submitReportResponseJson(m: SubmitReportResponse): string | undefined {
  try {
    const json: Record<string, unknown> = {};
    if (m.jobId !== "") json.jobId = m.jobId;
    if (m.statusUrl !== "") json.statusUrl = m.statusUrl;
    if (m.job !== undefined) json.job = jobJson(m.job);
    if (m.deduplicated) json.deduplicated = true;
    return JSON.stringify(json);
  } catch (e) {
    if (e === refer) return undefined;
    throw e;
  }
}

/** toJsonString of a GetJobResponse; undefined: use toJsonString. */
export function getJobResponseJson(m: GetJobResponse): string | undefined {
  try {
    return JSON.stringify(m.job !== undefined ? { job: jobJson(m.job) } : {});
  } catch (e) {
    if (e === refer) return undefined;
    throw e;
  }
}

function jobJson(j: Job): Record<string, unknown> {
  const json: Record<string, unknown> = {};
  if (j.id !== "") json.id = j.id;
  if (j.userId !== "") json.userId = j.userId;
  if (j.reportType !== 0) json.reportType = enumName(ReportTypeSchema, j.reportType);
  if (j.state !== 0) json.state = enumName(JobStateSchema, j.state);
  if (j.progress !== 0) json.progress = j.progress;
  if (j.attemptsMade !== 0) json.attemptsMade = j.attemptsMade;
  if (j.maxAttempts !== 0) json.maxAttempts = j.maxAttempts;
  if (j.result !== undefined) json.result = resultJson(j.result);
  if (j.failureReason !== "") json.failureReason = j.failureReason;
  if (j.createdAt !== undefined) json.createdAt = timestampJson(j.createdAt);
  if (j.startedAt !== undefined) json.startedAt = timestampJson(j.startedAt);
  if (j.finishedAt !== undefined) json.finishedAt = timestampJson(j.finishedAt);
  if (j.filters !== undefined) {
    if (!plainJson(j.filters)) throw refer;
    json.filters = j.filters;
  }
  if (j.priority !== 0) json.priority = enumName(JobPrioritySchema, j.priority);
  if (j.runAt !== undefined) json.runAt = timestampJson(j.runAt);
  if (j.deadline !== undefined) json.deadline = timestampJson(j.deadline);
  if (j.phase !== "") json.phase = j.phase;
  if (j.traceId !== "") json.traceId = j.traceId;
  return json;
}

function resultJson(r: ReportResult): Record<string, unknown> {
  const json: Record<string, unknown> = {};
  if (r.downloadUrl !== "") json.downloadUrl = r.downloadUrl;
  if (r.contentType !== "") json.contentType = r.contentType;
  if (r.sizeBytes !== BigInt(0)) json.sizeBytes = r.sizeBytes.toString();
  return json;
}

function enumName(desc: DescEnum, value: number): string {
  const name = desc.value[value]?.name;
  if (name === undefined) throw refer;
  return name;
}

/** As protobuf-es's timestampToJson writes it. */
function timestampJson(t: Timestamp): string {
  const ms = Number(t.seconds) * 1000;
  // 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z, nanos 0 to 999,999,999: else it refuses.
  if (ms < -62135596800000 || ms > 253402300799000 || t.nanos < 0 || t.nanos > 999999999) {
    throw refer;
  }
  let z = "Z";
  if (t.nanos > 0) {
    const nanos = (t.nanos + 1000000000).toString().substring(1);
    if (nanos.substring(3) === "000000") z = `.${nanos.substring(0, 3)}Z`;
    else if (nanos.substring(6) === "000") z = `.${nanos.substring(0, 6)}Z`;
    else z = `.${nanos}Z`;
  }
  return new Date(ms).toISOString().replace(".000Z", z);
}

/**
 * Whether `v` is JSON as JSON.parse gives it (what a Struct holds and
 * JSON.stringify writes as protobuf-es does): null, booleans, strings,
 * finite numbers, arrays and plain objects of those, no `__proto__` key.
 */
function plainJson(v: unknown): boolean {
  switch (typeof v) {
    case "string":
    case "boolean":
      return true;
    case "number":
      return Number.isFinite(v);
    case "object": {
      if (v === null) return true;
      if (Array.isArray(v)) {
        // An index loop: a hole (no JSON.parse result has one) is not JSON.
        for (let i = 0; i < v.length; i++) if (!plainJson(v[i])) return false;
        return true;
      }
      const proto = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null) return false;
      for (const key of Object.keys(v)) {
        if (key === "__proto__" || !plainJson((v as Record<string, unknown>)[key])) return false;
      }
      return true;
    }
    default:
      return false;
  }
}
