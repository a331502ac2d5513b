/** Reads job records: one HGETALL per job, independent of the queue's length. */

import type { JobView } from "../domain/job.js";
import { type CallerSignal, throwIfAborted } from "./caller-signal.js";
import type { RedisClient } from "./connections.js";
import { decodeRecord } from "./job-record.js";
import type { Keys } from "./keys.js";

/** Reads jobs by id. */
export interface JobReader {
  /**
   * The job, or undefined when unknown or expired. `signal`: the caller's
   * (caller-signal.ts); nothing is read once it has aborted.
   */
  get(jobId: string, signal?: CallerSignal): Promise<JobView | undefined>;
}

/** Creates a reader over a command connection. */
export function createJobReader(deps: { redis: RedisClient; keys: Keys }): JobReader {
  const { redis, keys } = deps;
  return {
    async get(jobId, signal) {
      throwIfAborted(signal);
      return decodeRecord(await redis.hgetall(keys.job(jobId)));
    },
  };
}
