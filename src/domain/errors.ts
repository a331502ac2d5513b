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

/** An idempotency key was reused with a different request. */
export class IdempotencyConflictError extends Error {
  override readonly name = "IdempotencyConflictError";
  constructor(
    message = "idempotency key already used for a different request; use a new key or repeat the original request",
  ) {
    super(message);
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
