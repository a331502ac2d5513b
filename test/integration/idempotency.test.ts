/**
 * Exactly one job per (tenant, idempotency key), under any number of
 * concurrent duplicates, against the real app and Redis.
 */
import { createHash } from "node:crypto";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { type ReportType as DomainReportType, reportTypes } from "../../src/domain/job.js";
import { decodeEvent } from "../../src/events/event-codec.js";
import { createKeys, queueNameFor } from "../../src/queue/keys.js";
import { createSubmitter, digest } from "../../src/queue/submitter.js";
import { PermanentReportError, type ReportGenerator } from "../../src/worker/generator.js";
import { protocols, reportClient } from "../helpers/clients.js";
import { csvOutput, deferred } from "../helpers/generators.js";
import { scanKeys } from "../helpers/redis-keys.js";
import { connectErrorOf, type ReportClient, waitForState } from "../helpers/rpc.js";
import { testSubmitterSettings } from "../helpers/submitter-settings.js";
import { startTestApp, type TestApp, testPrefix } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

type SubmitReportRequestInit = Parameters<ReportClient["submitReport"]>[0];

const ttlSeconds = 3600;

describe("SubmitReport idempotency", () => {
  let t: TestApp;
  let redis: Redis;
  let client: ReportClient;
  let prefix: string;

  beforeAll(async () => {
    // API only: jobs stay queued, so BullMQ's own counts are exact.
    t = await startTestApp({ IDEMPOTENCY_TTL_SECONDS: String(ttlSeconds) }, { mode: "api" });
    redis = new Redis(t.config.redis.url, { maxRetriesPerRequest: 1 });
    client = reportClient("grpc", t.url);
    prefix = t.config.redis.prefix;
  });
  afterAll(async () => {
    redis?.disconnect();
    await t?.close();
  });

  /** BullMQ job hashes under our prefix, whatever the queue names. */
  async function bullJobIds(): Promise<string[]> {
    const ids: string[] = [];
    for (const key of await scanKeys(redis, `${prefix}:bull:*`)) {
      if ((await redis.type(key)) !== "hash") continue;
      const [data, opts] = await redis.hmget(key, "data", "opts");
      if (data !== null && opts !== null) ids.push(key.slice(key.lastIndexOf(":") + 1));
    }
    return ids;
  }

  /** Jobs BullMQ holds in any state, summed over every report type's queue. */
  async function bullJobCount(): Promise<number> {
    let total = 0;
    for (const type of reportTypes) {
      const queue = new Queue(queueNameFor(type), {
        connection: redis,
        prefix: t.app.keys.bullPrefix,
      });
      const counts = await queue.getJobCounts();
      total += Object.values(counts).reduce((a, b) => a + b, 0);
      await queue.close();
    }
    return total;
  }

  async function jobRecords(): Promise<string[]> {
    return (await scanKeys(redis, `${prefix}:job:*`)).map((k) => k.slice(`${prefix}:job:`.length));
  }

  it("creates exactly one job for 200 concurrent duplicates, over every protocol", async () => {
    const jobsBefore = await jobRecords();
    const idemBefore = await scanKeys(redis, `${prefix}:idem:*`);
    const clients = protocols.map((p) => reportClient(p, t.url));
    const request = {
      idempotencyKey: "concurrent-200",
      userId: "u1",
      reportType: ReportType.MONTHLY,
      filters: { region: "eu", days: 30 },
    };
    const answers = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        (clients[i % clients.length] as ReportClient).submitReport(request),
      ),
    );

    const jobIds = new Set(answers.map((a) => a.jobId));
    expect(jobIds.size).toBe(1);
    const [jobId] = [...jobIds] as [string];
    expect(answers.filter((a) => !a.deduplicated)).toHaveLength(1);
    expect(answers.filter((a) => a.deduplicated)).toHaveLength(199);
    for (const a of answers) {
      expect(a.job?.id).toBe(jobId);
      expect(a.statusUrl).toContain(encodeURIComponent(jobId));
    }

    // One job record, one BullMQ job, one idempotency record, one QUEUED event.
    const newJobs = (await jobRecords()).filter((id) => !jobsBefore.includes(id));
    expect(newJobs).toEqual([jobId]);
    expect((await bullJobIds()).filter((id) => id === jobId)).toHaveLength(1);
    expect(await bullJobIds()).toHaveLength((await jobRecords()).length);
    expect(await bullJobCount()).toBe((await jobRecords()).length);
    const newIdem = (await scanKeys(redis, `${prefix}:idem:*`)).filter(
      (k) => !idemBefore.includes(k),
    );
    expect(newIdem).toHaveLength(1);
    const entries = await redis.xrange(`${prefix}:events:${jobId}`, "-", "+");
    expect(entries.map(([id, fields]) => decodeEvent(id, fields).type)).toEqual(["queued"]);
  });

  it("returns ALREADY_EXISTS for the same key with a different request", async () => {
    const base = {
      idempotencyKey: "changed-request",
      userId: "u1",
      reportType: ReportType.CUSTOM,
      filters: { days: 7, metrics: ["orders"] },
    };
    const first = await client.submitReport(base);
    expect(first.deduplicated).toBe(false);
    const jobsAfterFirst = await jobRecords();

    const variants: SubmitReportRequestInit[] = [
      { ...base, filters: { days: 8, metrics: ["orders"] } },
      { ...base, filters: {} },
      { ...base, userId: "u2" },
      { ...base, reportType: ReportType.WEEKLY },
    ];
    for (const v of variants) {
      const err = await connectErrorOf(client.submitReport(v));
      expect(err.code, JSON.stringify(v)).toBe(Code.AlreadyExists);
      expect(err.rawMessage).toContain("idempotency key");
      expect(err.rawMessage).not.toContain(first.jobId);
    }
    expect(await jobRecords()).toEqual(jobsAfterFirst);

    // The original request still gets the original job, also with its filters' keys reordered.
    const again = await client.submitReport({ ...base, filters: { metrics: ["orders"], days: 7 } });
    expect(again).toMatchObject({ jobId: first.jobId, deduplicated: true });
  });

  it("gives a different key a different job", async () => {
    const request = { userId: "u1", reportType: ReportType.WEEKLY };
    const a = await client.submitReport({ ...request, idempotencyKey: "key-a" });
    const b = await client.submitReport({ ...request, idempotencyKey: "key-b" });
    expect(a.deduplicated).toBe(false);
    expect(b.deduplicated).toBe(false);
    expect(b.jobId).not.toBe(a.jobId);
  });

  it("creates a new job each time when there is no key", async () => {
    const request = { userId: "u1", reportType: ReportType.WEEKLY };
    const answers = await Promise.all(
      Array.from({ length: 5 }, () => client.submitReport(request)),
    );
    expect(new Set(answers.map((a) => a.jobId)).size).toBe(5);
    expect(answers.every((a) => !a.deduplicated)).toBe(true);
  });

  it("treats the Idempotency-Key header like the field", async () => {
    const request = { userId: "u1", reportType: ReportType.WEEKLY };
    const viaHeader = await client.submitReport(request, {
      headers: { "idempotency-key": "header-key" },
    });
    expect(viaHeader.deduplicated).toBe(false);
    const viaField = await client.submitReport({ ...request, idempotencyKey: "header-key" });
    expect(viaField).toMatchObject({ jobId: viaHeader.jobId, deduplicated: true });

    // Field first, header second, over another protocol.
    const json = reportClient("connect-json", t.url);
    const fieldFirst = await json.submitReport({ ...request, idempotencyKey: "field-key" });
    const headerSecond = await json.submitReport(request, {
      headers: { "idempotency-key": "field-key" },
    });
    expect(headerSecond).toMatchObject({ jobId: fieldFirst.jobId, deduplicated: true });

    // The field wins over the header.
    const both = await client.submitReport(
      { ...request, idempotencyKey: "field-key" },
      { headers: { "idempotency-key": "header-key" } },
    );
    expect(both).toMatchObject({ jobId: fieldFirst.jobId, deduplicated: true });

    // Header conflicts are ALREADY_EXISTS too.
    const err = await connectErrorOf(
      client.submitReport(
        { ...request, userId: "someone-else" },
        { headers: { "idempotency-key": "header-key" } },
      ),
    );
    expect(err.code).toBe(Code.AlreadyExists);
  });

  it("deduplicates plain HTTP POST /v1/reports with the Idempotency-Key header", async () => {
    const post = (body: unknown) =>
      fetch(`${t.url}/v1/reports`, {
        method: "POST",
        headers: { "content-type": "application/json", "idempotency-key": "curl-key" },
        body: JSON.stringify(body),
      });
    const first = await post({ userId: "u1", reportType: "weekly" });
    expect(first.status).toBe(202);
    const a = (await first.json()) as { jobId: string; deduplicated: boolean };
    expect(a.deduplicated).toBe(false);
    const second = await post({ userId: "u1", reportType: "REPORT_TYPE_WEEKLY" });
    expect(second.status).toBe(202);
    expect(await second.json()).toMatchObject({ jobId: a.jobId, deduplicated: true });
    // And the RPC sees the same job under the same key.
    const rpc = await client.submitReport({
      userId: "u1",
      reportType: ReportType.WEEKLY,
      idempotencyKey: "curl-key",
    });
    expect(rpc).toMatchObject({ jobId: a.jobId, deduplicated: true });
    // Another payload under the key: 422 over plain HTTP (IETF Idempotency-Key draft).
    const conflict = await post({ userId: "u1", reportType: "monthly" });
    expect(conflict.status).toBe(422);
  });

  it("never derives the job id from the key", async () => {
    const key = "derivable-key-123";
    const { jobId } = await client.submitReport({
      userId: "u1",
      reportType: ReportType.WEEKLY,
      idempotencyKey: key,
    });
    const sha = createHash("sha256").update(key).digest();
    const forms = [
      key,
      Buffer.from(key).toString("base64"),
      Buffer.from(key).toString("base64url"),
      Buffer.from(key).toString("hex"),
      sha.toString("hex"),
      sha.toString("base64"),
      sha.toString("base64url"),
      sha.toString("base64url").slice(0, 32),
      sha.toString("base64url").slice(0, 22),
      sha.toString("hex").slice(0, 32),
      createHash("sha1").update(key).digest("hex"),
      createHash("md5").update(key).digest("hex"),
    ];
    for (const f of forms) {
      expect(jobId).not.toBe(f);
      expect(jobId.includes(f), `job id contains ${f}`).toBe(false);
      expect(f.includes(jobId), `${f} contains the job id`).toBe(false);
    }
    // The same key elsewhere (another deployment: another prefix) gives another id.
    const other = await startTestApp({}, { mode: "api" });
    try {
      const elsewhere = await reportClient("grpc", other.url).submitReport({
        userId: "u1",
        reportType: ReportType.WEEKLY,
        idempotencyKey: key,
      });
      expect(elsewhere.deduplicated).toBe(false);
      expect(elsewhere.jobId).not.toBe(jobId);
    } finally {
      await other.close();
    }
  });

  it("keeps the idempotency record while its job lives, not in clear text", async () => {
    const before = await scanKeys(redis, `${prefix}:idem:*`);
    const key = "ttl-key-clear-text";
    const submittedAt = Date.now();
    const first = await client.submitReport({
      userId: "u1",
      reportType: ReportType.WEEKLY,
      idempotencyKey: key,
    });
    const added = (await scanKeys(redis, `${prefix}:idem:*`)).filter((k) => !before.includes(k));
    expect(added).toHaveLength(1);
    const recordKey = added[0] as string;
    expect(recordKey).not.toContain(key);
    // No expiry while the job is live (it is queued: nothing runs here); the
    // record remembers how long it lives at least once the job ends.
    expect(await redis.pttl(recordKey)).toBe(-1);
    const until = Number(await redis.hget(recordKey, "until"));
    expect(until).toBeGreaterThanOrEqual(submittedAt + ttlSeconds * 1000);
    expect(until).toBeLessThanOrEqual(Date.now() + ttlSeconds * 1000);

    // A duplicate neither adds a record nor changes the first one.
    const dup = await client.submitReport({
      userId: "u1",
      reportType: ReportType.WEEKLY,
      idempotencyKey: key,
    });
    expect(dup).toMatchObject({ jobId: first.jobId, deduplicated: true });
    expect((await scanKeys(redis, `${prefix}:idem:*`)).filter((k) => !before.includes(k))).toEqual(
      added,
    );
    expect(await redis.pttl(recordKey)).toBe(-1);
    expect(Number(await redis.hget(recordKey, "until"))).toBe(until);
  });
});

describe("the idempotency record's lifetime", () => {
  const apps: TestApp[] = [];
  let redis: Redis;
  /**
   * A generator that fails for good for users named "bad-*" while `failing`
   * is set; otherwise it waits for `hold` (open unless a test closes it) and succeeds.
   */
  let failing = true;
  let hold = Promise.resolve();
  afterEach(async () => {
    // Reset, so a test that failed with `hold` closed does not stall the next.
    failing = true;
    hold = Promise.resolve();
    for (const app of apps.splice(0)) await app.close();
  });
  afterAll(() => {
    redis?.disconnect();
  });
  const generator: ReportGenerator = {
    async generate(input) {
      if (input.userId.startsWith("bad-") && failing) throw new PermanentReportError("bad filters");
      await hold;
      return csvOutput;
    },
  };
  async function start(env: Record<string, string>, mode: "api" | "all" = "all") {
    const t = await startTestApp(env, { mode, generators: { weekly: generator } });
    apps.push(t);
    redis ??= new Redis(t.config.redis.url);
    return { t, client: reportClient("grpc", t.url) };
  }

  const idemKey = (t: TestApp, key: string) => t.app.keys.idempotency("default", digest(key));

  it("outlives IDEMPOTENCY_TTL while its job waits: the same key never makes a second job", async () => {
    // API only: nothing runs the job, as with a far run_at or a long backlog.
    const { t, client } = await start({ IDEMPOTENCY_TTL_SECONDS: "1" }, "api");
    const request = {
      userId: "u1",
      reportType: ReportType.WEEKLY,
      idempotencyKey: "waits-long",
      runAt: timestampFromMs(Date.now() + 3600_000),
    };
    // A key set with the same TTL at the same moment: once it is gone, so is IDEMPOTENCY_TTL.
    const probe = `${t.config.redis.prefix}:probe`;
    await redis.set(probe, "1", "PX", 1000);
    const first = await client.submitReport(request);
    await waitFor(async () => (await redis.exists(probe)) === 0, { what: "the TTL to pass" });

    const again = await client.submitReport(request);
    expect(again).toMatchObject({ jobId: first.jobId, deduplicated: true });
    expect(await redis.pttl(idemKey(t, "waits-long"))).toBe(-1);
    expect((await client.listJobs({})).jobs.map((j) => j.id)).toEqual([first.jobId]);
  });

  it("expires with its job's retention when the job ends, and persists again on RetryJob", async () => {
    const { t, client } = await start({
      IDEMPOTENCY_TTL_SECONDS: "1",
      RETENTION_SUCCEEDED_SECONDS: "600",
      RETENTION_FAILED_SECONDS: "1200",
    });
    const ok = await client.submitReport({
      userId: "good-1",
      reportType: ReportType.WEEKLY,
      idempotencyKey: "ends-ok",
    });
    await waitForState(client, ok.jobId, JobState.SUCCEEDED);
    const okTtl = await redis.pttl(idemKey(t, "ends-ok"));
    const okRecordTtl = await redis.pttl(t.app.keys.job(ok.jobId));
    expect(okTtl).toBeGreaterThan(590_000);
    expect(okTtl).toBeLessThanOrEqual(600_000);
    // At least as long as the job itself (give or take the reads between).
    expect(okTtl).toBeGreaterThanOrEqual(okRecordTtl - 1000);

    const bad = await client.submitReport({
      userId: "bad-1",
      reportType: ReportType.WEEKLY,
      idempotencyKey: "ends-failed",
    });
    await waitForState(client, bad.jobId, JobState.FAILED);
    const badKey = idemKey(t, "ends-failed");
    expect(await redis.pttl(badKey)).toBeGreaterThan(1_190_000);

    // Live again: no expiry until it ends again.
    failing = false;
    const gate = deferred();
    hold = gate.promise;
    const retried = await client.retryJob({ jobId: bad.jobId });
    expect(retried.job?.state).toBe(JobState.QUEUED);
    await waitForState(client, bad.jobId, JobState.RUNNING);
    expect(await redis.pttl(badKey)).toBe(-1);
    gate.resolve();
    await waitForState(client, bad.jobId, JobState.SUCCEEDED);
    const rerunTtl = await redis.pttl(badKey);
    expect(rerunTtl).toBeGreaterThan(590_000);
    expect(rerunTtl).toBeLessThanOrEqual(600_000);
  });

  it("keeps IDEMPOTENCY_TTL from the submit when that is longer than the job's retention", async () => {
    const { t, client } = await start({
      IDEMPOTENCY_TTL_SECONDS: "3600",
      RETENTION_SUCCEEDED_SECONDS: "5",
    });
    const { jobId } = await client.submitReport({
      userId: "good-3",
      reportType: ReportType.WEEKLY,
      idempotencyKey: "short-job",
    });
    await waitForState(client, jobId, JobState.SUCCEEDED);
    expect(await redis.pttl(t.app.keys.job(jobId))).toBeLessThanOrEqual(5000);
    expect(await redis.pttl(idemKey(t, "short-job"))).toBeGreaterThan(3590_000);
  });
});

describe("createSubmitter()", () => {
  let redis: Redis;
  let queues: Record<DomainReportType, Queue>;

  beforeAll(() => {
    redis = new Redis(inject("redisUrl"), { maxRetriesPerRequest: 1 });
  });
  afterAll(async () => {
    for (const q of Object.values(queues ?? {})) await q.close();
    redis?.disconnect();
  });

  // The API has one tenant for now ("default"), so per-tenant keys are checked here, below it.
  it("keeps idempotency keys per tenant", async () => {
    const keys = createKeys(testPrefix());
    queues = Object.fromEntries(
      reportTypes.map((type) => [
        type,
        new Queue(queueNameFor(type), { connection: redis, prefix: keys.bullPrefix }),
      ]),
    ) as Record<DomainReportType, Queue>;
    const submitter = createSubmitter({
      redis,
      queues,
      keys,
      settings: testSubmitterSettings({ attempts: 5 }),
    });
    const input = {
      idempotencyKey: "shared-key",
      userId: "u1",
      reportType: "weekly" as const,
      filters: {},
      priority: "normal" as const,
    };
    const acme = await submitter.submit({ ...input, tenant: "acme" });
    const globex = await submitter.submit({ ...input, tenant: "globex" });
    expect(acme.deduplicated).toBe(false);
    expect(globex.deduplicated).toBe(false);
    expect(globex.job.id).not.toBe(acme.job.id);
    expect(globex.job.tenant).toBe("globex");

    const acmeAgain = await submitter.submit({ ...input, tenant: "acme" });
    expect(acmeAgain).toMatchObject({
      deduplicated: true,
      job: { id: acme.job.id, tenant: "acme" },
    });
    const globexAgain = await submitter.submit({ ...input, tenant: "globex" });
    expect(globexAgain).toMatchObject({ deduplicated: true, job: { id: globex.job.id } });
  });
});
