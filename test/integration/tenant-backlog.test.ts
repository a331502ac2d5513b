/**
 * One tenant cannot block the rest: each tenant's waiting jobs (queued or
 * retrying, far-future run_at ones included) are bounded by
 * TENANT_MAX_BACKLOG as well as the global MAX_BACKLOG. The count is a set
 * per tenant, kept by the submit script (in its one round trip) and by every
 * state transition, and corrected by the janitor, so it cannot drift for ever.
 */

import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { Redis } from "ioredis";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { backlogStates, type JobView } from "../../src/domain/job.js";
import {
  type AppliedTransitionName,
  jobTransitions,
  type TransitionInputs,
} from "../../src/domain/job-transitions.js";
import { encodeNewRecord, recordField } from "../../src/queue/job-record.js";
import { createKeys } from "../../src/queue/keys.js";
import { createTransitionApplier } from "../../src/queue/transition-applier.js";
import { TransientReportError } from "../../src/worker/generator.js";
import { capturedLogger, logLevel } from "../helpers/captured-logger.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput, scripted } from "../helpers/generators.js";
import { openMonitor } from "../helpers/redis-monitor.js";
import { connectErrorOf, getJob } from "../helpers/rpc.js";
import { startTestApp, type TestApp, testPrefix } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const acmeKey = "acme-key-0123456789abcdef";
const globexKey = "globex-key-0123456789abcdef";
const initechKey = "initech-key-0123456789abcdef";
const API_KEYS = `acme:${acmeKey},globex:${globexKey},initech:${initechKey}`;
const tomorrow = () => timestampFromMs(Date.now() + 86_400_000);

describe("per-tenant backlog bound", () => {
  const apps: TestApp[] = [];
  let redis: Redis;
  beforeAll(() => {
    redis = new Redis(inject("redisUrl"));
  });
  afterEach(async () => {
    for (const app of apps.splice(0).reverse()) await app.close();
  });
  afterAll(() => {
    redis.disconnect();
  });
  async function start(...args: Parameters<typeof startTestApp>) {
    const app = await startTestApp(...args);
    apps.push(app);
    return app;
  }

  it("lets other tenants submit while one tenant's far-future jobs fill its own quota", async () => {
    const t = await start(
      { API_KEYS, MAX_BACKLOG: "10", TENANT_MAX_BACKLOG: "4", BACKLOG_RETRY_AFTER_MS: "2000" },
      { mode: "api" },
    );
    const acme = reportClient("grpc", t.url, { apiKey: acmeKey });
    const globex = reportClient("connect-json", t.url, { apiKey: globexKey });
    const acmeJobs: string[] = [];
    const runAt = tomorrow();
    for (let i = 0; i < 4; i++) {
      const res = await acme.submitReport({
        userId: "a",
        reportType: ReportType.WEEKLY,
        runAt,
        idempotencyKey: `a-${i}`,
      });
      acmeJobs.push(res.jobId);
    }
    const full = await connectErrorOf(
      acme.submitReport({ userId: "a", reportType: ReportType.WEEKLY, runAt: tomorrow() }),
    );
    expect(full.code).toBe(Code.ResourceExhausted);
    expect(full.rawMessage).toBe(
      "this tenant's backlog is full (4 jobs waiting, at most 4); retry later (retry after 2 s)",
    );
    expect(full.metadata.get("retry-after")).toBe("2");
    const http = await fetch(`${t.url}/v1/reports`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${acmeKey}` },
      body: JSON.stringify({ userId: "a", reportType: "weekly" }),
    });
    expect(http.status).toBe(429);
    // A repeat of an accepted submit is still answered: it adds nothing.
    const again = await acme.submitReport({
      userId: "a",
      reportType: ReportType.WEEKLY,
      runAt,
      idempotencyKey: "a-0",
    });
    expect(again.jobId).toBe(acmeJobs[0]);

    // Another tenant is not affected: it has a quota of its own.
    for (let i = 0; i < 4; i++) {
      const res = await globex.submitReport({ userId: "g", reportType: ReportType.MONTHLY });
      expect(res.job?.state).toBe(JobState.QUEUED);
    }
    // The global bound still holds over all tenants together (4 + 4 + 2 = 10).
    const initech = reportClient("grpc-web", t.url, { apiKey: initechKey });
    await initech.submitReport({ userId: "i", reportType: ReportType.CUSTOM });
    await initech.submitReport({ userId: "i", reportType: ReportType.CUSTOM });
    const globalFull = await connectErrorOf(
      initech.submitReport({ userId: "i", reportType: ReportType.CUSTOM }),
    );
    expect(globalFull.code).toBe(Code.ResourceExhausted);
    expect(globalFull.rawMessage).toMatch(/^backlog is full \(10 jobs waiting\)/);

    // A job leaving the backlog (cancelled) makes room for its tenant's next submit.
    await acme.cancelJob({ jobId: acmeJobs[0] ?? "" });
    const afterCancel = await acme.submitReport({
      userId: "a",
      reportType: ReportType.WEEKLY,
      runAt: tomorrow(),
    });
    expect(afterCancel.job?.state).toBe(JobState.QUEUED);
    expect(await redis.smembers(t.app.keys.tenantBacklog("acme"))).toHaveLength(4);
  });

  it("counts a job while it waits to retry, and no more once it runs or ends", async () => {
    const generator = scripted(async (input) => {
      if (input.attempt === 1) throw new TransientReportError("first attempt fails");
      return csvOutput;
    });
    const t = await start(
      { API_KEYS, TENANT_MAX_BACKLOG: "1", RETRY_BACKOFF_MS: "2000" },
      { generators: { weekly: generator } },
    );
    const acme = reportClient("grpc", t.url, { apiKey: acmeKey });
    const backlog = t.app.keys.tenantBacklog("acme");
    const { jobId } = await acme.submitReport({ userId: "a", reportType: ReportType.WEEKLY });
    await waitFor(async () => (await getJob(acme, jobId)).state === JobState.RETRYING, {
      what: "the job to wait out its backoff",
    });
    expect(await redis.smembers(backlog)).toEqual([jobId]);
    await waitFor(async () => (await getJob(acme, jobId)).state === JobState.SUCCEEDED, {
      timeoutMs: 15_000,
      what: "the job to succeed on its second attempt",
    });
    expect(await redis.exists(backlog)).toBe(0);
    // With a quota of one, the next submit is accepted: nothing is left counted.
    const next = await acme.submitReport({ userId: "a", reportType: ReportType.MONTHLY });
    await waitFor(async () => (await getJob(acme, next.jobId)).state === JobState.SUCCEEDED, {
      what: "the second job to succeed",
    });
    expect(await redis.exists(backlog)).toBe(0);
    expect(generator.calls).toEqual([1, 2]);
  });

  it("keeps the count inside the one submit round trip", async () => {
    const t = await start({ API_KEYS, TENANT_MAX_BACKLOG: "100" }, { mode: "api" });
    const client = reportClient("connect-binary", t.url, { apiKey: acmeKey });
    // Loads the script of this queue's delayed add (one script per kind of add, queue and shard).
    await client.submitReport({ userId: "u", reportType: ReportType.WEEKLY, runAt: tomorrow() });
    const commands: string[][] = [];
    const monitor = await openMonitor(inject("redisUrl"));
    try {
      monitor.on("monitor", (_time: string, args: string[], source: string) => {
        if (source === "lua") return;
        if (args.some((a) => String(a).startsWith(`${t.config.redis.prefix}:`))) {
          commands.push(args);
        }
      });
      await client.submitReport({ userId: "u", reportType: ReportType.WEEKLY, runAt: tomorrow() });
      const marker = `${t.config.redis.prefix}:marker`;
      await redis.get(marker);
      await waitFor(() => commands.some((c) => c.includes(marker)), { what: "the marker" });
      const ours = commands.filter((c) => !c.includes(marker));
      expect(ours.map((c) => String(c[0]).toLowerCase())).toEqual(["evalsha"]);
      expect(ours[0]).toContain(t.app.keys.tenantBacklog("acme"));
    } finally {
      monitor.disconnect();
    }
    expect(await redis.scard(t.app.keys.tenantBacklog("acme"))).toBe(2);
  });

  it("corrects drift on the janitor's sweep, so stale entries cannot hold a tenant at its bound", async () => {
    const { logger, lines } = capturedLogger();
    const t = await start({ API_KEYS, TENANT_MAX_BACKLOG: "3" }, { logger });
    const acme = reportClient("grpc", t.url, { apiKey: acmeKey });
    const submit = () =>
      acme.submitReport({ userId: "a", reportType: ReportType.WEEKLY, runAt: tomorrow() });
    const waiting = await submit();
    const lost = await submit();
    const stale = await submit();
    // A record that is gone (lost with Redis data, deleted by hand) and one
    // whose state changed without its transition: both still counted.
    await redis.del(t.app.keys.job(lost.jobId));
    await redis.hset(t.app.keys.job(stale.jobId), recordField.state, "succeeded");
    const blocked = await connectErrorOf(submit());
    expect(blocked.code).toBe(Code.ResourceExhausted);

    await t.app.janitor?.sweep();
    expect(await redis.smembers(t.app.keys.tenantBacklog("acme"))).toEqual([waiting.jobId]);
    expect(
      lines.filter(
        (l) => l.level === logLevel.warn && l.msg.startsWith("tenant backlog corrected"),
      ),
    ).toMatchObject([{ tenant: "acme", removed: 2 }]);
    expect((await submit()).job?.state).toBe(JobState.QUEUED);
  });
});

describe("apply-transition.lua and the tenant's backlog", () => {
  let redis: Redis;
  beforeAll(() => {
    redis = new Redis(inject("redisUrl"));
  });
  afterAll(() => {
    redis.disconnect();
  });

  const artifact = { downloadPath: "/v1/artifacts/j/r.csv", contentType: "text/csv", sizeBytes: 3 };
  const attempt = { attempt: 1, at: 2_000, token: "A", lockToken: "L" };
  const where = { progress: 40, phase: "x" };
  /** One input per transition (a new transition fails to compile here until it has one). */
  const inputs: { [N in AppliedTransitionName]: TransitionInputs[N] } = {
    started: { ...attempt, maxAttempts: 3 },
    progress: { ...attempt, ...where },
    succeeded: { ...attempt, startedAt: 1_500, artifact },
    retrying: { ...attempt, ...where, reason: "r", nextAttemptAt: 3_000 },
    failed: { ...attempt, ...where, reason: "r" },
    cancelled: { ...attempt, ...where, reason: "r" },
    released: attempt,
    throttled: { ...attempt, reason: "r", retryAfterMs: 100 },
    abandoned: { ...where, attempt: 1, at: 2_000, reason: "r" },
    cancelledWaiting: { ...where, attempt: 1, at: 2_000, reason: "r" },
    requeued: { at: 2_000, traceparent: "" },
    retryUnscheduled: { at: 2_000 },
    recovered: { at: 2_000, reason: "r", recoveries: 1 },
  };

  it("makes every transition leave the job a member exactly when its new state is a backlog state", async () => {
    const keys = createKeys(testPrefix());
    const transitions = createTransitionApplier({
      redis,
      keys,
      settings: { eventStreamMaxLen: 100, succeededMs: 60_000, failedMs: 60_000 },
      logger: pino({ level: "silent" }),
    });
    const backlog = keys.tenantBacklog("t1");
    const names = Object.keys(inputs) as AppliedTransitionName[];
    for (const [i, name] of names.entries()) {
      const transition = jobTransitions[name];
      for (const from of transition.from) {
        const job: JobView = {
          id: `job-${i}-${from}`,
          tenant: "t1",
          userId: "u1",
          reportType: "weekly",
          state: from,
          progress: 0,
          phase: "",
          attemptsMade: 1,
          maxAttempts: 3,
          failureReason: "",
          createdAt: 1_000,
          filters: {},
          priority: "normal",
        };
        await redis.hset(keys.job(job.id), ...encodeNewRecord(job, "fp"));
        await redis.hset(keys.job(job.id), recordField.attemptToken, "A");
        // The attempt's BullMQ fetch holds the job's lock.
        await redis.set(keys.bullJobLock(job.reportType, job.id), "L", "PX", 60_000);
        const member = backlogStates.includes(transition.to);
        // Start from the opposite, so the transition itself must set membership.
        if (member) await redis.srem(backlog, job.id);
        else await redis.sadd(backlog, job.id);
        const result = await transitions.apply(job, name, inputs[name]);
        expect(result.applied, `${name} from ${from}`).toBe(true);
        expect(await redis.sismember(backlog, job.id), `${name} from ${from}`).toBe(member ? 1 : 0);
      }
    }
  });

  it("leaves membership alone when a transition is refused", async () => {
    const keys = createKeys(testPrefix());
    const transitions = createTransitionApplier({
      redis,
      keys,
      settings: { eventStreamMaxLen: 100, succeededMs: 60_000, failedMs: 60_000 },
      logger: pino({ level: "silent" }),
    });
    const job: JobView = {
      id: "job-stale",
      tenant: "t1",
      userId: "u1",
      reportType: "weekly",
      state: "running",
      progress: 0,
      phase: "",
      attemptsMade: 1,
      maxAttempts: 3,
      failureReason: "",
      createdAt: 1_000,
      filters: {},
      priority: "normal",
    };
    await redis.hset(keys.job(job.id), ...encodeNewRecord(job, "fp"));
    await redis.hset(keys.job(job.id), recordField.attemptToken, "B");
    await redis.set(keys.bullJobLock(job.reportType, job.id), "L", "PX", 60_000);
    // A stale attempt (token A, the record holds B) cannot put the job back in the backlog.
    const result = await transitions.apply(job, "released", inputs.released);
    expect(result).toEqual({ applied: false, state: "running", fenced: "token" });
    expect(await redis.exists(keys.tenantBacklog("t1"))).toBe(0);
  });
});
