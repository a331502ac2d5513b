/**
 * What people with curl see: Connect's own JSON (POST and GET), the plain
 * routes (`POST /v1/reports`, `GET /v1/jobs/{id}`), health probes, and
 * HTTP/2 with prior knowledge on the same port. Every request goes through
 * the real `curl` binary.
 */
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const run = promisify(execFile);
const separator = "\n--curl-write-out--\n";

/** One curl response. */
interface CurlResponse {
  status: number;
  httpVersion: string;
  /** Lower-case header names; the last value of each. */
  headers: Record<string, string>;
  body: string;
  /** The body parsed as JSON (throws when it is not JSON). */
  json(): Record<string, unknown>;
}

/** Runs curl with `args` (the URL among them) and parses what it wrote. */
async function curl(args: string[]): Promise<CurlResponse> {
  const { stdout } = await run(
    "curl",
    [
      "--silent",
      "--show-error",
      "--max-time",
      "10",
      "--write-out",
      `${separator}%{http_code} %{http_version}${separator}%{header_json}`,
      ...args,
    ],
    { maxBuffer: 16 * 1024 * 1024 },
  );
  const parts = stdout.split(separator);
  const [codeAndVersion = "", headerJson = "{}"] = parts.slice(-2);
  const body = parts.slice(0, -2).join(separator);
  const [code = "0", httpVersion = ""] = codeAndVersion.split(" ");
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(JSON.parse(headerJson) as Record<string, string[]>)) {
    headers[k.toLowerCase()] = v.at(-1) ?? "";
  }
  return {
    status: Number(code),
    httpVersion,
    headers,
    body,
    json: () => JSON.parse(body) as Record<string, unknown>,
  };
}

const jsonHeaders = ["-H", "content-type: application/json"];
const filters = { region: "eu", end_date: "2026-01-31" };

describe("createHttpRoutes()", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  /** `POST /v1/reports` with an Idempotency-Key header. */
  const postReport = (body: string, key?: string) =>
    curl([
      "-X",
      "POST",
      ...jsonHeaders,
      ...(key === undefined ? [] : ["-H", `Idempotency-Key: ${key}`]),
      "--data-binary",
      body,
      `${t.url}/v1/reports`,
    ]);

  /** Polls `GET /v1/jobs/{id}` with curl until the job is SUCCEEDED. */
  const waitSucceeded = (jobId: string) =>
    waitFor(
      async () => {
        const res = await curl([`${t.url}/v1/jobs/${jobId}`]);
        const job = res.json();
        if (job.state === "JOB_STATE_FAILED") throw new Error(`job failed: ${res.body}`);
        return job.state === "JOB_STATE_SUCCEEDED" ? job : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 50, what: `job ${jobId} to succeed` },
    );

  it("serves SubmitReport over Connect JSON with a unary POST", async () => {
    const res = await curl([
      "-X",
      "POST",
      ...jsonHeaders,
      "-H",
      "connect-protocol-version: 1",
      "--data-binary",
      JSON.stringify({ userId: "curl-u1", reportType: "REPORT_TYPE_WEEKLY", filters }),
      `${t.url}/reports.v1.ReportService/SubmitReport`,
    ]);
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toMatch(/^application\/json/);
    const body = res.json();
    expect(body.jobId).toEqual(expect.stringMatching(/^[A-Za-z0-9_-]{1,64}$/));
    expect(body.statusUrl).toBe(`${t.url}/v1/jobs/${body.jobId}`);
    expect(body.job).toMatchObject({
      id: body.jobId,
      userId: "curl-u1",
      reportType: "REPORT_TYPE_WEEKLY",
      state: "JOB_STATE_QUEUED",
      filters,
    });
  });

  it("serves GetJob over a Connect GET", async () => {
    const submitted = (
      await postReport(JSON.stringify({ userId: "curl-u2", reportType: "weekly" }))
    ).json();
    const message = encodeURIComponent(JSON.stringify({ jobId: submitted.jobId }));
    const res = await curl([
      `${t.url}/reports.v1.ReportService/GetJob?connect=v1&encoding=json&message=${message}`,
    ]);
    expect(res.status).toBe(200);
    expect(res.json().job).toMatchObject({
      id: submitted.jobId,
      userId: "curl-u2",
      reportType: "REPORT_TYPE_WEEKLY",
    });
    const missing = encodeURIComponent(JSON.stringify({ jobId: "noSuchJob77" }));
    const notFound = await curl([
      `${t.url}/reports.v1.ReportService/GetJob?connect=v1&encoding=json&message=${missing}`,
    ]);
    expect(notFound.status).toBe(404);
    expect(notFound.json().code).toBe("not_found");
  });

  it("answers Connect JSON errors with their code and the violations detail", async () => {
    const res = await curl([
      "-X",
      "POST",
      ...jsonHeaders,
      "-H",
      "connect-protocol-version: 1",
      "--data-binary",
      JSON.stringify({ userId: "" }),
      `${t.url}/reports.v1.ReportService/SubmitReport`,
    ]);
    expect(res.status).toBe(400);
    const body = res.json();
    expect(body.code).toBe("invalid_argument");
    expect(body.message).toEqual(expect.stringContaining("user_id"));
    expect(body.details).toEqual([
      expect.objectContaining({ type: "buf.validate.Violations", value: expect.any(String) }),
    ]);
  });

  it("accepts POST /v1/reports with 202, a Location header and deduplicated repeats", async () => {
    const key = `curl-${randomUUID()}`;
    const body = JSON.stringify({ userId: "u1", reportType: "weekly", filters });
    const first = await postReport(body, key);
    expect(first.status).toBe(202);
    const accepted = first.json();
    expect(accepted.jobId).toEqual(expect.stringMatching(/^[A-Za-z0-9_-]{1,64}$/));
    expect(accepted.statusUrl).toBe(`${t.url}/v1/jobs/${accepted.jobId}`);
    expect(accepted.deduplicated).toBe(false);
    expect(first.headers.location).toBe(accepted.statusUrl);
    const again = await postReport(body, key);
    expect(again.status).toBe(202);
    expect(again.json()).toEqual({ ...accepted, deduplicated: true });
    // The same key with another payload: 422, per the IETF Idempotency-Key draft
    // (the body keeps the Connect code, as RPCs answer ALREADY_EXISTS).
    const conflict = await postReport(
      JSON.stringify({ userId: "u1", reportType: "monthly", filters }),
      key,
    );
    expect(conflict.status).toBe(422);
    expect(conflict.json().code).toBe("already_exists");
    // The draft's structured-field form of the key ("...") is the same key.
    const quoted = await postReport(body, `"${key}"`);
    expect(quoted.status).toBe(202);
    expect(quoted.json()).toEqual({ ...accepted, deduplicated: true });
  });

  it("runs the README's curl flow verbatim: 202, then polling GET until done", async () => {
    const base = t.url;
    const key = `readme-${randomUUID()}`;
    // As in README.md ("Plain HTTP routes"), with the test server's address.
    const post = await run("bash", [
      "-c",
      `curl -sS -X POST ${base}/v1/reports -H 'content-type: application/json' \\
  -H 'Idempotency-Key: ${key}' -d '{"userId":"alice","reportType":"weekly"}'`,
    ]);
    const accepted = JSON.parse(post.stdout) as { jobId: string; statusUrl: string };
    expect(accepted.statusUrl).toBe(`${base}/v1/jobs/${accepted.jobId}`);
    const job = await waitFor(
      async () => {
        const { stdout } = await run("bash", ["-c", `curl -sS ${base}/v1/jobs/${accepted.jobId}`]);
        const j = JSON.parse(stdout) as { state: string; result?: { downloadUrl: string } };
        return j.state === "JOB_STATE_SUCCEEDED" ? j : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 50, what: "the README job to succeed" },
    );
    const download = new URL(job.result?.downloadUrl ?? base).pathname;
    expect(download).toMatch(
      new RegExp(`^/v1/artifacts/${accepted.jobId}/1-[0-9a-f]{12}/weekly-alice\\.csv$`),
    );
    const file = download.split("/").at(-1) ?? "";
    const dir = mkdtempSync(path.join(tmpdir(), "readme-curl-"));
    try {
      await run("bash", ["-c", `curl -sS -O ${base}${download}`], { cwd: dir });
      expect(readFileSync(path.join(dir, file), "utf8")).toMatch(
        /^date,sessions,orders,revenue\r\n/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("answers GET /v1/jobs/{id} with the job as JSON until it succeeds", async () => {
    const accepted = (
      await postReport(JSON.stringify({ userId: "curl-u3", reportType: "weekly", filters }))
    ).json();
    const queued = await curl([`${t.url}/v1/jobs/${accepted.jobId}`]);
    expect(queued.status).toBe(200);
    expect(queued.headers["content-type"]).toMatch(/^application\/json/);
    expect(queued.json()).toMatchObject({ id: accepted.jobId, userId: "curl-u3" });
    const job = await waitSucceeded(String(accepted.jobId));
    expect(job).toMatchObject({
      id: accepted.jobId,
      userId: "curl-u3",
      reportType: "REPORT_TYPE_WEEKLY",
      state: "JOB_STATE_SUCCEEDED",
      progress: 100,
      attemptsMade: 1,
      filters,
      result: { contentType: "text/csv" },
    });
    const result = job.result as { downloadUrl: string; sizeBytes: string };
    // int64 is a string in proto JSON.
    expect(result.sizeBytes).toMatch(/^[1-9]\d*$/);
    const download = await curl([result.downloadUrl]);
    expect(download.status).toBe(200);
    expect(download.headers["content-type"]).toMatch(/^text\/csv/);
    expect(Buffer.byteLength(download.body)).toBe(Number(result.sizeBytes));
    expect(download.body.startsWith("date,sessions,orders,revenue\r\n")).toBe(true);
  });

  it("answers 404 JSON for an unknown job", async () => {
    const res = await curl([`${t.url}/v1/jobs/noSuchJob123`]);
    expect(res.status).toBe(404);
    expect(res.headers["content-type"]).toMatch(/^application\/json/);
    const body = res.json();
    expect(body.code).toBe("not_found");
    expect(body.message).toEqual(expect.stringContaining("noSuchJob123"));
  });

  it("answers 400 invalid_argument JSON for a bad body, invalid JSON or a bad key", async () => {
    const invalid = await postReport(JSON.stringify({ userId: "", reportType: "weekly" }));
    expect(invalid.status).toBe(400);
    expect(invalid.json()).toMatchObject({ code: "invalid_argument" });
    expect(invalid.json().message).toEqual(expect.stringContaining("user_id"));
    const notJson = await postReport("{not json");
    expect(notJson.status).toBe(400);
    expect(notJson.json()).toMatchObject({ code: "invalid_argument" });
    const unknownField = await postReport(JSON.stringify({ userId: "u1", color: "red" }));
    expect(unknownField.status).toBe(400);
    expect(unknownField.json()).toMatchObject({ code: "invalid_argument" });
    const badKey = await postReport(
      JSON.stringify({ userId: "u1", reportType: "weekly" }),
      "k".repeat(256),
    );
    expect(badKey.status).toBe(400);
    expect(badKey.json().message).toEqual(expect.stringContaining("idempotency_key"));
    const badId = await curl([`${t.url}/v1/jobs/bad%20id`]);
    expect(badId.status).toBe(400);
    expect(badId.json()).toMatchObject({ code: "invalid_argument" });
  });

  it("answers the health probes", async () => {
    const health = await curl([`${t.url}/healthz`]);
    expect(health.status).toBe(200);
    expect(health.json()).toEqual({ status: "ok" });
    const ready = await curl([`${t.url}/readyz`]);
    expect(ready.status).toBe(200);
    expect(ready.json()).toEqual({ status: "ready" });
  });

  it("serves the same routes over HTTP/2 with prior knowledge on the same port", async () => {
    const accepted = (
      await postReport(JSON.stringify({ userId: "curl-h2", reportType: "weekly" }))
    ).json();
    const h2 = await curl(["--http2-prior-knowledge", `${t.url}/v1/jobs/${accepted.jobId}`]);
    expect(h2.httpVersion).toBe("2");
    expect(h2.status).toBe(200);
    expect(h2.json()).toMatchObject({ id: accepted.jobId, userId: "curl-h2" });
    const h1 = await curl(["--http1.1", `${t.url}/v1/jobs/${accepted.jobId}`]);
    expect(h1.httpVersion).toBe("1.1");
    expect(h1.json().id).toBe(accepted.jobId);
    const missing = await curl(["--http2-prior-knowledge", `${t.url}/v1/jobs/noSuchJob9`]);
    expect(missing.httpVersion).toBe("2");
    expect(missing.status).toBe(404);
    const health = await curl(["--http2-prior-knowledge", `${t.url}/healthz`]);
    expect(health.status).toBe(200);
  });
});
