/**
 * app.close() stops the parts in the SIGTERM order of STYLE.md rule 10, in
 * every mode: open watches end (UNAVAILABLE) before anything closes, then the
 * server, the workers, the queues and Redis, and the probe port last.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { ReportType } from "../../gen/reports/v1/job_pb.js";
import { reportClient } from "../helpers/clients.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

/** A debug logger that keeps its lines, and the shutdown steps they name, in order. */
function recordingLogger() {
  const lines: Array<{ msg: string; step?: string }> = [];
  const logger = pino(
    { level: "debug" },
    { write: (line: string) => lines.push(JSON.parse(line)) },
  );
  const steps = () => lines.filter((l) => l.msg === "shutdown step").map((l) => l.step);
  return { logger, lines, steps };
}

describe("app.close()", () => {
  let t: TestApp | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  it("in all mode: ends watches, then server, workers, sweepers, report segments, hub, queues, Redis, probe port", async () => {
    const log = recordingLogger();
    t = await startTestApp({}, { mode: "all", logger: log.logger });
    await t.close();
    expect(log.steps()).toEqual([
      "storage health",
      "server",
      "worker",
      "reconciler",
      "janitor",
      "report segments",
      "hub",
      "queues",
      "observers",
      "redis",
      "metrics server",
    ]);
    expect(log.lines.filter((l) => l.msg === "shutdown step failed")).toEqual([]);
  });

  it("in api mode: an open watch ends with UNAVAILABLE before the server closes", async () => {
    const log = recordingLogger();
    // API only: nothing runs the job, so the watch stays open until shutdown.
    t = await startTestApp({}, { mode: "api", logger: log.logger });
    const app = t.app;
    const client = reportClient("grpc", t.url);
    const { jobId } = await client.submitReport({ userId: "u", reportType: ReportType.WEEKLY });
    let stepsWhenEnded: Array<string | undefined> = [];
    const ended = (async () => {
      for await (const _ of client.watchJob({ jobId })) {
        // Reads the QUEUED event, then waits.
      }
    })().then(
      () => undefined,
      (e: unknown) => {
        stepsWhenEnded = log.steps();
        return ConnectError.from(e);
      },
    );
    await waitFor(() => app.hub?.listenerCount === 1, { timeoutMs: 5000, what: "the watch" });
    await t.close();
    const err = await ended;
    // Ended by the shutdown signal (not cut by the closing server), before the hub closed.
    expect(err?.code).toBe(Code.Unavailable);
    expect(err?.rawMessage).toMatch(/shutting down/);
    expect(stepsWhenEnded).not.toContain("hub");
    expect(log.steps()).toEqual([
      "storage health",
      "server",
      "hub",
      "queues",
      "observers",
      "redis",
      "metrics server",
    ]);
  });

  it("in worker mode: workers, sweepers, report segments, queues, Redis, probe port", async () => {
    const log = recordingLogger();
    t = await startTestApp({}, { mode: "worker", logger: log.logger });
    await t.close();
    expect(log.steps()).toEqual([
      "storage health",
      "worker",
      "reconciler",
      "janitor",
      "report segments",
      "queues",
      "observers",
      "redis",
      "metrics server",
    ]);
  });
});
