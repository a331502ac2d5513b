/**
 * The service's contract, as tests that run against any Redis layout: a
 * single Redis with or without queue shards, or a Redis Cluster. Each test
 * starts its own apps (own prefix) from `target.env()`: two API instances
 * (each with its own connections and event hub, as two API processes have)
 * and a worker, so a watch, cancel or retry goes through another instance
 * than the submit.
 */
import { Code } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { type JobEvent, JobEventType, JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { shardTagOf } from "../../src/queue/keys.js";
import { keySlot } from "../../src/queue/shard-tags.js";
import type { ReportGenerator } from "../../src/worker/generator.js";
import { PermanentReportError } from "../../src/worker/generator.js";
import { reportClient } from "./clients.js";
import { csvOutput, scripted } from "./generators.js";
import { errorOf, waitForState } from "./rpc.js";
import { startTestApp, type TestApp } from "./test-app.js";
import { waitFor } from "./wait-for.js";

/** Where the suite runs. */
export interface ContractTarget {
  /** Shown in the describe() title. */
  name: string;
  /** Environment for every app: REDIS_CLUSTER_NODES, QUEUE_SHARDS, ... */
  env(): Record<string, string>;
  /** QUEUE_SHARDS of `env()`. */
  shards: number;
  /** Whether `env()` names a Redis Cluster. */
  cluster: boolean;
  /** Every key matching `pattern` (on a cluster, over every master). */
  scan(pattern: string): Promise<string[]>;
}

/** Registers the contract tests for `target`. */
export function describeContract(target: ContractTarget): void {
  describe(`the service's contract on ${target.name}`, () => {
    const apps: TestApp[] = [];
    afterEach(async () => {
      await Promise.all(apps.splice(0).map((a) => a.close()));
    });

    const start = async (
      mode: "api" | "worker" | "all",
      env: Record<string, string>,
      generators?: Partial<Record<"weekly" | "monthly" | "custom", ReportGenerator>>,
    ) => {
      const app = await startTestApp({ ...target.env(), ...env }, { mode, generators });
      apps.push(app);
      return app;
    };

    /** Two API instances and one worker on one prefix. */
    const deployment = async (
      env: Record<string, string> = {},
      generators?: Partial<Record<"weekly" | "monthly" | "custom", ReportGenerator>>,
    ) => {
      const a = await start("api", env);
      const shared = { ...env, REDIS_PREFIX: a.config.redis.prefix };
      const b = await start("api", shared);
      const w = await start("worker", shared, generators);
      return {
        a: reportClient("grpc", a.url),
        b: reportClient("connect-json", b.url),
        prefix: a.config.redis.prefix,
        worker: w,
      };
    };

    const tagged = target.cluster || target.shards > 1;

    it("accepts 200 concurrent duplicates as one job, in one shard, and refuses the key for another request", async () => {
      const { a, b } = await deployment();
      const submits = Array.from({ length: 200 }, (_, i) =>
        (i % 2 === 0 ? a : b).submitReport({
          idempotencyKey: "dup-200",
          userId: "u-dup",
          reportType: ReportType.WEEKLY,
        }),
      );
      const answers = await Promise.all(submits);
      const ids = new Set(answers.map((r) => r.jobId));
      expect(ids.size).toBe(1);
      expect(answers.filter((r) => !r.deduplicated)).toHaveLength(1);
      const [jobId] = [...ids] as [string];
      if (tagged) expect(shardTagOf(jobId)).toMatch(/^s[a-z0-9]+$/);
      else expect(shardTagOf(jobId)).toBeUndefined();
      const conflict = await errorOf(
        a.submitReport({
          idempotencyKey: "dup-200",
          userId: "u-dup",
          reportType: ReportType.MONTHLY,
        }),
      );
      expect(conflict?.code).toBe(Code.AlreadyExists);
    });

    it.runIf(tagged)(
      "keeps every key of a job in one slot, and every key in one of the shards' slots",
      async () => {
        const { a, b, prefix } = await deployment();
        const { jobId } = await a.submitReport({ userId: "u-slot", reportType: ReportType.WEEKLY });
        await waitForState(b, jobId, JobState.SUCCEEDED);
        const keys = await target.scan(`${prefix}:*${jobId}*`);
        // Record, event stream, BullMQ's job hash at least.
        expect(keys.length).toBeGreaterThanOrEqual(3);
        expect(new Set(keys.map((k) => keySlot(k))).size).toBe(1);
        // Every key of the deployment is in one of its shards' slots.
        const all = await target.scan(`${prefix}:*`);
        const tagged = all.filter((k) => k.startsWith(`${prefix}:{`));
        expect(new Set(tagged.map((k) => keySlot(k))).size).toBeLessThanOrEqual(target.shards);
        // Untagged: only, on a single Redis, the BullMQ queues of jobs from
        // before sharding, which workers keep draining.
        const untagged = all.filter((k) => !k.startsWith(`${prefix}:{`));
        if (target.cluster) expect(untagged).toEqual([]);
        else for (const k of untagged) expect(k).toMatch(new RegExp(`^${prefix}:bull:`));
      },
    );

    it("streams a job's events to a watcher on another API instance, in order, and resumes after any event", async () => {
      const { a, b } = await deployment();
      const { jobId } = await a.submitReport({ userId: "u-watch", reportType: ReportType.WEEKLY });
      const seen: JobEvent[] = [];
      for await (const r of b.watchJob({ jobId })) if (r.event) seen.push(r.event);
      expect(seen[0]?.type).toBe(JobEventType.QUEUED);
      expect(seen.at(-1)?.type).toBe(JobEventType.SUCCEEDED);
      // Stream ids strictly increase: each event once, in order.
      const ids = seen.map((e) => e.id);
      expect(new Set(ids).size).toBe(ids.length);
      // A resume from each event on the other instance gives exactly the rest.
      for (const [i, e] of seen.entries()) {
        const rest: string[] = [];
        for await (const r of a.watchJob({ jobId, afterEventId: e.id }))
          if (r.event) rest.push(r.event.id);
        expect(rest).toEqual(ids.slice(i + 1));
        if (i >= 2) break;
      }
    });

    it("cancels a running job through another API instance than the one that took it", async () => {
      const gate = scripted(
        (_input, _progress, signal) =>
          new Promise((_, reject) => {
            signal.addEventListener("abort", () => reject(signal.reason), { once: true });
          }),
      );
      const { a, b } = await deployment({}, { weekly: gate });
      const { jobId } = await a.submitReport({ userId: "u-cancel", reportType: ReportType.WEEKLY });
      await waitForState(a, jobId, JobState.RUNNING);
      await b.cancelJob({ jobId });
      const job = await waitForState(a, jobId, JobState.CANCELLED);
      expect(job.state).toBe(JobState.CANCELLED);
    });

    it("re-runs a FAILED job with RetryJob", async () => {
      let failNext = true;
      const flaky = scripted(async () => {
        if (failNext) {
          failNext = false;
          throw new PermanentReportError("bad on the first run");
        }
        return csvOutput;
      });
      const { a, b } = await deployment({}, { weekly: flaky });
      const { jobId } = await a.submitReport({ userId: "u-retry", reportType: ReportType.WEEKLY });
      await waitForState(b, jobId, JobState.FAILED);
      const { job } = await b.retryJob({ jobId });
      expect(job?.state).toBe(JobState.QUEUED);
      await waitForState(a, jobId, JobState.SUCCEEDED);
    });

    it("lists a tenant's jobs of every shard newest first, each once, over stable pages", async () => {
      const api = await start("api", {});
      const client = reportClient("grpc", api.url);
      const made: string[] = [];
      for (let i = 0; i < 23; i++) {
        const { jobId } = await client.submitReport({
          userId: "u-list",
          reportType: ReportType.WEEKLY,
          ...(i % 3 === 0 ? { idempotencyKey: `list-${i}` } : {}),
        });
        made.push(jobId);
      }
      const listed: { id: string; at: bigint }[] = [];
      let pageToken = "";
      let pages = 0;
      do {
        const page = await client.listJobs({ userId: "u-list", pageSize: 5, pageToken });
        expect(page.jobs.length).toBeLessThanOrEqual(5);
        for (const j of page.jobs) listed.push({ id: j.id, at: j.createdAt?.seconds ?? 0n });
        // A job submitted while paging lands before the cursor: no page shifts.
        if (pages === 1) {
          await client.submitReport({ userId: "u-list", reportType: ReportType.WEEKLY });
        }
        pageToken = page.nextPageToken;
        pages++;
      } while (pageToken !== "" && pages < 50);
      expect(listed.map((j) => j.id).sort()).toEqual([...made].sort());
      const full = await client.listJobs({ userId: "u-list", pageSize: 100 });
      const order = full.jobs.map((j) => j.id);
      // Newest first across shards: the first of 24 is the one submitted while paging.
      expect(order).toHaveLength(24);
      expect(order.slice(1)).toEqual(listed.map((j) => j.id));
      for (let i = 1; i < full.jobs.length; i++) {
        const prev = full.jobs[i - 1]?.createdAt;
        const cur = full.jobs[i]?.createdAt;
        const p = Number(prev?.seconds) * 1000 + (prev?.nanos ?? 0) / 1e6;
        const c = Number(cur?.seconds) * 1000 + (cur?.nanos ?? 0) / 1e6;
        expect(p).toBeGreaterThanOrEqual(c);
      }
    });

    it("bounds a tenant's backlog (TENANT_MAX_BACKLOG, split over the shards) with RESOURCE_EXHAUSTED", async () => {
      const bound = 2 * target.shards;
      const api = await start("api", { TENANT_MAX_BACKLOG: String(bound) });
      const client = reportClient("grpc", api.url);
      let accepted = 0;
      let refusal: Awaited<ReturnType<typeof errorOf>>;
      for (let i = 0; i < bound + 5 && refusal === undefined; i++) {
        refusal = await errorOf(
          client.submitReport({ userId: "u-backlog", reportType: ReportType.WEEKLY }),
        );
        if (refusal === undefined) accepted++;
      }
      expect(refusal?.code).toBe(Code.ResourceExhausted);
      // Keyless submits go round the shards: each takes its share, exactly.
      expect(accepted).toBe(bound);
    });

    it("limits a tenant's submit rate (TENANT_SUBMIT_RATE, split over the shards) with RESOURCE_EXHAUSTED", async () => {
      const burst = 2 * target.shards;
      const api = await start("api", {
        TENANT_SUBMIT_RATE: "0.5",
        TENANT_SUBMIT_BURST: String(burst),
      });
      const client = reportClient("grpc", api.url);
      let accepted = 0;
      let refusal: Awaited<ReturnType<typeof errorOf>>;
      for (let i = 0; i < burst + 5 && refusal === undefined; i++) {
        refusal = await errorOf(
          client.submitReport({ userId: "u-rate", reportType: ReportType.WEEKLY }),
        );
        if (refusal === undefined) accepted++;
      }
      expect(refusal?.code).toBe(Code.ResourceExhausted);
      expect(accepted).toBe(burst);
    });

    it("removes a finished job's keys and index entries once its retention passes, in every shard", async () => {
      const { a, prefix } = await deployment({
        RETENTION_SUCCEEDED_SECONDS: "1",
        IDEMPOTENCY_TTL_SECONDS: "1",
        RETENTION_SWEEP_MS: "200",
      });
      const ids: string[] = [];
      for (let i = 0; i < Math.max(2, target.shards); i++) {
        const { jobId } = await a.submitReport({
          userId: "u-ret",
          reportType: ReportType.WEEKLY,
          idempotencyKey: `ret-${i}`,
        });
        ids.push(jobId);
      }
      for (const id of ids) await waitForState(a, id, JobState.SUCCEEDED);
      await waitFor(
        async () => {
          for (const id of ids) {
            if ((await target.scan(`${prefix}:*${id}*`)).length > 0) return false;
          }
          if ((await a.listJobs({ userId: "u-ret" })).jobs.length > 0) return false;
          // The tenant and user indexes go too (emptied sets vanish); ListJobs
          // drops what it meets, the janitor's next sweep the rest.
          return (await target.scan(`${prefix}:*idx:*`)).length === 0;
        },
        { timeoutMs: 20_000, intervalMs: 200, what: "the finished jobs to expire everywhere" },
      );
      for (const id of ids) {
        expect((await errorOf(a.getJob({ jobId: id })))?.code).toBe(Code.NotFound);
      }
    });
  });
}
