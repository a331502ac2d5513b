/**
 * µs per answer of the gRPC route's two framings of a SubmitReportResponse
 * and a GetJobResponse: protobuf-es's toBinary plus the envelope copy (what
 * the route did), against job-binary.ts' frame. The answers are the bench's:
 * a queued job as jobToProto makes it (two string filters), and a finished
 * one with its result and every timestamp. Medians of 7 runs, each after a
 * warm-up.
 *
 *   npx tsx bench/job-binary-micro.ts
 */
import { create, toBinary } from "@bufbuild/protobuf";
import {
  GetJobResponseSchema,
  SubmitReportResponseSchema,
} from "../gen/reports/v1/report_service_pb.js";
import { envelope } from "../src/api/grpc-unary-route.js";
import { getJobResponseFrame, submitReportResponseFrame } from "../src/api/job-binary.js";
import { jobToProto } from "../src/api/proto-mapping.js";
import { finishedJobProto, queuedJobView } from "../test/helpers/job-fixtures.js";

const view = queuedJobView;

const submit = create(SubmitReportResponseSchema, {
  jobId: view.id,
  statusUrl: `http://127.0.0.1:8080/v1/jobs/${view.id}`,
  job: jobToProto(view, "http://127.0.0.1:8080"),
  deduplicated: false,
});
const get = create(GetJobResponseSchema, { job: finishedJobProto("http://127.0.0.1:8080") });

let sink = 0;
function bench(name: string, n: number, f: () => Uint8Array | undefined): number {
  for (let i = 0; i < n / 2; i++) sink += f()?.byteLength ?? 0;
  const runs: number[] = [];
  for (let r = 0; r < 7; r++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) sink += f()?.byteLength ?? 0;
    runs.push(Number(process.hrtime.bigint() - t) / n / 1000);
  }
  const median = runs.sort((a, b) => a - b)[3] ?? 0;
  console.log(`${name.padEnd(52)} ${median.toFixed(3)} µs`);
  return median;
}

const n = 100_000;
const a = bench("SubmitReportResponse: toBinary + envelope", n, () =>
  envelope(toBinary(SubmitReportResponseSchema, submit)),
);
const b = bench("SubmitReportResponse: submitReportResponseFrame", n, () =>
  submitReportResponseFrame(submit),
);
const c = bench("GetJobResponse (finished job): toBinary + envelope", n, () =>
  envelope(toBinary(GetJobResponseSchema, get)),
);
const d = bench("GetJobResponse (finished job): getJobResponseFrame", n, () =>
  getJobResponseFrame(get),
);
console.log(`ratios: submit ${(b / a).toFixed(2)}×, get ${(d / c).toFixed(2)}× (${sink > 0})`);
