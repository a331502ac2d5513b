/**
 * Domain errors thrown by the lower layers. The API maps each to a Connect
 * code and a sentence that is safe to send (see src/api/error-map.ts); their
 * messages are written for the caller, their causes are for the logs only.
 */

/** One invalid field of a request. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** The request is malformed; `violations` names each bad field. */
export class InvalidArgumentError extends Error {
  override readonly name = "InvalidArgumentError";
  constructor(readonly violations: FieldViolation[]) {
    super(`invalid request: ${violations.map((v) => `${v.field}: ${v.description}`).join("; ")}`);
  }
}

/** No such job for this tenant (or it expired). */
export class JobNotFoundError extends Error {
  override readonly name = "JobNotFoundError";
  constructor(readonly jobId: string) {
    super(`job ${JSON.stringify(jobId)} not found`);
  }
}

/**
 * Why an idempotency key cannot take this request: it was used for a
 * different request (`payload-mismatch`), or for a job that has expired
 * since (`job-expired`: the key outlived its job).
 */
export type IdempotencyConflict =
  | { reason: "payload-mismatch" }
  | { reason: "job-expired"; jobId: string };

/** An idempotency key was reused with a different request, or outlived its job. */
export class IdempotencyConflictError extends Error {
  override readonly name = "IdempotencyConflictError";
  readonly reason: IdempotencyConflict["reason"];
  /** @param conflict - what happened: another request under the key, or the key outlived its job. */
  constructor(conflict: IdempotencyConflict = { reason: "payload-mismatch" }) {
    super(
      conflict.reason === "job-expired"
        ? `idempotency key was used for job ${conflict.jobId}, which has expired; use a new key`
        : "idempotency key already used for a different request; use a new key or repeat the original request",
    );
    this.reason = conflict.reason;
  }
}

/** Too much work queued, or the tenant is over its rate. */
export class BackpressureError extends Error {
  override readonly name = "BackpressureError";
  constructor(
    message: string,
    readonly retryAfterMs: number,
  ) {
    super(message);
  }
}

/** The operation does not apply to the job's current state. */
export class FailedPreconditionError extends Error {
  override readonly name = "FailedPreconditionError";
}

/** A WatchJob cursor points into events that were trimmed away. */
export class CursorTrimmedError extends Error {
  override readonly name = "CursorTrimmedError";
  constructor(readonly cursor: string) {
    super(
      `events after ${cursor} are no longer retained; watch again without after_event_id and reconcile with GetJob`,
    );
  }
}

/**
 * A WatchJob cursor past the newest event the job's log ever had: not an id
 * this job's log handed out (another job's, or made up). Answered at once
 * rather than waiting for events that will never come after it.
 */
export class CursorAheadError extends Error {
  override readonly name = "CursorAheadError";
  constructor(readonly cursor: string) {
    super(
      `cursor ${cursor} is ahead of the job's log; resume from an event id this job's watch gave you, or watch from the start`,
    );
  }
}

/** Storage (Redis) cannot be reached; the caller may retry. */
export class StorageUnavailableError extends Error {
  override readonly name = "StorageUnavailableError";
  constructor(options?: { cause?: unknown }) {
    super("storage is unavailable; retry shortly", options);
  }
}

/** The server is shutting down; the caller should retry elsewhere. */
export class ShuttingDownError extends Error {
  override readonly name = "ShuttingDownError";
  constructor() {
    super("server is shutting down; resume from your last event id");
  }
}

/** A watch stayed open for its longest allowed time; the caller resumes from its last event id. */
export class WatchTimeLimitError extends Error {
  override readonly name = "WatchTimeLimitError";
  constructor(readonly maxDurationMs: number) {
    super(
      `watch reached its maximum duration (${maxDurationMs} ms); resume from your last event id`,
    );
  }
}

/** The caller presented no API key, a malformed one, or an unknown one: one answer for all three. */
export class UnauthenticatedError extends Error {
  override readonly name = "UnauthenticatedError";
  constructor() {
    super("missing or invalid API key; send the header Authorization: Bearer <key>");
  }
}

/**
 * A signed download link that does not verify: altered, expired, another
 * job's or file's, or its job is gone. One answer for all, so a link reveals nothing.
 */
export class InvalidDownloadLinkError extends Error {
  override readonly name = "InvalidDownloadLinkError";
  constructor() {
    super("download link is invalid or has expired; get a fresh one from GetJob");
  }
}

/**
 * A job has no such report to download: `not-produced` when the name is not
 * its report's (or the job has none yet), `removed` when the file is gone
 * (retention deleted it).
 */
export class ReportNotFoundError extends Error {
  override readonly name = "ReportNotFoundError";
  constructor(
    readonly jobId: string,
    readonly fileName: string,
    readonly reason: "not-produced" | "removed",
  ) {
    super(
      reason === "removed"
        ? `the report of job ${jobId} is no longer available`
        : `job ${jobId} has no report named ${fileName}`,
    );
  }
}

/**
 * A request body that cannot be read as the request: not JSON, or JSON that
 * is not the message's JSON form. The message says which.
 */
export class MalformedRequestError extends Error {
  override readonly name = "MalformedRequestError";
}

/** A request body over the size limit; it was not read whole. */
export class RequestTooLargeError extends Error {
  override readonly name = "RequestTooLargeError";
  constructor(readonly limitBytes: number) {
    super(`request body exceeds ${limitBytes} bytes`);
  }
}
