/**
 * submitReportResponseJson() and getJobResponseJson() write the text
 * protobuf-es's toJsonString writes with connect's options, and leave to it
 * what it would refuse or write otherwise.
 */
import { create, type MessageInitShape, toJsonString } from "@bufbuild/protobuf";
import { getJsonOptions } from "@connectrpc/connect/protocol";
import { describe, expect, it } from "vitest";
import {
  type JobPriority,
  JobSchema,
  type JobState,
  type ReportType,
} from "../../gen/reports/v1/job_pb.js";
import {
  GetJobResponseSchema,
  SubmitReportResponseSchema,
} from "../../gen/reports/v1/report_service_pb.js";
import { getJobResponseJson, submitReportResponseJson } from "../../src/api/job-json.js";
import { jobToProto } from "../../src/api/proto-mapping.js";
import { finishedJobProto, queuedJobView } from "../helpers/job-fixtures.js";

const options = getJsonOptions(undefined);
type JobInit = MessageInitShape<typeof JobSchema>;

const view = queuedJobView;

const ts = (seconds: bigint, nanos: number) => ({ seconds, nanos });

const written: [string, JobInit][] = [
  ["a job as jobToProto makes it", jobToProto(view, "http://x")],
  ["a finished job with its result", finishedJobProto("http://x")],
  ["an empty job", {}],
  [
    "a failed job, text to escape",
    {
      state: 5,
      failureReason: 'quote " backslash \\ newline \n tab \t ctrl \u0001 lone \ud800 ü 😀',
      userId: "ü",
    },
  ],
  ["a result of size 0", { result: { downloadUrl: "u", contentType: "", sizeBytes: BigInt(0) } }],
  ["an empty result", { result: {} }],
  ["a large size", { result: { sizeBytes: BigInt("9223372036854775807") } }],
  [
    "timestamps with every precision",
    {
      createdAt: ts(BigInt(0), 0),
      startedAt: ts(BigInt(1), 1),
      finishedAt: ts(BigInt(2), 1000),
      runAt: ts(BigInt(3), 120000000),
      deadline: ts(BigInt(-62135596800), 999999999),
    },
  ],
  ["the last timestamp", { createdAt: ts(BigInt(253402300799), 0) }],
  [
    "filters of every JSON kind",
    {
      filters: {
        s: "x",
        n: 1.5,
        z: -0,
        big: 1e300,
        b: false,
        nil: null,
        list: [1, "a", null, [], {}, { deep: [true] }],
        o: { "": "", "a b": "ü\u2028" },
      },
    },
  ],
  ["empty filters", { filters: {} }],
];

const referred: [string, JobInit][] = [
  ["a report type the schema lacks", { reportType: 99 as ReportType }],
  ["a state the schema lacks", { state: 42 as JobState }],
  ["a priority the schema lacks", { priority: 7 as JobPriority }],
  ["a timestamp before year 1", { createdAt: ts(BigInt(-62135596801), 0) }],
  ["a timestamp after year 9999", { startedAt: ts(BigInt(253402300800), 0) }],
  ["negative nanos", { finishedAt: ts(BigInt(1), -1) }],
  ["nanos over a second", { runAt: ts(BigInt(1), 1000000000) }],
  ["a number that is not finite in filters", { filters: { n: Number.POSITIVE_INFINITY } }],
  ["NaN deep in filters", { filters: { a: [{ b: Number.NaN }] } }],
  ["undefined in filters", { filters: { a: undefined } as never }],
  ["a Date in filters", { filters: { a: new Date(0) } as never }],
  ["a __proto__ key in filters", { filters: JSON.parse('{"__proto__":{"a":1}}') }],
  // biome-ignore lint/suspicious/noSparseArray: a hole is what is tested
  ["a sparse array in filters", { filters: { a: [1, , 2] } as never }],
];

/** The reference text, or the error it throws. */
function reference(f: () => string): string | Error {
  try {
    return f();
  } catch (e) {
    return e as Error;
  }
}

describe("submitReportResponseJson() and getJobResponseJson()", () => {
  for (const [what, init] of written) {
    it(`write toJsonString's text for ${what}`, () => {
      for (const deduplicated of [false, true]) {
        const submit = create(SubmitReportResponseSchema, {
          jobId: "j",
          statusUrl: "http://x/v1/jobs/j",
          job: create(JobSchema, init),
          deduplicated,
        });
        expect(submitReportResponseJson(submit)).toBe(
          toJsonString(SubmitReportResponseSchema, submit, options),
        );
      }
      const get = create(GetJobResponseSchema, { job: create(JobSchema, init) });
      expect(getJobResponseJson(get)).toBe(toJsonString(GetJobResponseSchema, get, options));
    });
  }

  it("write toJsonString's text for answers without a job", () => {
    const submit = create(SubmitReportResponseSchema, {});
    expect(submitReportResponseJson(submit)).toBe(
      toJsonString(SubmitReportResponseSchema, submit, options),
    );
    const get = create(GetJobResponseSchema, {});
    expect(getJobResponseJson(get)).toBe(toJsonString(GetJobResponseSchema, get, options));
  });

  for (const [what, init] of referred) {
    it(`leave ${what} to toJsonString`, () => {
      const job = create(JobSchema, init);
      const submit = create(SubmitReportResponseSchema, { jobId: "j", job });
      const get = create(GetJobResponseSchema, { job });
      expect(submitReportResponseJson(submit)).toBeUndefined();
      expect(getJobResponseJson(get)).toBeUndefined();
      // What toJsonString does then is its own (mostly an error), not ours.
      reference(() => toJsonString(GetJobResponseSchema, get, options));
    });
  }
});
