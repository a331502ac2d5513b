/**
 * Request validation, one function per request. Hand-written because
 * buf/validate/validate.proto cannot be fetched here (see STYLE.md); the
 * violations use protovalidate's shape so clients can read them the same way.
 * Every problem of a request is reported at once.
 */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type {
  CancelJobRequest,
  GetJobRequest,
  ListJobsRequest,
  SubmitReportRequest,
  WatchJobRequest,
} from "../../gen/reports/v1/report_service_pb.js";
import { type FieldViolation, InvalidArgumentError } from "../domain/errors.js";
import {
  type JobState,
  type JsonObject,
  jobPriorities,
  reportTypes,
  type SubmitInput,
} from "../domain/job.js";
import { parseStreamId } from "../events/event-codec.js";
import type { ListQuery } from "../queue/job-lister.js";
import {
  priorityFromProto,
  priorityToProtoName,
  reportTypeFromProto,
  reportTypeToProtoName,
  stateFromProto,
} from "./proto-mapping.js";

/** Largest accepted filters object, serialized as JSON. */
export const maxFiltersBytes = 16 * 1024;
/** Deepest accepted nesting of filters: the top-level object is depth 1. */
export const maxFiltersDepth = 8;
/** Most object keys accepted in filters, counted at every level. */
export const maxFiltersKeys = 256;

/** Depth and total object keys of a JSON value; stops counting past the limits (bounded work). */
function measureJson(value: unknown): { depth: number; keys: number } {
  let depth = 0;
  let keys = 0;
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [v, d] = stack.pop() as [unknown, number];
    if (v === null || typeof v !== "object") continue;
    depth = Math.max(depth, d);
    if (depth > maxFiltersDepth || keys > maxFiltersKeys) break;
    const children = Array.isArray(v) ? v : Object.values(v as object);
    if (!Array.isArray(v)) keys += children.length;
    for (const c of children) stack.push([c, d + 1]);
  }
  return { depth, keys };
}

/** "A, B or C". */
function oneOf(names: readonly string[]): string {
  return names.length < 2 ? names.join("") : `${names.slice(0, -1).join(", ")} or ${names.at(-1)}`;
}

const printableAscii = /^[\x20-\x7e]{1,255}$/;
const jobIdPattern = /^[A-Za-z0-9_-]{1,64}$/;

/** Bounds of a SubmitReport request that come from the configuration. */
export interface SubmitBounds {
  /** How far ahead of `now` run_at may be, in ms (MAX_RUN_AT_SECONDS). */
  maxRunAtAheadMs: number;
  /** The time run_at is measured from, in ms (default: now). */
  now?: number;
}

/**
 * Validates a SubmitReport request.
 * @param headerKey - The Idempotency-Key header, used when the field is empty.
 * @throws InvalidArgumentError listing every bad field.
 */
export function validateSubmitReport(
  req: SubmitReportRequest,
  headerKey: string | null,
  tenant: string,
  bounds: SubmitBounds,
): SubmitInput {
  const v: FieldViolation[] = [];
  const userLength = [...req.userId].length;
  if (userLength < 1 || userLength > 128) {
    v.push({ field: "user_id", description: `must be 1-128 characters (got ${userLength})` });
  }
  const reportType = reportTypeFromProto(req.reportType);
  if (reportType === undefined) {
    v.push({
      field: "report_type",
      description: `must be set to ${oneOf(reportTypes.map(reportTypeToProtoName))}`,
    });
  }
  let idempotencyKey: string | undefined;
  if (req.idempotencyKey !== "") {
    idempotencyKey = req.idempotencyKey;
    if (!printableAscii.test(idempotencyKey)) {
      v.push({ field: "idempotency_key", description: "must be 1-255 printable ASCII characters" });
    }
  } else if (headerKey !== null && headerKey !== "") {
    idempotencyKey = headerKey;
    if (!printableAscii.test(idempotencyKey)) {
      v.push({
        field: "idempotency_key",
        description: "Idempotency-Key header must be 1-255 printable ASCII characters",
      });
    }
  }
  const filters: JsonObject = req.filters ?? {};
  const filtersBytes = Buffer.byteLength(JSON.stringify(filters));
  if (filtersBytes > maxFiltersBytes) {
    v.push({
      field: "filters",
      description: `must be at most ${maxFiltersBytes} bytes as JSON (got ${filtersBytes})`,
    });
  }
  const shape = measureJson(filters);
  if (shape.depth > maxFiltersDepth) {
    v.push({
      field: "filters",
      description: `must be nested at most ${maxFiltersDepth} levels deep`,
    });
  }
  if (shape.keys > maxFiltersKeys) {
    v.push({
      field: "filters",
      description: `must have at most ${maxFiltersKeys} keys in all`,
    });
  }
  const priority = priorityFromProto(req.priority);
  if (priority === undefined) {
    v.push({
      field: "priority",
      description: `must be ${oneOf(jobPriorities.map(priorityToProtoName))}`,
    });
  }
  const runAt = req.runAt ? timestampMs(req.runAt) : undefined;
  const deadline = req.deadline ? timestampMs(req.deadline) : undefined;
  if (runAt !== undefined && deadline !== undefined && runAt >= deadline) {
    v.push({ field: "run_at", description: "must be before deadline" });
  }
  // A far-future job waits in the backlog all that time: bounded, so run_at
  // cannot park work (and hold backlog room) for ever.
  const latestRunAt = (bounds.now ?? Date.now()) + bounds.maxRunAtAheadMs;
  if (runAt !== undefined && runAt > latestRunAt) {
    v.push({
      field: "run_at",
      description: `must be at most ${aheadText(bounds.maxRunAtAheadMs)} from now (${new Date(latestRunAt).toISOString()})`,
    });
  }
  if (v.length > 0 || reportType === undefined || priority === undefined)
    throw new InvalidArgumentError(v);
  return {
    tenant,
    idempotencyKey,
    userId: req.userId,
    reportType,
    filters,
    priority,
    runAt,
    deadline,
  };
}

/** "30 days", "2 hours", "90 seconds": the largest whole unit. */
function aheadText(ms: number): string {
  const units: Array<[string, number]> = [
    ["day", 86_400_000],
    ["hour", 3_600_000],
    ["minute", 60_000],
  ];
  for (const [name, size] of units) {
    if (ms % size === 0) return `${ms / size} ${name}${ms === size ? "" : "s"}`;
  }
  const seconds = Math.floor(ms / 1000);
  return `${seconds} second${seconds === 1 ? "" : "s"}`;
}

/** Validates a job id field. */
function jobIdViolations(jobId: string): FieldViolation[] {
  return jobIdPattern.test(jobId)
    ? []
    : [
        {
          field: "job_id",
          description: "must be a job id as returned by SubmitReport (1-64 of A-Z a-z 0-9 _ -)",
        },
      ];
}

/** Validates a GetJob request (or any request that only names a job). */
export function validateGetJob(req: Pick<GetJobRequest, "jobId">): string {
  const v = jobIdViolations(req.jobId);
  if (v.length > 0) throw new InvalidArgumentError(v);
  return req.jobId;
}

/** Validates a WatchJob request; returns the job id and the cursor (undefined for "from the start"). */
export function validateWatchJob(req: WatchJobRequest): { jobId: string; afterEventId?: string } {
  const v = jobIdViolations(req.jobId);
  let afterEventId: string | undefined;
  if (req.afterEventId !== "") {
    if (parseStreamId(req.afterEventId) === undefined) {
      v.push({
        field: "after_event_id",
        description: "must be an event id from an earlier JobEvent.id, like 1732812345678-0",
      });
    } else {
      afterEventId = req.afterEventId;
    }
  }
  if (v.length > 0) throw new InvalidArgumentError(v);
  return { jobId: req.jobId, afterEventId };
}

/** Validates a CancelJob request; the reason defaults to "cancelled by request". */
export function validateCancelJob(req: CancelJobRequest): { jobId: string; reason: string } {
  const v = jobIdViolations(req.jobId);
  const length = [...req.reason].length;
  if (length > 512)
    v.push({ field: "reason", description: `must be at most 512 characters (got ${length})` });
  if (v.length > 0) throw new InvalidArgumentError(v);
  return {
    jobId: req.jobId,
    reason: req.reason.trim() === "" ? "cancelled by request" : req.reason,
  };
}

/** Validates a ListJobs request: page_size 0 (= 50) to 200, known states, user_id up to 128 characters. */
export function validateListJobs(req: ListJobsRequest, tenant: string): ListQuery {
  const v: FieldViolation[] = [];
  if (req.pageSize < 0 || req.pageSize > 200) {
    v.push({
      field: "page_size",
      description: `must be 0 (default 50) to 200 (got ${req.pageSize})`,
    });
  }
  const userLength = [...req.userId].length;
  if (userLength > 128)
    v.push({ field: "user_id", description: `must be at most 128 characters (got ${userLength})` });
  const states: JobState[] = [];
  for (const s of req.states) {
    const state = stateFromProto(s);
    if (state === undefined) {
      v.push({ field: "states", description: `contains ${s}, which is not a job state` });
    } else if (!states.includes(state)) {
      states.push(state);
    }
  }
  if (req.pageToken.length > 512)
    v.push({ field: "page_token", description: "is not a next_page_token" });
  if (v.length > 0) throw new InvalidArgumentError(v);
  return {
    tenant,
    userId: req.userId === "" ? undefined : req.userId,
    states,
    pageSize: req.pageSize === 0 ? 50 : req.pageSize,
    pageToken: req.pageToken === "" ? undefined : req.pageToken,
  };
}
