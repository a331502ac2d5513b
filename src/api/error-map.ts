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
  CursorTrimmedError,
  FailedPreconditionError,
  IdempotencyConflictError,
  InvalidArgumentError,
  JobNotFoundError,
  ShuttingDownError,
  StorageUnavailableError,
} from "../domain/errors.js";
import { isStorageUnavailable } from "../queue/storage-errors.js";

/** Maps any error thrown below the API to a ConnectError that is safe to send. */
export function toConnectError(err: unknown, logger: Logger): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof InvalidArgumentError) {
    const violations = create(ViolationsSchema, {
      violations: err.violations.map((v) => ({
        field: create(FieldPathSchema, { elements: [{ fieldName: v.field }] }),
        ruleId: `${v.field}.invalid`,
        message: v.description,
      })),
    });
    return new ConnectError(err.message, Code.InvalidArgument, undefined, [
      { desc: ViolationsSchema, value: violations },
    ]);
  }
  if (err instanceof JobNotFoundError) return new ConnectError(err.message, Code.NotFound);
  if (err instanceof IdempotencyConflictError)
    return new ConnectError(err.message, Code.AlreadyExists);
  if (err instanceof BackpressureError) {
    const seconds = Math.max(1, Math.ceil(err.retryAfterMs / 1000));
    return new ConnectError(
      `${err.message} (retry after ${seconds} s)`,
      Code.ResourceExhausted,
      { "retry-after": String(seconds) },
      [{ desc: RetryInfoSchema, value: { retryDelay: durationFromMs(err.retryAfterMs) } }],
    );
  }
  if (err instanceof FailedPreconditionError)
    return new ConnectError(err.message, Code.FailedPrecondition);
  if (err instanceof CursorTrimmedError) return new ConnectError(err.message, Code.OutOfRange);
  if (err instanceof ShuttingDownError) return new ConnectError(err.message, Code.Unavailable);
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
