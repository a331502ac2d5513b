import { createRequire } from "node:module";
import { Code, ConnectError } from "@connectrpc/connect";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { toConnectError } from "../../src/api/error-map.js";
import { httpStatusOf } from "../../src/api/http-responses.js";
import {
  BackpressureError,
  IdempotencyConflictError,
  InvalidDownloadLinkError,
  JobNotFoundError,
  MalformedRequestError,
  ReportNotFoundError,
  RequestTooLargeError,
  StorageUnavailableError,
  UnauthenticatedError,
  WatchTimeLimitError,
} from "../../src/domain/errors.js";
import { capturedLogger } from "../helpers/captured-logger.js";

const logger = pino({ enabled: false });
/** The error class ioredis rejects with (redis-errors, its dependency; untyped). */
const { AbortError: RedisAbortError } = createRequire(require.resolve("ioredis"))(
  "redis-errors",
) as {
  AbortError: new (message: string) => Error;
};
const map = (err: unknown) => toConnectError(err, logger);

describe("toConnectError()", () => {
  it("gives each domain error its code and sentence, and keeps it as the cause", () => {
    const cases: Array<[Error, Code]> = [
      [new JobNotFoundError("j1"), Code.NotFound],
      [new ReportNotFoundError("j1", "a.csv", "removed"), Code.NotFound],
      [new MalformedRequestError("request body is not valid JSON"), Code.InvalidArgument],
      [new RequestTooLargeError(10), Code.ResourceExhausted],
      [new WatchTimeLimitError(1000), Code.Unavailable],
      [new UnauthenticatedError(), Code.Unauthenticated],
      [new InvalidDownloadLinkError(), Code.PermissionDenied],
      [new IdempotencyConflictError(), Code.AlreadyExists],
    ];
    for (const [err, code] of cases) {
      const ce = map(err);
      expect(ce.code).toBe(code);
      expect(ce.rawMessage).toBe(err.message);
      expect(ce.cause).toBe(err);
    }
  });

  it("sends WWW-Authenticate with UNAUTHENTICATED and Retry-After with backpressure", () => {
    expect(map(new UnauthenticatedError()).metadata.get("www-authenticate")).toMatch(/^Bearer /);
    const busy = map(new BackpressureError("backlog is full; retry later", 2500));
    expect(busy.rawMessage).toBe("backlog is full; retry later (retry after 3 s)");
    expect(busy.metadata.get("retry-after")).toBe("3");
  });

  it("keeps no cause for storage and unexpected errors, whose text must not travel", () => {
    const storage = map(new StorageUnavailableError({ cause: new Error("READONLY redis text") }));
    expect(storage).toMatchObject({ code: Code.Unavailable, cause: undefined });
    const unexpected = map(new Error("ERR wrong number of arguments for 'hset'"));
    expect(unexpected).toMatchObject({
      code: Code.Internal,
      rawMessage: "internal error",
      cause: undefined,
    });
  });

  it("maps a call's own abort reasons to CANCELED and DEADLINE_EXCEEDED, logging nothing unexpected", () => {
    const { logger, lines } = capturedLogger();
    const gone = new AbortController();
    gone.abort();
    const cases: Array<[unknown, Code]> = [
      [gone.signal.reason, Code.Canceled],
      [new DOMException("timed out", "TimeoutError"), Code.DeadlineExceeded],
      [new ConnectError("the operation timed out", Code.DeadlineExceeded), Code.DeadlineExceeded],
      [new ConnectError("canceled", Code.Canceled), Code.Canceled],
    ];
    for (const [reason, code] of cases) {
      expect(toConnectError(reason, logger)).toMatchObject({ code, cause: undefined });
    }
    expect(lines).toEqual([]);
  });

  it("maps ioredis's AbortError for a connection that closed under its commands to UNAVAILABLE, not CANCELED", () => {
    // redis-errors' AbortError, as ioredis rejects in-flight commands when a
    // master dies: the caller did not cancel anything, it may retry.
    for (const message of ["Command aborted due to connection close", "Cluster is ended."]) {
      const closed = new RedisAbortError(message);
      expect(closed.name).toBe("AbortError");
      expect(map(closed)).toMatchObject({ code: Code.Unavailable, cause: undefined });
    }
  });
});

describe("httpStatusOf()", () => {
  it("answers a key reused with another payload 422, and a key that outlived its job 409", () => {
    expect(httpStatusOf(map(new IdempotencyConflictError()))).toBe(422);
    const expired = new IdempotencyConflictError({ reason: "job-expired", jobId: "j1" });
    expect(expired.message).toBe(
      "idempotency key was used for job j1, which has expired; use a new key",
    );
    expect(httpStatusOf(map(expired))).toBe(409);
  });

  it("answers an oversized body 413, and everything else with Connect's status for its code", () => {
    expect(httpStatusOf(map(new RequestTooLargeError(10)))).toBe(413);
    expect(httpStatusOf(map(new BackpressureError("slow down", 1000)))).toBe(429);
    expect(httpStatusOf(map(new JobNotFoundError("j1")))).toBe(404);
    expect(httpStatusOf(map(new UnauthenticatedError()))).toBe(401);
    expect(httpStatusOf(map(new InvalidDownloadLinkError()))).toBe(403);
  });
});
