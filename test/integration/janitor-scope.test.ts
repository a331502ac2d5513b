/**
 * The janitor deletes only report folders of its own deployment: two
 * deployments (two REDIS_PREFIXes) on one Redis and one ARTIFACT_DIR keep
 * each other's reports. Reports written before deployments had folders of
 * their own (ARTIFACT_DIR/<job id>) are still served, and adopted by the
 * deployment whose job they are.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { artifactFolder, deploymentArtifactDir } from "../../src/domain/artifact-paths.js";
import { moveToJobFolder, reportFilesOf } from "../helpers/artifact-files.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput, scripted } from "../helpers/generators.js";
import { waitForState } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

describe("the janitor on an ARTIFACT_DIR shared by two deployments", () => {
  let shared: string;
  const apps: TestApp[] = [];
  beforeAll(() => {
    shared = mkdtempSync(path.join(tmpdir(), "report-jobs-shared-artifacts-"));
  });
  afterEach(async () => {
    for (const app of apps.splice(0)) await app.close();
  });
  afterAll(() => {
    rmSync(shared, { recursive: true, force: true });
  });

  /** A deployment (its own prefix) writing to the shared folder; sweeps only when told to. */
  async function deployment() {
    const t = await startTestApp(
      // Reports in files of their own, whose files this test checks.
      { ARTIFACT_DIR: shared, RETENTION_SWEEP_MS: "3600000", REPORT_SEGMENTS: "false" },
      { generators: { weekly: scripted(async () => csvOutput) } },
    );
    apps.push(t);
    const client = reportClient("grpc", t.url);
    const finished = async () => {
      const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
      const job = await waitForState(client, jobId, JobState.SUCCEEDED);
      return { jobId, url: job.result?.downloadUrl ?? "" };
    };
    const dir = deploymentArtifactDir(shared, t.config.redis.prefix);
    const folder = (jobId: string) => artifactFolder(dir, jobId) ?? "";
    const files = (jobId: string) => reportFilesOf(dir, jobId);
    return { t, client, finished, dir, folder, files };
  }

  it("keeps the other deployment's reports: each sweeps only its own folder", async () => {
    const a = await deployment();
    const b = await deployment();
    const ofA = await a.finished();
    const ofB = await b.finished();
    expect(await a.files(ofA.jobId)).toHaveLength(1);
    expect(await b.files(ofB.jobId)).toHaveLength(1);
    // A report and a folder (the layout before) of B's with no job behind
    // them: B's to remove, not A's.
    const orphan = b.folder("orphanJob123");
    mkdirSync(orphan, { recursive: true });
    const orphanFile = path.join(b.dir, "orphanJob456@1-0123456789ab");
    writeFileSync(orphanFile, "x");

    await a.t.app.janitor?.sweep();
    expect(existsSync(orphanFile)).toBe(true);
    await b.t.app.janitor?.sweep();

    expect((await fetch(ofA.url)).status).toBe(200);
    expect((await fetch(ofB.url)).status).toBe(200);
    expect(await a.files(ofA.jobId)).toHaveLength(1);
    expect(await b.files(ofB.jobId)).toHaveLength(1);
    expect(existsSync(orphan)).toBe(false);
    expect(existsSync(orphanFile)).toBe(false);
  });

  it("serves a report in the folder layout before deployments had their own, and adopts it", async () => {
    const a = await deployment();
    const b = await deployment();
    const ofA = await a.finished();
    // As an older version wrote it: ARTIFACT_DIR/<job id>/<attempt tag>.
    const legacy = path.join(shared, ofA.jobId);
    const tag = new URL(ofA.url).pathname.split("/")[4] ?? "";
    moveToJobFolder(a.dir, ofA.jobId, tag, undefined, legacy);
    expect((await fetch(ofA.url)).status).toBe(200);
    // A folder in that layout of no job of either deployment: not provably theirs, kept.
    const unknown = path.join(shared, "someoneElsesJob");
    mkdirSync(unknown);
    writeFileSync(path.join(unknown, "r.csv"), "x");

    await b.t.app.janitor?.sweep();
    expect(existsSync(legacy)).toBe(true);
    await a.t.app.janitor?.sweep();

    expect(existsSync(legacy)).toBe(false);
    expect(await a.files(ofA.jobId)).toEqual([path.join(ofA.jobId, tag)]);
    expect((await fetch(ofA.url)).status).toBe(200);
    expect(existsSync(unknown)).toBe(true);
  });
});
