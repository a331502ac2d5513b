/** Reads job records: one HGETALL per job, independent of the queue's length. */
import type { Redis } from "ioredis";
import type { JobView } from "../domain/job.js";
import { decodeRecord } from "./job-record.js";
import type { Keys } from "./keys.js";

/** Reads jobs by id. */
export interface JobReader {
  /** The job, or undefined when unknown or expired. */
  get(jobId: string): Promise<JobView | undefined>;
}

/** Creates a reader over a command connection. */
export function createJobReader(deps: { redis: Redis; keys: Keys }): JobReader {
  const { redis, keys } = deps;
  return {
    async get(jobId) {
      return decodeRecord(await redis.hgetall(keys.job(jobId)));
    },
  };
}
