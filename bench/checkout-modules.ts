/**
 * The transition applier's modules of one checkout (a tree of this repository
 * at `root`, e.g. an export of main), loaded from its own src/, so that the
 * transition benches can run several checkouts side by side in one process.
 */
import path from "node:path";
import type { Redis } from "ioredis";
import type { JobView } from "../src/domain/job.js";
import type { encodeNewRecord } from "../src/queue/job-record.js";
import type { Keys } from "../src/queue/keys.js";

/** The modules of checkout `root` that the transition benches use. */
export async function transitionModulesOf(root: string) {
  const src = (module: string) => path.join(root, "src", module);
  const [
    { createTransitionApplier },
    { createRedisConnection },
    { createKeys },
    { encodeNewRecord },
  ] = (await Promise.all([
    import(src("queue/transition-applier.ts")),
    import(src("queue/connections.ts")),
    import(src("queue/keys.ts")),
    import(src("queue/job-record.ts")),
  ])) as [
    typeof import("../src/queue/transition-applier.js"),
    typeof import("../src/queue/connections.js"),
    typeof import("../src/queue/keys.js"),
    typeof import("../src/queue/job-record.js"),
  ];
  return { createTransitionApplier, createRedisConnection, createKeys, encodeNewRecord };
}

/**
 * Writes job `id` as the submit leaves it queued (its record and idempotency
 * record) with BullMQ's lock on it, through `admin`; the record's fields are
 * encoded by the checkout's own `encode`.
 */
export async function seedQueuedJob(
  admin: Redis,
  s: { keys: Keys; encodeNewRecord: typeof encodeNewRecord },
  id: string,
  at: number,
  lockMs: number,
): Promise<JobView> {
  const job: JobView = {
    id,
    tenant: "default",
    userId: "u1",
    reportType: "weekly",
    state: "queued",
    progress: 0,
    phase: "",
    attemptsMade: 0,
    maxAttempts: 3,
    failureReason: "",
    createdAt: at,
    filters: { region: "eu" },
    priority: "normal",
    traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    idempotencyKeyDigest: `d-${id}`,
  };
  await admin
    .multi()
    .hset(s.keys.job(id), ...s.encodeNewRecord(job, "fp"))
    .hset(s.keys.idempotency(job.tenant, `d-${id}`), "job", id, "until", String(at + 1000))
    .set(s.keys.bullJobLock(job.reportType, id), "lock", "PX", lockMs)
    .exec();
  return job;
}
