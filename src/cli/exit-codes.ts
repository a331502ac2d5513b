/**
 * reportctl's exit codes: one per kind of failure, so scripts can branch on
 * `$?`. The table in README.md ("reportctl") lists the same.
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** Exit codes, by failure kind. */
export const ExitCode = {
  /** The command did what was asked (a watched job SUCCEEDED). */
  ok: 0,
  /** Anything else: an internal server error, an unexpected answer. */
  error: 1,
  /** Bad command line: unknown command or flag, missing or malformed argument. */
  usage: 2,
  /** No such job (or another tenant's). */
  notFound: 3,
  /** Missing or wrong API key, or not allowed. */
  unauthenticated: 4,
  /** The server rejected the request: invalid field, idempotency key reused, wrong job state. */
  rejected: 5,
  /** The watched job ended FAILED. */
  jobFailed: 6,
  /** The watched job ended CANCELLED. */
  jobCancelled: 7,
  /** The service could not be reached or is unavailable (retry later). */
  unavailable: 8,
  /** The service is over capacity (backlog full or tenant over its rate; retry later). */
  exhausted: 9,
  /** Interrupted (Ctrl-C). */
  interrupted: 130,
} as const;

/** A failure of the command line itself (exit code 2). */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** The exit code for an error thrown by a command. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof UsageError) return ExitCode.usage;
  const ce = ConnectError.from(err);
  switch (ce.code) {
    case Code.NotFound:
      return ExitCode.notFound;
    case Code.Unauthenticated:
    case Code.PermissionDenied:
      return ExitCode.unauthenticated;
    case Code.InvalidArgument:
    case Code.AlreadyExists:
    case Code.FailedPrecondition:
    case Code.OutOfRange:
      return ExitCode.rejected;
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return ExitCode.unavailable;
    case Code.ResourceExhausted:
      return ExitCode.exhausted;
    case Code.Canceled:
      return ExitCode.interrupted;
    default:
      return ExitCode.error;
  }
}
