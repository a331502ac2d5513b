/**
 * The job model as the service sees it, independent of protobuf, BullMQ and
 * Redis. Timestamps are epoch milliseconds.
 */

/** A JSON value as found in report filters. */
export type JsonValue =
  | null
  | boolean
  | number
  | string
  | JsonValue[]
  | { [key: string]: JsonValue };

/** A JSON object: the shape of report filters. */
export type JsonObject = { [key: string]: JsonValue };

/** The report kinds; each has one generator on the worker side. */
export const reportTypes = ["weekly", "monthly", "custom"] as const;

/** A report kind. */
export type ReportType = (typeof reportTypes)[number];

/** Every job state, in life order: the one table of them (codecs and mappings read it). */
export const jobStates = [
  "queued",
  "running",
  "retrying",
  "succeeded",
  "failed",
  "cancelled",
] as const;

/** Where a job is in its life. */
export type JobState = (typeof jobStates)[number];

/** States a worker or CancelJob may still move a job out of. */
export const liveStates: readonly JobState[] = ["queued", "running", "retrying"];

/**
 * States of a job waiting to run (its BullMQ job waiting, delayed or in a
 * backoff): what a tenant's backlog bound (TENANT_MAX_BACKLOG) counts.
 */
export const backlogStates: readonly JobState[] = ["queued", "retrying"];

/** States a job never leaves on its own. */
export const terminalStates: ReadonlySet<JobState> = new Set(["succeeded", "failed", "cancelled"]);

/** Every scheduling priority, lowest first. */
export const jobPriorities = ["low", "normal", "high"] as const;

/** Scheduling priority. */
export type JobPriority = (typeof jobPriorities)[number];

/** Every event type: the one table of them. */
export const jobEventTypes = [
  "queued",
  "started",
  "progress",
  "retrying",
  "succeeded",
  "failed",
  "cancelled",
] as const;

/** What happened to a job; one per event-log entry. */
export type JobEventType = (typeof jobEventTypes)[number];

/** Event types after which a job's event log ends (until a RetryJob). */
export const terminalEventTypes: ReadonlySet<JobEventType> = new Set([
  "succeeded",
  "failed",
  "cancelled",
]);

/** Where a finished report is. `downloadPath` is relative to the API's base URL. */
export interface ReportArtifact {
  downloadPath: string;
  contentType: string;
  sizeBytes: number;
  /**
   * Where its bytes are when they sit in a segment (a file holding many
   * reports, worker/report-segments.ts): `sizeBytes` bytes from `offset`.
   * Absent for a report in a file of its own. Kept in the job record only:
   * events and API answers carry the download path.
   */
  segment?: SegmentLocation;
}

/** A report's place in a segment file of the deployment's folder. */
export interface SegmentLocation {
  /** The segment's name (domain/artifact-paths.ts newSegmentName). */
  name: string;
  /** Where the report begins, in bytes. */
  offset: number;
}

/** A job as stored: the one record GetJob reads. */
export interface JobView {
  id: string;
  tenant: string;
  userId: string;
  reportType: ReportType;
  state: JobState;
  progress: number;
  phase: string;
  attemptsMade: number;
  maxAttempts: number;
  result?: ReportArtifact;
  failureReason: string;
  createdAt: number;
  startedAt?: number;
  finishedAt?: number;
  filters: JsonObject;
  priority: JobPriority;
  runAt?: number;
  deadline?: number;
  /** Set when CancelJob asked a running job to stop: the reason given (or "cancelled"). */
  cancelReason?: string;
  /** When the latest run was queued: RetryJob's time for a re-run (createdAt otherwise). */
  requeuedAt?: number;
  /** W3C traceparent of the enqueue (producer) span of the job's latest run, when traced. */
  traceparent?: string;
  /** Digest of the idempotency key the job was submitted with; absent without a key. */
  idempotencyKeyDigest?: string;
  /** How often the reconciler queued the job again after BullMQ lost it. */
  recoveries?: number;
}

/** One entry of a job's event log. `id` is the stream entry id, the resume cursor. */
export interface JobEventView {
  id: string;
  type: JobEventType;
  state: JobState;
  progress: number;
  phase: string;
  attempt: number;
  time: number;
  result?: ReportArtifact;
  error?: string;
  nextAttemptAt?: number;
  /** Trace id (32 hex digits) of the job's run this event belongs to, when traced. */
  traceId?: string;
}

/** What a caller asks for when submitting a report, after validation. */
export interface SubmitInput {
  tenant: string;
  idempotencyKey?: string;
  userId: string;
  reportType: ReportType;
  filters: JsonObject;
  priority: JobPriority;
  runAt?: number;
  deadline?: number;
}

/** The answer to a submit. */
export interface SubmitOutcome {
  job: JobView;
  deduplicated: boolean;
}
