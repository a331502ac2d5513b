/**
 * buildAddCall (the submit path's BullMQ add call, built without a Job)
 * sends byte for byte what BullMQ itself sends for the same job: the script,
 * its keys and its arguments as captureAdd captures them from Job.addJob.
 * Every kind of job we add is covered (standard, prioritized, delayed; with
 * and without run_at, priority, deadline, trace metadata), so a BullMQ
 * upgrade that changes the format of its add call fails here.
 */
import { Job, type JobsOptions, Queue } from "bullmq";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { type JobPriority, type JobView, reportTypes } from "../../src/domain/job.js";
import { buildAddCall, captureAdd } from "../../src/queue/bullmq-scripts.js";
import { queueNameFor } from "../../src/queue/keys.js";
import { bullJobSpec } from "../../src/queue/submitter.js";
import { testPrefix } from "../helpers/test-app.js";

const settings = {
  worker: { retryBackoffMs: 1500 },
  retention: { succeededMs: 86_400_000, failedMs: 7 * 86_400_000 + 1 },
};

/** The call as comparable bytes: every argument as a Buffer. */
function bytes(call: { script: string; keys: string[]; args: (string | Buffer)[] }) {
  return {
    script: call.script,
    keys: call.keys,
    args: call.args.map((a) => (typeof a === "string" ? Buffer.from(a) : Buffer.from(a))),
  };
}

describe("buildAddCall", () => {
  let redis: Redis;
  const queues: Queue[] = [];

  beforeAll(() => {
    redis = new Redis(inject("redisUrl"));
  });
  afterAll(async () => {
    for (const q of queues) await q.close();
    redis.disconnect();
  });

  async function expectSame(
    queue: Queue,
    id: string,
    name: string,
    data: unknown,
    opts: JobsOptions & { timestamp: number },
  ) {
    const ours = buildAddCall(queue, { id, name, data, opts });
    const bullmq = await captureAdd(new Job(queue, name, data, opts, id));
    expect(bytes(ours)).toEqual(bytes(bullmq));
    return ours.script;
  }

  it("matches BullMQ's own call for every kind of job the submitter adds", async () => {
    const prefix = testPrefix();
    const now = 1_764_680_000_123;
    const scripts = new Set<string>();
    for (const type of reportTypes) {
      const queue = new Queue(queueNameFor(type), { connection: redis, prefix: `${prefix}:bull` });
      queues.push(queue);
      for (const priority of ["high", "normal", "low"] as JobPriority[]) {
        for (const runAt of [undefined, now - 5, now, now + 1, now + 3_600_000]) {
          for (const deadline of [undefined, now + 86_400_000]) {
            for (const metadata of [
              undefined,
              "",
              '{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}',
            ]) {
              const view: JobView = {
                id: "Jx9_-aZ09abcdefghijklm",
                tenant: "tenant-ü",
                userId: 'user "1"',
                reportType: type,
                state: "queued",
                progress: 0,
                phase: "",
                attemptsMade: 0,
                maxAttempts: 3,
                failureReason: "",
                createdAt: now,
                filters: {
                  region: "eu",
                  nested: { n: 1.5, list: [1, "two", null, true] },
                  emoji: "📈",
                },
                priority,
                runAt,
                deadline,
              };
              const spec = bullJobSpec(view, settings, now);
              const opts = {
                ...spec.opts,
                timestamp: now,
                telemetry: { metadata: metadata as string },
              };
              scripts.add(await expectSame(queue, view.id, spec.name, spec.data, opts));
            }
          }
        }
      }
    }
    expect([...scripts].sort()).toEqual(["addDelayedJob", "addPrioritizedJob"]);
  });

  it("matches BullMQ's call for plain options: no priority, no telemetry, a numeric backoff", async () => {
    const queue = new Queue("report-weekly", { connection: redis, prefix: `${testPrefix()}:bull` });
    queues.push(queue);
    const now = 1_764_680_000_000;
    const cases: Array<JobsOptions & { timestamp: number }> = [
      { timestamp: now },
      { timestamp: now, attempts: 5, backoff: 2000 },
      { timestamp: now, priority: 0, delay: 0, removeOnComplete: true, removeOnFail: 100 },
      { timestamp: now, telemetry: { metadata: "m", omitContext: true }, attempts: 2 },
      { timestamp: now, delay: 10, keepLogs: 3, backoff: { type: "exponential", delay: 5 } },
      { attempts: undefined, timestamp: now, priority: 7 },
    ];
    const scripts = new Set<string>();
    for (const opts of cases)
      scripts.add(await expectSame(queue, "job-1", "weekly", { a: 1 }, opts));
    scripts.add(await expectSame(queue, "job-2", "weekly", undefined, { timestamp: now }));
    expect([...scripts].sort()).toEqual(["addDelayedJob", "addPrioritizedJob", "addStandardJob"]);
  });
});
