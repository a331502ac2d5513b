/** Acting on a test app's Redis as another worker would: its keys, a job's record, a transition applier. */
import type { Redis } from "ioredis";
import { pino } from "pino";
import type { JobView } from "../../src/domain/job.js";
import { createJobReader } from "../../src/queue/job-reader.js";
import { createKeys, type Keys } from "../../src/queue/keys.js";
import {
  createTransitionApplier,
  type TransitionApplier,
} from "../../src/queue/transition-applier.js";
import type { TestApp } from "./test-app.js";

/** What a test needs to write `jobId`'s transitions on `redis` (the app's Redis) behind its worker's back. */
export async function asAnotherWorker(
  app: TestApp,
  redis: Redis,
  jobId: string,
): Promise<{ keys: Keys; job: JobView; transitions: TransitionApplier }> {
  const keys = createKeys(app.config.redis.prefix);
  const job = await createJobReader({ redis, keys }).get(jobId);
  if (job === undefined) throw new Error("job record missing");
  const transitions = createTransitionApplier({
    redis,
    keys,
    settings: { eventStreamMaxLen: 1000, succeededMs: 60_000, failedMs: 60_000 },
    logger: pino({ level: "silent" }),
  });
  return { keys, job, transitions };
}
