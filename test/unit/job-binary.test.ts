/**
 * submitReportResponseFrame() and getJobResponseFrame() write the gRPC frame
 * of the bytes protobuf-es's toBinary writes, and leave to it what it would
 * refuse or might write otherwise.
 */
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { TimestampSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import {
  type JobPriority,
  JobPrioritySchema,
  JobSchema,
  type JobState,
  JobStateSchema,
  ReportResultSchema,
  type ReportType,
  ReportTypeSchema,
} from "../../gen/reports/v1/job_pb.js";
import {
  GetJobResponseSchema,
  SubmitReportResponseSchema,
} from "../../gen/reports/v1/report_service_pb.js";
import { getJobResponseFrame, submitReportResponseFrame } from "../../src/api/job-binary.js";
import { jobToProto } from "../../src/api/proto-mapping.js";
import { finishedJobProto, queuedJobView } from "../helpers/job-fixtures.js";

type JobInit = MessageInitShape<typeof JobSchema>;

const view = queuedJobView;

const ts = (seconds: bigint, nanos: number) => ({ seconds, nanos });
const big = (s: string) => BigInt(s);

const everyField: JobInit = {
  id: "id-1",
  userId: "user-1",
  reportType: 2,
  state: 3,
  progress: 55,
  attemptsMade: 1,
  maxAttempts: 5,
  result: { downloadUrl: "http://x/d", contentType: "text/csv", sizeBytes: big("1234") },
  failureReason: "boom",
  createdAt: ts(big("1796283424"), 4000000),
  startedAt: ts(big("1796283425"), 0),
  finishedAt: ts(big("1796283426"), 999999999),
  filters: { region: "eu" },
  priority: 1,
  runAt: ts(big("1796283424"), 1),
  deadline: ts(big("1796283500"), 0),
  phase: "rendering",
  traceId: "0af7651916cd43dd8448eb211c80319c",
};

const written: [string, JobInit][] = [
  ["a job as jobToProto makes it", jobToProto(view, "http://x")],
  ["a finished job with its result", finishedJobProto("http://x")],
  ["an empty job", {}],
  ["every field set", everyField],
  // Each field of everyField alone, and everyField without it.
  ...Object.keys(everyField).flatMap((k): [string, JobInit][] => {
    const only = { [k]: everyField[k as keyof JobInit] } as JobInit;
    const without = { ...everyField } as Record<string, unknown>;
    delete without[k];
    return [
      [`only ${k}`, only],
      [`every field but ${k}`, without as JobInit],
    ];
  }),
  ...ReportTypeSchema.values.map((v): [string, JobInit] => [
    `report type ${v.name}`,
    { reportType: v.number },
  ]),
  ...JobStateSchema.values.map((v): [string, JobInit] => [`state ${v.name}`, { state: v.number }]),
  ...JobPrioritySchema.values.map((v): [string, JobInit] => [
    `priority ${v.name}`,
    { priority: v.number },
  ]),
  // Open enums: toBinary writes values the schema lacks, negative ones in 10 bytes.
  [
    "enum values the schema lacks",
    { reportType: 99 as ReportType, state: 0x7fffffff as JobState, priority: -1 as JobPriority },
  ],
  ["the least int32 enum", { state: -0x80000000 as JobState }],
  [
    "text: non-ASCII, astral, lone surrogates, controls",
    {
      failureReason: 'quote " backslash \\ newline \n tab \t ctrl \u0001 nul \0 lone \ud800 ü 😀',
      userId: "ü",
      id: "😀",
      phase: "\udc00",
      traceId: "日本語",
    },
  ],
  ["a 127-character id", { id: "a".repeat(127) }],
  ["a 128-character id", { id: "a".repeat(128) }],
  ["a 127-character id ending in ü", { id: `${"a".repeat(126)}ü` }],
  ["a 200-character non-ASCII reason", { failureReason: "ü".repeat(200) }],
  ["a 70,000-character reason (three-byte length)", { failureReason: "x".repeat(70000) }],
  ["a 40,000-character astral reason", { failureReason: "😀".repeat(40000) }],
  ["uint32 at its bounds", { progress: 1, attemptsMade: 127, maxAttempts: 0xffffffff }],
  ["uint32 at the varint steps", { progress: 128, attemptsMade: 16383, maxAttempts: 16384 }],
  ["a result of size 0", { result: { downloadUrl: "u", contentType: "", sizeBytes: big("0") } }],
  ["an empty result", { result: {} }],
  ["the largest size", { result: { sizeBytes: big("9223372036854775807") } }],
  ["the least size", { result: { sizeBytes: big("-9223372036854775808") } }],
  ["a size of -1", { result: { sizeBytes: big("-1") } }],
  ["a size of 2^53 + 1", { result: { sizeBytes: big("9007199254740993") } }],
  ["a size of 2^32", { result: { sizeBytes: big("4294967296") } }],
  [
    "timestamps at bounds",
    {
      createdAt: ts(big("0"), 0),
      startedAt: ts(big("1"), 1),
      finishedAt: ts(big("-62135596800"), 999999999),
      runAt: ts(big("253402300799"), 0),
      deadline: ts(big("-1"), -1),
    },
  ],
  [
    "timestamps past the JSON range (binary has none)",
    {
      createdAt: ts(big("9223372036854775807"), 0x7fffffff),
      startedAt: ts(big("-9223372036854775808"), -0x80000000),
    },
  ],
  [
    "filters of every JSON kind",
    {
      filters: {
        s: "x",
        empty: "",
        n: 1.5,
        zero: 0,
        z: -0,
        neg: -42,
        big: 1e300,
        tiny: 5e-324,
        b: false,
        t: true,
        nil: null,
        list: [1, "a", null, [], {}, { deep: [true, [false, [null]]] }],
        o: { "": "", "a b": "ü\u2028😀" },
        "": 1,
      },
    },
  ],
  ["filters with integer-like keys", { filters: { b: 1, 10: "ten", 2: "two", a: [] } }],
  ["a __proto__ key in filters", { filters: JSON.parse('{"__proto__":{"a":1},"x":2}') }],
  ["filters without a prototype", { filters: Object.assign(Object.create(null), { a: 1 }) }],
  ["empty filters", { filters: {} }],
  ["filters nested 50 deep", { filters: nested(50) }],
  [
    "filters over 128 bytes at every level",
    { filters: { a: { b: ["x".repeat(200), { c: "y".repeat(20000) }] } } },
  ],
  ["filters with many keys", { filters: Object.fromEntries(keys(300).map((k, i) => [k, i])) }],
];

function nested(depth: number): never {
  let v: unknown = "leaf";
  for (let i = 0; i < depth; i++) v = i % 2 === 0 ? { [`k${i}`]: v } : [v, i];
  return { root: v } as never;
}

function keys(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `key-${i}`);
}

const unknownField = [{ no: 99, wireType: 0, data: Uint8Array.of(1) }];

const referred: [string, JobInit][] = [
  ["a number that is not finite in filters", { filters: { n: Number.POSITIVE_INFINITY } }],
  ["NaN deep in filters", { filters: { a: [{ b: Number.NaN }] } }],
  ["undefined in filters", { filters: { a: undefined } as never }],
  ["a function in filters", { filters: { a: () => 1 } as never }],
  ["a bigint in filters", { filters: { a: big("1") } as never }],
  ["a Date in filters", { filters: { a: new Date(0) } as never }],
  ["filters that are a Map", { filters: new Map() as never }],
  // biome-ignore lint/suspicious/noSparseArray: a hole is what is tested
  ["a sparse array in filters", { filters: { a: [1, , 2] } as never }],
  ["a fractional progress", { progress: 1.5 }],
  ["a negative progress", { progress: -1 }],
  ["a progress over uint32", { maxAttempts: 0x100000000 }],
  ["an enum over int32", { state: 0x80000000 as JobState }],
  ["a size over int64", { result: { sizeBytes: big("9223372036854775808") } }],
];

function frameOf(m: Uint8Array): Uint8Array {
  const f = new Uint8Array(5 + m.byteLength);
  new DataView(f.buffer).setUint32(1, m.byteLength);
  f.set(m, 5);
  return f;
}

/** Byte-for-byte equality (in hex on failure: toEqual over 100 KB arrays is slow). */
function expectSame(actual: Uint8Array | undefined, expected: Uint8Array): void {
  expect(actual).toBeInstanceOf(Buffer);
  const a = actual as Buffer;
  if (!a.equals(expected)) expect(a.toString("hex")).toBe(Buffer.from(expected).toString("hex"));
}

/** toBinary's bytes, or the error it throws. */
function reference(f: () => Uint8Array): Uint8Array | Error {
  try {
    return f();
  } catch (e) {
    return e as Error;
  }
}

describe("submitReportResponseFrame() and getJobResponseFrame()", () => {
  for (const [what, init] of written) {
    it(`frame toBinary's bytes for ${what}`, () => {
      for (const deduplicated of [false, true]) {
        for (const [jobId, statusUrl] of [
          ["j", "http://x/v1/jobs/j"],
          ["", ""],
          ["ü", "😀".repeat(100)],
        ]) {
          const submit = create(SubmitReportResponseSchema, {
            jobId,
            statusUrl,
            job: create(JobSchema, init),
            deduplicated,
          });
          expectSame(
            submitReportResponseFrame(submit),
            frameOf(toBinary(SubmitReportResponseSchema, submit)),
          );
        }
      }
      const get = create(GetJobResponseSchema, { job: create(JobSchema, init) });
      expectSame(getJobResponseFrame(get), frameOf(toBinary(GetJobResponseSchema, get)));
    });
  }

  it("frame toBinary's bytes for answers without a job", () => {
    for (const deduplicated of [false, true]) {
      const submit = create(SubmitReportResponseSchema, { deduplicated });
      expectSame(
        submitReportResponseFrame(submit),
        frameOf(toBinary(SubmitReportResponseSchema, submit)),
      );
    }
    const get = create(GetJobResponseSchema, {});
    expectSame(getJobResponseFrame(get), frameOf(toBinary(GetJobResponseSchema, get)));
  });

  it("frame toBinary's bytes after a large answer grew the scratch buffer", () => {
    const large = create(GetJobResponseSchema, {
      job: create(JobSchema, { failureReason: "x".repeat(100000) }),
    });
    expect(getJobResponseFrame(large)?.byteLength).toBe(
      5 + toBinary(GetJobResponseSchema, large).byteLength,
    );
    const small = create(GetJobResponseSchema, { job: create(JobSchema, everyField) });
    expectSame(getJobResponseFrame(small), frameOf(toBinary(GetJobResponseSchema, small)));
  });

  for (const [what, init] of referred) {
    it(`leave ${what} to toBinary`, () => {
      const job = create(JobSchema, init);
      const submit = create(SubmitReportResponseSchema, { jobId: "j", job });
      const get = create(GetJobResponseSchema, { job });
      expect(submitReportResponseFrame(submit)).toBeUndefined();
      expect(getJobResponseFrame(get)).toBeUndefined();
      // What toBinary does then is its own (an error, or its bytes), not ours.
      reference(() => toBinary(GetJobResponseSchema, get));
    });
  }

  it("leaves unknown fields on any message to toBinary", () => {
    const withUnknown = <T extends object>(m: T): T => Object.assign(m, { $unknown: unknownField });
    const cases = [
      create(SubmitReportResponseSchema, { job: withUnknown(create(JobSchema, {})) }),
      withUnknown(create(SubmitReportResponseSchema, { jobId: "j" })),
      create(SubmitReportResponseSchema, {
        job: create(JobSchema, { createdAt: withUnknown(create(TimestampSchema, {})) }),
      }),
      create(SubmitReportResponseSchema, {
        job: create(JobSchema, { result: withUnknown(create(ReportResultSchema, {})) }),
      }),
    ];
    for (const m of cases) {
      expect(submitReportResponseFrame(m as never)).toBeUndefined();
      // toBinary writes them: ours would not have.
      expect(toBinary(SubmitReportResponseSchema, m as never).at(-1)).toBe(1);
    }
    const get = withUnknown(create(GetJobResponseSchema, {}));
    expect(getJobResponseFrame(get)).toBeUndefined();
  });

  it("leaves a message of another type to toBinary", () => {
    const job = create(JobSchema, {});
    const wrong = create(GetJobResponseSchema, { job: create(JobSchema, {}) });
    Object.assign(wrong, { job: { ...job, $typeName: "reports.v1.JobEvent" } });
    expect(getJobResponseFrame(wrong)).toBeUndefined();
    expect(() => toBinary(GetJobResponseSchema, wrong)).toThrow();
  });
});
