import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { JobPriority, ReportType } from "../../gen/reports/v1/job_pb.js";
import {
  GetJobRequestSchema,
  SubmitReportRequestSchema,
  WatchJobRequestSchema,
} from "../../gen/reports/v1/report_service_pb.js";
import {
  maxFiltersBytes,
  maxFiltersDepth,
  maxFiltersKeys,
  validateGetJob,
  validateSubmitReport,
  validateWatchJob,
} from "../../src/api/validation.js";
import { InvalidArgumentError } from "../../src/domain/errors.js";

type SubmitInit = Parameters<typeof create<typeof SubmitReportRequestSchema>>[1];

/** The clock and run_at bound of these tests: 30 days ahead of a fixed now. */
const now = Date.UTC(2030, 0, 1);
const maxRunAtAheadMs = 30 * 86_400_000;

function submit(init: SubmitInit, header: string | null = null, aheadMs = maxRunAtAheadMs) {
  return validateSubmitReport(create(SubmitReportRequestSchema, init), header, "acme", {
    maxRunAtAheadMs: aheadMs,
    now,
  });
}

/** The fields named by the InvalidArgumentError `fn` throws. */
function violatedFields(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof InvalidArgumentError) return err.violations.map((v) => v.field);
    throw err;
  }
  throw new Error("expected an InvalidArgumentError");
}

const valid: SubmitInit = { userId: "u1", reportType: ReportType.WEEKLY };

describe("validateSubmitReport()", () => {
  it("accepts a minimal request, with defaults", () => {
    expect(submit(valid)).toEqual({
      tenant: "acme",
      idempotencyKey: undefined,
      userId: "u1",
      reportType: "weekly",
      filters: {},
      priority: "normal",
      runAt: undefined,
      deadline: undefined,
    });
  });

  it("maps every report type and priority", () => {
    expect(submit({ ...valid, reportType: ReportType.MONTHLY }).reportType).toBe("monthly");
    expect(submit({ ...valid, reportType: ReportType.CUSTOM }).reportType).toBe("custom");
    expect(submit({ ...valid, priority: JobPriority.HIGH }).priority).toBe("high");
    expect(submit({ ...valid, priority: JobPriority.LOW }).priority).toBe("low");
  });

  it("keeps filters, run_at and deadline", () => {
    const input = submit({
      ...valid,
      filters: { region: "eu", days: 3, nested: { a: [1, null] } },
      runAt: timestampFromMs(1_000_000),
      deadline: timestampFromMs(2_000_000),
    });
    expect(input.filters).toEqual({ region: "eu", days: 3, nested: { a: [1, null] } });
    expect(input.runAt).toBe(1_000_000);
    expect(input.deadline).toBe(2_000_000);
  });

  it("checks user_id length in characters (1-128)", () => {
    expect(violatedFields(() => submit({ ...valid, userId: "" }))).toEqual(["user_id"]);
    expect(violatedFields(() => submit({ ...valid, userId: "x".repeat(129) }))).toEqual([
      "user_id",
    ]);
    expect(submit({ ...valid, userId: "x".repeat(128) }).userId).toHaveLength(128);
    // 128 characters outside the BMP are 256 UTF-16 code units, still 128 characters.
    expect(submit({ ...valid, userId: "😀".repeat(128) }).userId).toBe("😀".repeat(128));
  });

  it("requires a known report_type", () => {
    expect(violatedFields(() => submit({ userId: "u1" }))).toEqual(["report_type"]);
    expect(violatedFields(() => submit({ ...valid, reportType: 99 as ReportType }))).toEqual([
      "report_type",
    ]);
  });

  it("rejects an unknown priority", () => {
    expect(violatedFields(() => submit({ ...valid, priority: 42 as JobPriority }))).toEqual([
      "priority",
    ]);
  });

  it("checks idempotency_key: 1-255 printable ASCII", () => {
    expect(submit({ ...valid, idempotencyKey: "k".repeat(255) }).idempotencyKey).toHaveLength(255);
    expect(submit({ ...valid, idempotencyKey: " !~" }).idempotencyKey).toBe(" !~");
    for (const bad of ["k".repeat(256), "line\nbreak", "tab\t", "caf\u00e9", "\u007f"]) {
      expect(
        violatedFields(() => submit({ ...valid, idempotencyKey: bad })),
        bad,
      ).toEqual(["idempotency_key"]);
    }
  });

  it("takes the key from the Idempotency-Key header when the field is empty", () => {
    expect(submit(valid, "from-header").idempotencyKey).toBe("from-header");
    expect(submit(valid, "").idempotencyKey).toBeUndefined();
    expect(submit({ ...valid, idempotencyKey: "from-field" }, "from-header").idempotencyKey).toBe(
      "from-field",
    );
    const err = (() => {
      try {
        submit(valid, "bad\u0001");
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as InvalidArgumentError).violations[0]?.description).toContain("header");
  });

  it("limits filters to 16 KiB of JSON", () => {
    // {"s":"..."} is 8 bytes around the string.
    const fits = { s: "x".repeat(maxFiltersBytes - 8) };
    expect(Buffer.byteLength(JSON.stringify(fits))).toBe(maxFiltersBytes);
    expect(submit({ ...valid, filters: fits }).filters).toEqual(fits);
    const tooBig = { s: "x".repeat(maxFiltersBytes - 7) };
    expect(violatedFields(() => submit({ ...valid, filters: tooBig }))).toEqual(["filters"]);
    // Bytes, not characters.
    const multiByte = { s: "é".repeat(maxFiltersBytes / 2) };
    expect(violatedFields(() => submit({ ...valid, filters: multiByte }))).toEqual(["filters"]);
  });

  it(`limits filters to ${maxFiltersDepth} levels of nesting`, () => {
    type Nested = { [k: string]: Nested | number[] | number };
    const nest = (levels: number): Nested => {
      // levels counts objects and arrays, the top-level object included.
      let v: Nested | number[] = [1];
      for (let i = 1; i < levels; i++) v = { a: v };
      return v as Nested;
    };
    expect(submit({ ...valid, filters: nest(maxFiltersDepth) }).filters).toEqual(
      nest(maxFiltersDepth),
    );
    const err = (() => {
      try {
        submit({ ...valid, filters: nest(maxFiltersDepth + 1) });
      } catch (e) {
        return e as InvalidArgumentError;
      }
    })();
    expect(err?.violations).toEqual([
      { field: "filters", description: `must be nested at most ${maxFiltersDepth} levels deep` },
    ]);
  });

  it(`limits filters to ${maxFiltersKeys} keys, counted at every level`, () => {
    const keys = (n: number) =>
      Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i]));
    expect(Object.keys(submit({ ...valid, filters: keys(maxFiltersKeys) }).filters)).toHaveLength(
      maxFiltersKeys,
    );
    expect(violatedFields(() => submit({ ...valid, filters: keys(maxFiltersKeys + 1) }))).toEqual([
      "filters",
    ]);
    const split = { a: keys(maxFiltersKeys / 2), b: [keys(maxFiltersKeys / 2)] };
    expect(violatedFields(() => submit({ ...valid, filters: split }))).toEqual(["filters"]);
  });

  it("requires run_at before deadline", () => {
    expect(
      violatedFields(() =>
        submit({ ...valid, runAt: timestampFromMs(5000), deadline: timestampFromMs(5000) }),
      ),
    ).toEqual(["run_at"]);
  });

  it("bounds run_at by MAX_RUN_AT_SECONDS ahead of now, and says the latest time allowed", () => {
    const latest = now + maxRunAtAheadMs;
    expect(submit({ ...valid, runAt: timestampFromMs(latest) }).runAt).toBe(latest);
    expect(violatedFields(() => submit({ ...valid, runAt: timestampFromMs(latest + 1) }))).toEqual([
      "run_at",
    ]);
    /** The run_at violation of a run_at 1 ms past a bound of `aheadMs`. */
    const descriptionFor = (aheadMs: number) => {
      try {
        submit({ ...valid, runAt: timestampFromMs(now + aheadMs + 1) }, null, aheadMs);
      } catch (err) {
        if (err instanceof InvalidArgumentError) return err.violations[0]?.description;
        throw err;
      }
      throw new Error("expected an InvalidArgumentError");
    };
    expect(descriptionFor(maxRunAtAheadMs)).toBe(
      "must be at most 30 days from now (2030-01-31T00:00:00.000Z)",
    );
    // Other bounds read in their largest whole unit.
    expect(descriptionFor(7_200_000)).toMatch(/^must be at most 2 hours from now/);
    expect(descriptionFor(60_000)).toMatch(/^must be at most 1 minute from now/);
    expect(descriptionFor(90_000)).toMatch(/^must be at most 90 seconds from now/);
    // A past run_at is "as soon as possible", whatever the bound.
    expect(submit({ ...valid, runAt: timestampFromMs(now - 86_400_000) }).runAt).toBe(
      now - 86_400_000,
    );
  });

  it("reports every bad field at once", () => {
    const fields = violatedFields(() =>
      submit({
        userId: "",
        idempotencyKey: "\u0000",
        filters: { s: "x".repeat(maxFiltersBytes) },
        priority: 42 as JobPriority,
      }),
    );
    expect(fields.sort()).toEqual(
      ["filters", "idempotency_key", "priority", "report_type", "user_id"].sort(),
    );
  });

  it("says what is wrong in the error message", () => {
    try {
      submit({ userId: "" });
      expect.unreachable();
    } catch (err) {
      expect(String((err as Error).message)).toMatch(/user_id: .*report_type: /);
    }
  });
});

describe("validateGetJob()", () => {
  it("accepts a job id and returns it", () => {
    expect(validateGetJob(create(GetJobRequestSchema, { jobId: "AbC_-09" }))).toBe("AbC_-09");
    expect(validateGetJob({ jobId: "x".repeat(64) })).toHaveLength(64);
  });

  it("rejects empty, too long or non-id job ids", () => {
    for (const bad of ["", "x".repeat(65), "a/b", "a b", "../etc", "é"]) {
      expect(
        violatedFields(() => validateGetJob({ jobId: bad })),
        bad,
      ).toEqual(["job_id"]);
    }
  });
});

describe("validateWatchJob()", () => {
  const watch = (jobId: string, afterEventId = "") =>
    validateWatchJob(create(WatchJobRequestSchema, { jobId, afterEventId }));

  it("returns no cursor when after_event_id is empty", () => {
    expect(watch("job1")).toEqual({ jobId: "job1", afterEventId: undefined });
  });

  it("accepts stream ids as cursors", () => {
    expect(watch("job1", "1732812345678-0").afterEventId).toBe("1732812345678-0");
    expect(watch("job1", "1732812345678").afterEventId).toBe("1732812345678");
  });

  it("rejects a malformed cursor", () => {
    for (const bad of ["abc", "1-2-3", "-1", "1-"]) {
      expect(
        violatedFields(() => watch("job1", bad)),
        bad,
      ).toEqual(["after_event_id"]);
    }
  });

  it("reports a bad job id and a bad cursor together", () => {
    expect(violatedFields(() => watch("", "nope")).sort()).toEqual(["after_event_id", "job_id"]);
  });
});
