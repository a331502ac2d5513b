/**
 * The job lines of a process that records no span (no exporter), telemetry
 * started as preload.ts starts it for `mode`: Workers without BullMQ's
 * telemetry (the report worker makes the consumer span), and in mode
 * `worker` no AsyncLocalStorage either (contexts last while code runs
 * synchronously inside them). Every job line of every attempt still carries
 * the job's trace id, and the span id of its attempt's consumer span; a
 * retried attempt continues the same trace. Call it once per test file (the
 * SDK's globals are set once per process).
 */
import { Writable } from "node:stream";
import { context } from "@opentelemetry/api";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { loadTelemetrySettings } from "../../src/config/config.js";
import { createLogger } from "../../src/telemetry/logger.js";
import { startTelemetry } from "../../src/telemetry/telemetry.js";
import { TransientReportError } from "../../src/worker/generator.js";
import { reportClient } from "./clients.js";
import { csvOutput, scripted } from "./generators.js";
import { getJob, history } from "./rpc.js";
import { startTestApp, type TestApp } from "./test-app.js";
import { waitFor } from "./wait-for.js";

type Line = Record<string, unknown>;

/** The tests, for a process of `mode`. */
export function describeUnrecordedJobTraces(mode: "worker" | "all"): void {
  // Before the app: the SDK's globals are set once per process.
  const telemetry = startTelemetry({ settings: loadTelemetrySettings({}, mode) });

  describe(`a process of mode ${mode} that records no span`, () => {
    let t: TestApp | undefined;
    afterEach(async () => {
      await t?.close();
      t = undefined;
    });
    afterAll(async () => {
      await telemetry.shutdown();
    });

    it("logs every attempt's job lines in the job's trace, with its consumer span's id", async () => {
      // The premise: contexts follow awaits in mode all only.
      const probe = context.active().setValue(Symbol("probe"), 1);
      expect(
        await context.with(probe, async () => {
          await null;
          return context.active() === probe;
        }),
      ).toBe(mode === "all");

      const lines: Line[] = [];
      const logger = createLogger(
        "info",
        { mode },
        {
          destination: new Writable({
            write(chunk, _enc, cb) {
              for (const l of String(chunk).split("\n"))
                if (l.trim() !== "") lines.push(JSON.parse(l) as Line);
              cb();
            },
          }),
        },
      );
      const weekly = scripted(async (input, progress) => {
        await progress(40, "fetch-data");
        if (input.attempt === 1) throw new TransientReportError("downstream hiccup");
        return csvOutput;
      });
      t = await startTestApp({}, { logger, generators: { weekly } });
      const client = reportClient("grpc", t.url);
      const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
      await history(client, jobId);
      const job = await getJob(client, jobId);
      expect(job.state).toBe(JobState.SUCCEEDED);
      expect(job.traceId).toMatch(/^[0-9a-f]{32}$/);

      const transitions = await waitFor(() => {
        const l = lines.filter((x) => x.job_id === jobId && String(x.msg).startsWith("job "));
        return l.some((x) => x.msg === "job succeeded") && l;
      });
      expect(transitions.map((l) => `${l.state}(${l.attempt})`)).toEqual([
        "running(1)",
        "retrying(1)",
        "running(2)",
        "succeeded(2)",
      ]);
      for (const l of transitions) {
        expect(l.trace_id).toBe(job.traceId);
        expect(l.span_id).toMatch(/^[0-9a-f]{16}$/);
      }
      const [running1, retrying1, running2, succeeded2] = transitions;
      expect(retrying1?.span_id).toBe(running1?.span_id);
      expect(succeeded2?.span_id).toBe(running2?.span_id);
      expect(running2?.span_id).not.toBe(running1?.span_id);
    });
  });
}
