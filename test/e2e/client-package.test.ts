/**
 * The package export `report-jobs/client` for plain-JS consumers: built with
 * `npm run build:client` (tsc into dist/), imported by plain `node` (no tsx)
 * through package.json "exports", and used against the real service.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

const run = promisify(execFile);
const repoRoot = new URL("../../", import.meta.url).pathname;

describe("report-jobs/client (built package export)", () => {
  let t: TestApp;
  beforeAll(async () => {
    await run("npm", ["run", "-s", "build:client"], { cwd: repoRoot });
    t = await startTestApp();
  }, 120_000);
  afterAll(async () => {
    await t?.close();
  });

  it("is importable by plain node and follows a job to SUCCEEDED", async () => {
    expect(existsSync(`${repoRoot}dist/src/client/reports-client.d.ts`)).toBe(true);
    const script = `
      import { createReportsClient, ReportType, JobEventType } from "report-jobs/client";
      const client = createReportsClient({ baseUrl: process.argv[1], protocol: "grpc" });
      const { jobId } = await client.submitReport({ userId: "pkg", reportType: ReportType.WEEKLY });
      const types = [];
      for await (const e of client.watchJob(jobId)) types.push(JobEventType[e.type]);
      console.log(JSON.stringify(types));
    `;
    const { stdout } = await run(process.execPath, ["--input-type=module", "-e", script, t.url], {
      cwd: repoRoot,
    });
    expect(JSON.parse(stdout)).toEqual(["QUEUED", "STARTED", "PROGRESS", "PROGRESS", "SUCCEEDED"]);
  });
});
