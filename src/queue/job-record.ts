/**
 * The job record: a Redis hash holding everything GetJob answers, so one
 * HGETALL serves it whatever the queue's length (BullMQ's getState() scans
 * the wait list). Field names are short; this module is their only reader.
 */

import type {
  JobPriority,
  JobState,
  JobView,
  JsonObject,
  ReportArtifact,
  ReportType,
  SegmentLocation,
} from "../domain/job.js";
import { jobPriorities, jobStates, reportTypes } from "../domain/job.js";
import type { RecordUpdate } from "../domain/job-transitions.js";

/** Hash field names of the job record. */
export const recordField = {
  id: "id",
  tenant: "tenant",
  userId: "user",
  reportType: "type",
  state: "state",
  progress: "progress",
  phase: "phase",
  attemptsMade: "attempts",
  maxAttempts: "maxAttempts",
  resultPath: "resPath",
  resultType: "resType",
  resultSize: "resSize",
  /**
   * Where the result's bytes are in a segment, `<segment name>:<offset>`;
   * empty (or absent: records written before) for a report in a file of its own.
   */
  resultSegment: "resSeg",
  failureReason: "reason",
  createdAt: "created",
  startedAt: "started",
  finishedAt: "finished",
  filters: "filters",
  priority: "priority",
  runAt: "runAt",
  deadline: "deadline",
  fingerprint: "fp",
  cancelRequested: "cancelReq",
  /** When RetryJob re-queued the job (ms): the start of the enqueue-to-finish latency of the re-run. */
  requeuedAt: "requeued",
  /** W3C traceparent of the latest run's enqueue span; the event log copies its trace id into events. */
  traceparent: "trace",
  /**
   * The fencing token of the job's current attempt, set by its STARTED: the
   * attempt's later writes are refused unless they carry it (domain/job-transitions.ts).
   */
  attemptToken: "fence",
  /**
   * The digest of the idempotency key the job was submitted with (absent
   * without one): transitions pass its idempotency record, whose retention
   * follows the job's (keys.ts idempotency).
   */
  idempotencyKeyDigest: "idem",
  /** How often the reconciler queued the job again (worker/reconciler.ts). */
  recoveries: "recov",
} as const;

const states: readonly JobState[] = jobStates;
const priorities: readonly JobPriority[] = jobPriorities;

/**
 * Flattens the fields of a new job into HSET arguments: ten pairs always, in
 * this order (submit.lua names them), then the others a job has. A field at
 * its default (progress 0, no phase, no attempt made, no failure reason: a
 * new job's) is not written; decodeRecord reads its absence as the default,
 * as every version of it has. Each field of the hash costs its write and
 * every later one (a listpack grows by reallocation).
 */
export function encodeNewRecord(job: JobView, fingerprint: string): string[] {
  const f = recordField;
  const out = [
    f.id,
    job.id,
    f.tenant,
    job.tenant,
    f.userId,
    job.userId,
    f.reportType,
    job.reportType,
    f.state,
    job.state,
    f.maxAttempts,
    String(job.maxAttempts),
    f.createdAt,
    String(job.createdAt),
    f.filters,
    JSON.stringify(job.filters),
    f.priority,
    job.priority,
    f.fingerprint,
    fingerprint,
  ];
  if (job.progress !== 0) out.push(f.progress, String(job.progress));
  if (job.phase !== "") out.push(f.phase, job.phase);
  if (job.attemptsMade !== 0) out.push(f.attemptsMade, String(job.attemptsMade));
  if (job.failureReason !== "") out.push(f.failureReason, job.failureReason);
  if (job.runAt !== undefined) out.push(f.runAt, String(job.runAt));
  if (job.deadline !== undefined) out.push(f.deadline, String(job.deadline));
  if (job.traceparent) out.push(f.traceparent, job.traceparent);
  if (job.idempotencyKeyDigest) out.push(f.idempotencyKeyDigest, job.idempotencyKeyDigest);
  return out;
}

/**
 * Appends a result's HSET arguments to `out`; its segment field is always
 * written (empty without one), so a re-run's result never inherits the
 * place of the one before.
 */
function pushArtifact(out: (string | number)[], a: ReportArtifact): void {
  out.push(
    recordField.resultPath,
    a.downloadPath,
    recordField.resultType,
    a.contentType,
    recordField.resultSize,
    String(a.sizeBytes),
    recordField.resultSegment,
    a.segment === undefined ? "" : `${a.segment.name}:${a.segment.offset}`,
  );
}

/** The segment location of a record's `resSeg` field; undefined when empty or malformed. */
function decodeSegment(v: string | undefined): SegmentLocation | undefined {
  if (!v) return undefined;
  const colon = v.lastIndexOf(":");
  const offset = Number(v.slice(colon + 1));
  if (colon <= 0 || !Number.isSafeInteger(offset) || offset < 0) return undefined;
  return { name: v.slice(0, colon), offset };
}

/** The record field of each scalar of a RecordUpdate (complete: the type says so). */
const updateField: Record<Exclude<keyof RecordUpdate, "result">, string> = {
  state: recordField.state,
  progress: recordField.progress,
  phase: recordField.phase,
  attemptsMade: recordField.attemptsMade,
  maxAttempts: recordField.maxAttempts,
  failureReason: recordField.failureReason,
  startedAt: recordField.startedAt,
  finishedAt: recordField.finishedAt,
  cancelRequested: recordField.cancelRequested,
  traceparent: recordField.traceparent,
  requeuedAt: recordField.requeuedAt,
  attemptToken: recordField.attemptToken,
  recoveries: recordField.recoveries,
};
/** updateField's entries, listed once (every transition of every job encodes an update). */
const updateFields = Object.entries(updateField) as [keyof typeof updateField, string][];

/** Flattens a transition's record fields into HSET arguments; a cleared field is written empty. */
export function encodeRecordUpdate(u: RecordUpdate): string[] {
  const out: string[] = [];
  pushRecordUpdate(out, u);
  return out;
}

/**
 * encodeRecordUpdate's values appended to `out` (a script call's arguments,
 * which end with them): no array of their own per transition.
 */
export function pushRecordUpdate(out: (string | number)[], u: RecordUpdate): void {
  for (let i = 0; i < updateFields.length; i++) {
    const [key, field] = updateFields[i] as [keyof typeof updateField, string];
    const value = u[key];
    if (value !== undefined) out.push(field, value === null ? "" : String(value));
  }
  // Clearing the path clears the result (decodeRecord reads a result only with a path).
  if (u.result === null) out.push(recordField.resultPath, "");
  else if (u.result !== undefined) pushArtifact(out, u.result);
}

/** Turns HGETALL output (flat array or object) into a JobView; undefined when empty. */
export function decodeRecord(
  raw: Record<string, string> | string[] | null | undefined,
): JobView | undefined {
  const h = toObject(raw);
  if (h === undefined || h[recordField.id] === undefined) return undefined;
  const f = recordField;
  const type = h[f.reportType] as ReportType;
  const state = h[f.state] as JobState;
  const priority = h[f.priority] as JobPriority;
  const job: JobView = {
    id: h[f.id] ?? "",
    tenant: h[f.tenant] ?? "",
    userId: h[f.userId] ?? "",
    reportType: reportTypes.includes(type) ? type : "custom",
    state: states.includes(state) ? state : "queued",
    progress: numberField(h, f.progress) ?? 0,
    phase: h[f.phase] ?? "",
    attemptsMade: numberField(h, f.attemptsMade) ?? 0,
    maxAttempts: numberField(h, f.maxAttempts) ?? 0,
    failureReason: h[f.failureReason] ?? "",
    createdAt: numberField(h, f.createdAt) ?? 0,
    startedAt: numberField(h, f.startedAt),
    finishedAt: numberField(h, f.finishedAt),
    filters: parseFilters(h[f.filters]),
    priority: priorities.includes(priority) ? priority : "normal",
    runAt: numberField(h, f.runAt),
    deadline: numberField(h, f.deadline),
    requeuedAt: numberField(h, f.requeuedAt),
    recoveries: numberField(h, f.recoveries),
  };
  const cancelReason = h[f.cancelRequested];
  if (cancelReason) job.cancelReason = cancelReason;
  const traceparent = h[f.traceparent];
  if (traceparent) job.traceparent = traceparent;
  const idempotencyKeyDigest = h[f.idempotencyKeyDigest];
  if (idempotencyKeyDigest) job.idempotencyKeyDigest = idempotencyKeyDigest;
  const path = h[f.resultPath];
  if (path) {
    job.result = {
      downloadPath: path,
      contentType: h[f.resultType] ?? "application/octet-stream",
      sizeBytes: numberField(h, f.resultSize) ?? 0,
    };
    const segment = decodeSegment(h[f.resultSegment]);
    if (segment !== undefined) job.result.segment = segment;
  }
  return job;
}

/** A numeric field of a record; undefined when absent, empty or not a finite number. */
function numberField(h: Record<string, string>, k: string): number | undefined {
  const v = h[k];
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

/**
 * Converts a flat [k, v, k, v] reply or an object reply to an object (from a
 * flat reply, one that also has every record field absent from it, as undefined).
 */
export function toObject(
  raw: Record<string, string> | string[] | null | undefined,
): Record<string, string> | undefined {
  if (raw == null) return undefined;
  if (Array.isArray(raw)) {
    if (raw.length === 0) return undefined;
    const o = emptyRecordObject();
    for (let i = 0; i + 1 < raw.length; i += 2) o[raw[i] as string] = raw[i + 1] as string;
    return o;
  }
  return Object.keys(raw).length === 0 ? undefined : raw;
}

/**
 * An object that has every record field, undefined: assigning the fields of
 * a reply keeps it in V8's fast mode (an empty object filled by dynamic keys
 * turns into a dictionary after a dozen), so decodeRecord's two dozen reads
 * are cheap. An absent field reads as undefined either way (decodeRecord
 * reads fields by name).
 */
function emptyRecordObject(): Record<string, string> {
  return {
    id: undefined,
    tenant: undefined,
    user: undefined,
    type: undefined,
    state: undefined,
    progress: undefined,
    phase: undefined,
    attempts: undefined,
    maxAttempts: undefined,
    resPath: undefined,
    resType: undefined,
    resSize: undefined,
    resSeg: undefined,
    reason: undefined,
    created: undefined,
    started: undefined,
    finished: undefined,
    filters: undefined,
    priority: undefined,
    runAt: undefined,
    deadline: undefined,
    fp: undefined,
    cancelReq: undefined,
    requeued: undefined,
    trace: undefined,
    fence: undefined,
    idem: undefined,
    recov: undefined,
  } satisfies Record<
    (typeof recordField)[keyof typeof recordField],
    undefined
  > as unknown as Record<string, string>;
}

function parseFilters(s: string | undefined): JsonObject {
  if (!s) return {};
  try {
    const v: unknown = JSON.parse(s);
    return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as JsonObject) : {};
  } catch {
    return {};
  }
}
