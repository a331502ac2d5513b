/**
 * The telemetry a gRPC submit does around its handler, in one process, with
 * the SDK started as `npm start` starts it without an exporter: the lean
 * route's call runner (span from the caller's headers, context, the
 * handler, span end, rpc.server.call.duration, the request log line to a
 * null destination), inside it the enqueue's producer span and carrier
 * (traceEnqueue) and reports.submit.duration; the handler itself does
 * nothing. Prints µs of CPU per call (process.cpuUsage), medians of 7 runs;
 * run it in two checkouts in turns to compare them.
 *
 *   npx tsx bench/telemetry-call-micro.ts
 */
import { SubmitReportResponseSchema } from "../gen/reports/v1/report_service_pb.js";
import { createAuthenticator } from "../src/api/auth.js";
import { createLeanCallRunner, type LeanCall } from "../src/api/lean-call.js";
import { loadTelemetrySettings } from "../src/config/config.js";
import { traceEnqueue } from "../src/telemetry/bullmq-telemetry.js";
import { createLogger } from "../src/telemetry/logger.js";
import { reportMetrics } from "../src/telemetry/metrics.js";
import { startTelemetry } from "../src/telemetry/telemetry.js";

startTelemetry({ settings: loadTelemetrySettings({}, "api") });
const { SpanKind, ROOT_CONTEXT, trace } = await import("@opentelemetry/api");
const logger = createLogger("info", {}, { destination: { write: () => undefined } });
const runner = createLeanCallRunner({ protocol: "grpc", auth: createAuthenticator([]), logger });
const method = {
  name: "reports.v1.ReportService/SubmitReport",
  method: "SubmitReport",
  outputSchema: SubmitReportResponseSchema,
  spanOptions: {
    kind: SpanKind.SERVER,
    attributes: {
      "rpc.system": "grpc",
      "rpc.service": "reports.v1.ReportService",
      "rpc.method": "SubmitReport",
      "rpc.protocol": "grpc",
    },
  },
  invoke: (_m: never, _t: string, _x: unknown, _c: LeanCall) =>
    traceEnqueue("reports-weekly", "weekly", [], async (t) => {
      reportMetrics().submitted("weekly", "accepted", 0.0004);
      return { jobId: t.traceparent.slice(3, 35) };
    }),
};
const headers = { "content-type": "application/grpc", "user-agent": "grpc-node-js/1.12" };

async function call(): Promise<void> {
  const c: LeanCall = {
    started: performance.now(),
    tenant: "default",
    span: trace.wrapSpanContext({ traceId: "", spanId: "", traceFlags: 0 }),
    ctx: ROOT_CONTEXT,
  };
  runner.begin(c, method, headers);
  await runner.run(c, method as never, null, {}, headers);
}

const n = 20_000;
const runs: number[] = [];
for (let r = 0; r < 8; r++) {
  const cpu = process.cpuUsage();
  for (let i = 0; i < n; i++) await call();
  const used = process.cpuUsage(cpu);
  if (r > 0) runs.push((used.user + used.system) / n);
}
runs.sort((a, b) => a - b);
console.log(
  `telemetry around a submit: ${(runs[3] ?? 0).toFixed(2)} µs/call (runs ${(runs[0] ?? 0).toFixed(2)}-${(runs[6] ?? 0).toFixed(2)})`,
);
process.exit(0);
