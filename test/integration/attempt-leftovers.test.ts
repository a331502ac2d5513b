/**
 * The janitor removes what attempts wrote and never published (a worker
 * killed between storing its file and recording SUCCEEDED, or one that lost
 * its lock) once their job has ended, and never the published report or the
 * files of a job that still runs.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { deploymentArtifactDir } from "../../src/domain/artifact-paths.js";
import { recordField } from "../../src/queue/job-record.js";
import { createKeys } from "../../src/queue/keys.js";
import { PermanentReportError } from "../../src/worker/generator.js";
import { reportFilesOf } from "../helpers/artifact-files.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput, deferred, scripted } from "../helpers/generators.js";
import { waitForState } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

describe("the janitor's sweep of attempt leftovers", () => {
  let t: TestApp | undefined;
  let redis: Redis | undefined;
  afterEach(async () => {
    redis?.disconnect();
    await t?.close();
    t = redis = undefined;
  });

  it("removes unpublished attempt files of ended jobs, keeping published reports and live jobs' files", async () => {
    const gate = deferred();
    const weekly = scripted(async (input) => {
      if (input.userId === "live") await gate.promise;
      return csvOutput;
    });
    const custom = scripted(async () => {
      throw new PermanentReportError("bad filters");
    });
    // Reports in files of their own (REPORT_SEGMENTS=false), whose files this test checks;
    // segments: report-segments.test.ts.
    t = await startTestApp({ REPORT_SEGMENTS: "false" }, { generators: { weekly, custom } });
    const dir = deploymentArtifactDir(t.config.worker.artifactDir, t.config.redis.prefix);
    const client = reportClient("grpc", t.url);
    const submit = async (userId: string, reportType: ReportType) =>
      (await client.submitReport({ userId, reportType })).jobId;
    // An attempt's file, as this layout writes it: <job>@<attempt>.
    const leftover = (jobId: string, tag: string) =>
      writeFileSync(path.join(dir, `${jobId}@${tag}`), "x");
    // As the layouts before wrote them, in the job's folder: <job>/<attempt>/<file>.
    const leftoverBefore = (jobId: string, entry: string, file = "r.csv") => {
      mkdirSync(path.join(dir, jobId, entry), { recursive: true });
      writeFileSync(path.join(dir, jobId, entry, file), "x");
    };

    const done = await submit("done", ReportType.WEEKLY);
    const ended = await waitForState(client, done, JobState.SUCCEEDED);
    const published = await reportFilesOf(dir, done);
    expect(published).toHaveLength(1);
    leftover(done, "1-aaaaaaaaaaaa");
    leftoverBefore(done, "1-bbbbbbbbbbbb", ".r.csv.tmp");

    const failed = await submit("failed", ReportType.CUSTOM);
    await waitForState(client, failed, JobState.FAILED);
    leftover(failed, "1-cccccccccccc");
    leftoverBefore(failed, "1-eeeeeeeeeeee");

    const live = await submit("live", ReportType.WEEKLY);
    await waitForState(client, live, JobState.RUNNING);
    leftover(live, "1-dddddddddddd");
    leftoverBefore(live, "1-ffffffffffff");

    // A report stored before attempt folders: the record points at <job>/<file>.
    redis = new Redis(t.config.redis.url);
    const keys = createKeys(t.config.redis.prefix);
    const legacy = await submit("legacy", ReportType.WEEKLY);
    await waitForState(client, legacy, JobState.SUCCEEDED);
    await redis.hset(keys.job(legacy), recordField.resultPath, `/v1/artifacts/${legacy}/old.csv`);
    mkdirSync(path.join(dir, legacy));
    writeFileSync(path.join(dir, legacy, "old.csv"), "old");

    await t.app.janitor?.sweep();

    expect(await reportFilesOf(dir, done)).toEqual(published);
    expect(await reportFilesOf(dir, failed)).toEqual([]);
    expect(await reportFilesOf(dir, live)).toEqual([
      path.join(live, "1-ffffffffffff", "r.csv"),
      `${live}@1-dddddddddddd`,
    ]);
    // Its own report is not the one its record names (set above): a leftover.
    expect(await reportFilesOf(dir, legacy)).toEqual([path.join(legacy, "old.csv")]);
    const res = await fetch(ended.result?.downloadUrl ?? "");
    expect(res.status).toBe(200);
    gate.resolve();
  });
});
