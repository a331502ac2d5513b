// Telemetry first: the SDK must be registered before the app loads.
import "../helpers/telemetry.js";
import { Writable } from "node:stream";
import { Code } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { createLogger } from "../../src/telemetry/logger.js";
import { TransientReportError } from "../../src/worker/generator.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput, scripted } from "../helpers/generators.js";
import { codeOf, getJob, history } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

/** A logger writing into `lines` (raw text, one entry per line). */
function captured(format: "json" | "pretty" = "json") {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split("\n")) if (l.trim() !== "") lines.push(l);
      cb();
    },
  });
  return { lines, logger: createLogger("info", { mode: "all" }, { format, destination: stream }) };
}

type Line = Record<string, unknown>;

describe("logs", () => {
  let t: TestApp | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  it("writes one JSON line per request and per job transition, with trace ids and no filters", async () => {
    const { lines, logger } = captured();
    const weekly = scripted(async (input, progress) => {
      await progress(40, "fetch-data");
      if (input.attempt === 1) throw new TransientReportError("downstream hiccup");
      return csvOutput;
    });
    t = await startTestApp({}, { logger, generators: { weekly } });
    const client = reportClient("grpc", t.url);
    const secret = "SECRET-FILTER-VALUE-42";
    const { jobId } = await client.submitReport({
      userId: "u1",
      reportType: ReportType.WEEKLY,
      filters: { region: secret, nested: { deeper: secret } },
    });
    await history(client, jobId);
    const job = await getJob(client, jobId);
    expect(job.state).toBe(JobState.SUCCEEDED);
    expect(await codeOf(client.getJob({ jobId: "nope" }))).toBe(Code.NotFound);

    const parsed = (): Line[] => lines.map((l) => JSON.parse(l) as Line);
    const all = await waitFor(() => {
      const p = parsed();
      return p.some((l) => l.msg === "job succeeded") && p;
    });

    const submit = all.find((l) => l.msg === "rpc" && l.method === "SubmitReport");
    expect(submit).toMatchObject({
      rpc: "reports.v1.ReportService/SubmitReport",
      protocol: "grpc",
      code: "ok",
      tenant: "default",
      job_id: jobId,
      trace_id: job.traceId,
    });
    expect(submit?.span_id).toMatch(/^[0-9a-f]{16}$/);
    expect(typeof submit?.duration_ms).toBe("number");
    const notFound = all.find((l) => l.msg === "rpc" && l.method === "GetJob" && l.code !== "ok");
    expect(notFound).toMatchObject({ code: "not_found", tenant: "default" });
    const watch = all.find((l) => l.msg === "rpc" && l.method === "WatchJob");
    expect(watch).toMatchObject({ code: "ok", protocol: "grpc" });

    const transitions = all.filter((l) => l.job_id === jobId && String(l.msg).startsWith("job "));
    expect(transitions.map((l) => `${l.state}(${l.attempt})`)).toEqual([
      "running(1)",
      "retrying(1)",
      "running(2)",
      "succeeded(2)",
    ]);
    for (const l of transitions) {
      expect(l).toMatchObject({ tenant: "default", report_type: "weekly", trace_id: job.traceId });
      expect(l.span_id).toMatch(/^[0-9a-f]{16}$/);
    }
    expect(transitions[1]).toMatchObject({ reason: "downstream hiccup", phase: "fetch-data" });

    // Report payloads never reach the log.
    expect(lines.join("\n")).not.toContain(secret);
  });

  it("writes one line per plain-HTTP request too, without the body", async () => {
    const { lines, logger } = captured();
    t = await startTestApp({}, { logger, generators: { weekly: scripted(async () => csvOutput) } });
    const secret = "SECRET-IN-HTTP-BODY";
    const res = await fetch(`${t.url}/v1/reports?x=1`, {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": "http-1" },
      body: JSON.stringify({ userId: "u1", reportType: "weekly", filters: { q: secret } }),
    });
    expect(res.status).toBe(202);
    const line = await waitFor(() =>
      lines.map((l) => JSON.parse(l) as Line).find((l) => l.msg === "http"),
    );
    expect(line).toMatchObject({
      method: "POST",
      path: "/v1/reports",
      protocol: "http",
      status: 202,
      tenant: "default",
    });
    expect(typeof line.duration_ms).toBe("number");
    expect(lines.join("\n")).not.toContain(secret);
  });

  it("names the caller's tenant on a plain-HTTP line when API keys are set", async () => {
    const { lines, logger } = captured();
    t = await startTestApp(
      { API_KEYS: "acme:key-acme-0123456789abcdef" },
      { logger, generators: { weekly: scripted(async () => csvOutput) } },
    );
    const res = await fetch(`${t.url}/v1/reports`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        authorization: "Bearer key-acme-0123456789abcdef",
      },
      body: JSON.stringify({ userId: "u1", reportType: "weekly" }),
    });
    expect(res.status).toBe(202);
    const line = await waitFor(() =>
      lines.map((l) => JSON.parse(l) as Line).find((l) => l.msg === "http"),
    );
    expect(line).toMatchObject({ path: "/v1/reports", status: 202, tenant: "acme" });
    expect(JSON.stringify(line)).not.toContain("key-acme");
  });

  it("redacts filters and credentials even when code logs them by mistake", () => {
    const { lines, logger } = captured();
    logger.info(
      { filters: { a: "leak" }, job: { filters: "leak" }, req: { authorization: "Bearer leak" } },
      "oops",
    );
    expect(lines).toHaveLength(1);
    expect(lines[0]).not.toContain("leak");
  });

  it("prints human-readable lines only when asked (LOG_FORMAT=pretty)", () => {
    const json = captured("json");
    json.logger.info({ job_id: "j1" }, "hello");
    expect(() => JSON.parse(json.lines[0] ?? "")).not.toThrow();
    const pretty = captured("pretty");
    pretty.logger.info({ job_id: "j1" }, "hello");
    const text = pretty.lines.join("\n");
    expect(text).toContain("hello");
    expect(text).toContain("job_id");
    expect(() => JSON.parse(pretty.lines[0] ?? "")).toThrow();
  });
});
