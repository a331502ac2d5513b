/**
 * The one table from domain errors to Connect codes. Messages sent are the
 * domain errors' own sentences, written for callers; anything unexpected is
 * INTERNAL "internal error", with the cause logged and never sent.
 */
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import {
  FieldPathSchema,
  ViolationsSchema,
} from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import { RetryInfoSchema } from "../../gen/reports/v1/errors_pb.js";
import {
  BackpressureError,
  CursorAheadError,
  CursorTrimmedError,
  FailedPreconditionError,
  IdempotencyConflictError,
  InvalidArgumentError,
  InvalidDownloadLinkError,
  JobNotFoundError,
  MalformedRequestError,
  ReportNotFoundError,
  RequestTooLargeError,
  ShuttingDownError,
  StorageUnavailableError,
  UnauthenticatedError,
  WatchTimeLimitError,
} from "../domain/errors.js";
import { isStorageUnavailable } from "../queue/storage-errors.js";

/**
 * How one domain error type becomes a ConnectError: its code, and what the
 * error adds to its own message (headers, details, a longer sentence).
 */
interface Rule<E extends Error> {
  type: abstract new (...args: never[]) => E;
  code: Code;
  message?(err: E): string;
  metadata?(err: E): HeadersInit;
  details?(err: E): OutgoingDetail[];
}
type OutgoingDetail = NonNullable<ConstructorParameters<typeof ConnectError>[3]>[number];

/** A rule, typed by its error type (the table below holds rules of every type). */
const rule = <E extends Error>(r: Rule<E>): Rule<Error> => r;

/** Whole seconds to wait before retrying, at least 1. */
const retrySeconds = (e: BackpressureError) => Math.max(1, Math.ceil(e.retryAfterMs / 1000));

/** The one table: each domain error's code, in the order the types are tested. */
const rules: readonly Rule<Error>[] = [
  rule({
    type: InvalidArgumentError,
    code: Code.InvalidArgument,
    details: (e) => [
      {
        desc: ViolationsSchema,
        value: create(ViolationsSchema, {
          violations: e.violations.map((v) => ({
            field: create(FieldPathSchema, { elements: [{ fieldName: v.field }] }),
            ruleId: `${v.field}.invalid`,
            message: v.description,
          })),
        }),
      },
    ],
  }),
  rule({ type: MalformedRequestError, code: Code.InvalidArgument }),
  rule({ type: JobNotFoundError, code: Code.NotFound }),
  rule({ type: ReportNotFoundError, code: Code.NotFound }),
  rule({ type: IdempotencyConflictError, code: Code.AlreadyExists }),
  rule({
    type: BackpressureError,
    code: Code.ResourceExhausted,
    message: (e) => `${e.message} (retry after ${retrySeconds(e)} s)`,
    metadata: (e) => ({ "retry-after": String(retrySeconds(e)) }),
    details: (e) => [
      { desc: RetryInfoSchema, value: { retryDelay: durationFromMs(e.retryAfterMs) } },
    ],
  }),
  rule({ type: RequestTooLargeError, code: Code.ResourceExhausted }),
  rule({ type: FailedPreconditionError, code: Code.FailedPrecondition }),
  rule({ type: CursorTrimmedError, code: Code.OutOfRange }),
  rule({ type: CursorAheadError, code: Code.OutOfRange }),
  rule({ type: ShuttingDownError, code: Code.Unavailable }),
  rule({ type: WatchTimeLimitError, code: Code.Unavailable }),
  // RFC 9110 §11.6.1: a 401 names the scheme; every protocol gets the header.
  rule({
    type: UnauthenticatedError,
    code: Code.Unauthenticated,
    metadata: () => ({ "www-authenticate": 'Bearer realm="report-jobs"' }),
  }),
  rule({ type: InvalidDownloadLinkError, code: Code.PermissionDenied }),
];

/**
 * Maps any error thrown below the API to a ConnectError that is safe to send.
 * A domain error stays on as its `cause` (for the logs, and for the plain
 * HTTP routes, which choose some statuses by it); the cause is never sent.
 */
export function toConnectError(err: unknown, logger: Logger): ConnectError {
  if (err instanceof ConnectError) return err;
  for (const r of rules) {
    if (err instanceof r.type) {
      return new ConnectError(
        r.message?.(err) ?? err.message,
        r.code,
        r.metadata?.(err),
        r.details?.(err),
        err,
      );
    }
  }
  // A call's own signal ended it (the client left, or its deadline passed):
  // the reason a queue method rethrows. Nothing went wrong on our side.
  const aborted = abortCode(err);
  if (aborted !== undefined) {
    return new ConnectError(
      aborted === Code.Canceled ? "the call was canceled" : "the call's deadline passed",
      aborted,
    );
  }
  // Storage errors keep no cause: a driver's error carries commands and request data.
  if (err instanceof StorageUnavailableError || isStorageUnavailable(err)) {
    logger.warn({ err: err instanceof Error ? err.message : String(err) }, "storage unavailable");
    return new ConnectError(new StorageUnavailableError().message, Code.Unavailable);
  }
  // Only name, message and stack: driver errors carry whole commands (and request data) as properties.
  const e =
    err instanceof Error
      ? { type: err.name, message: err.message, stack: err.stack }
      : { message: String(err) };
  logger.error({ err: e }, "unexpected error");
  return new ConnectError("internal error", Code.Internal);
}

/**
 * The code of an AbortSignal's reason that is not a ConnectError (those pass
 * through as they are): a DOMException AbortError (`abort()` without a
 * reason, as the plain-HTTP routes' and the bridge's signals end) is
 * CANCELED, a TimeoutError (`AbortSignal.timeout`) DEADLINE_EXCEEDED.
 */
function abortCode(err: unknown): Code | undefined {
  // Only a DOMException: ioredis rejects the commands of a connection that
  // closed under them with redis-errors' own "AbortError" (storage, below).
  if (!(err instanceof DOMException)) return undefined;
  if (err.name === "AbortError") return Code.Canceled;
  if (err.name === "TimeoutError") return Code.DeadlineExceeded;
  return undefined;
}
