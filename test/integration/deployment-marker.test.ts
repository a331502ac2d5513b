/**
 * The janitor deletes a report whose job has no record, but never because
 * Redis lost its data: a deployment marker kept in Redis and beside the
 * reports must match, else the janitor keeps every report and says why,
 * loudly, on every sweep.
 */
import { existsSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import path from "node:path";
import { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { deploymentArtifactDir } from "../../src/domain/artifact-paths.js";
import { deploymentMarkerFile } from "../../src/worker/deployment-marker.js";
import { reportFilesOf } from "../helpers/artifact-files.js";
import { type CapturedLine, capturedLogger, logLevel } from "../helpers/captured-logger.js";
import { reportClient } from "../helpers/clients.js";
import { type RedisServerHandle, startRedisServer } from "../helpers/redis-server.js";
import { waitForEnd } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

describe("the deployment marker", () => {
  let server: RedisServerHandle | undefined;
  let t: TestApp | undefined;
  let admin: Redis | undefined;
  afterEach(async () => {
    admin?.disconnect();
    await t?.close();
    await server?.stop();
    admin = t = server = undefined;
  });

  /** An all-mode app on a private Redis without AOF; sweeps run only when the test asks. */
  async function start() {
    server = await startRedisServer();
    admin = new Redis(server.url);
    const { logger, lines } = capturedLogger();
    t = await startTestApp(
      // Reports in files of their own, whose files this test checks.
      { REDIS_URL: server.url, RETENTION_SWEEP_MS: "3600000", REPORT_SEGMENTS: "false" },
      { logger, stalledIntervalMs: 1000 },
    );
    const file = deploymentMarkerFile(
      deploymentArtifactDir(t.config.worker.artifactDir, t.config.redis.prefix),
      t.app.keys.deployment,
    );
    const key = t.app.keys.deployment;
    return { t, admin, server, lines, file, key };
  }

  /** A SUCCEEDED job's id and its report file. */
  async function finishedReport(app: TestApp) {
    const client = reportClient("grpc", app.url);
    const { jobId } = await client.submitReport({ userId: "u", reportType: ReportType.WEEKLY });
    const job = await waitForEnd(client, jobId, { what: "the job to end" });
    expect(job.state).toBe(JobState.SUCCEEDED);
    const dir = deploymentArtifactDir(app.config.worker.artifactDir, app.config.redis.prefix);
    const files = await reportFilesOf(dir, jobId);
    expect(files).toHaveLength(1);
    return { jobId, report: path.join(dir, files[0] ?? "") };
  }

  const errors = (lines: CapturedLine[], text: string) =>
    lines.filter((l) => l.level === logLevel.error && l.msg.includes(text));

  it("is written to Redis and beside the reports when a worker starts", async () => {
    const { file, key } = await start();
    await waitFor(() => existsSync(file), { what: "the marker file" });
    const id = (await readFile(file, "utf8")).trim();
    expect(id).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(await admin?.get(key)).toBe(id);
    // Only a dot file: no job folder can take its name.
    expect(path.basename(file).startsWith(".")).toBe(true);
  });

  it("keeps every report when Redis restarts empty, says so on each sweep, and sweeps again once accepted", async () => {
    const { t, server, lines, file, key } = await start();
    const { report } = await finishedReport(t);
    await waitFor(() => existsSync(file), { what: "the marker file" });

    // No AOF: a restart loses every key, the marker and the job's record included.
    await server.kill("SIGKILL");
    await server.restart();
    await waitFor(async () => (await admin?.dbsize().catch(() => -1)) === 0, {
      what: "the empty Redis to answer",
    });
    await waitFor(
      async () => {
        await t.app.janitor?.sweep();
        return errors(lines, "Redis has lost this deployment's marker").length > 0;
      },
      { timeoutMs: 15_000, what: "a sweep to check the marker" },
    );
    const [line] = errors(lines, "Redis has lost this deployment's marker");
    expect(line?.msg).toContain(`Report files of jobs Redis does not know are kept, not deleted`);
    expect(line?.msg).toContain(`delete ${file}`);
    expect(existsSync(report)).toBe(true);
    expect(await admin?.exists(key)).toBe(0);
    // Again on the next sweep: loud until resolved.
    await t.app.janitor?.sweep();
    expect(errors(lines, "Redis has lost this deployment's marker")).toHaveLength(2);
    expect(existsSync(report)).toBe(true);

    // The operator accepts that Redis starts over: the next sweep adopts it.
    await rm(file);
    await t.app.janitor?.sweep();
    expect(existsSync(report)).toBe(false);
    const id = (await readFile(file, "utf8")).trim();
    expect(await admin?.get(key)).toBe(id);
  });

  it("keeps every report while Redis holds another deployment's marker", async () => {
    const { t, lines, file, key } = await start();
    const { report, jobId } = await finishedReport(t);
    await waitFor(() => existsSync(file), { what: "the marker file" });
    // Another deployment's Redis (or prefix): our job's record is not there either.
    await admin?.set(key, "another-deployment");
    await admin?.del(t.app.keys.job(jobId));
    await t.app.janitor?.sweep();
    expect(errors(lines, "Redis holds another deployment's marker")).toHaveLength(1);
    expect(existsSync(report)).toBe(true);

    // Control: with the right marker the same orphan goes at once.
    await admin?.set(key, (await readFile(file, "utf8")).trim());
    await t.app.janitor?.sweep();
    expect(existsSync(report)).toBe(false);
  });
});
