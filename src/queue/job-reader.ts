/** Reads job records: one HGETALL per job, independent of the queue's length. */

import { Command } from "ioredis";
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

/**
 * HGETALL whose reply stays the flat [field, value, ...] array of UTF-8
 * strings. ioredis's own turns it into an object by dynamic keys (a
 * dictionary-mode object after a dozen fields, with an `in` check per
 * field), which cost GetJob about as much as decoding the strings;
 * decodeRecord fills an object of the record's shape from the array.
 */
class FlatHgetall extends Command {
  override transformReply(result: Buffer | Buffer[]): string | string[] | Buffer | Buffer[] {
    if (!Array.isArray(result)) return super.transformReply(result);
    const out = new Array<string>(result.length);
    for (let i = 0; i < result.length; i++) out[i] = (result[i] as Buffer).toString();
    return out;
  }
}

/** Creates a reader over a command connection. */
export function createJobReader(deps: { redis: RedisClient; keys: Keys }): JobReader {
  const { redis, keys } = deps;
  return {
    async get(jobId, signal) {
      throwIfAborted(signal);
      const command = new FlatHgetall("hgetall", [keys.job(jobId)], { replyEncoding: "utf8" });
      redis.sendCommand(command);
      return decodeRecord((await command.promise) as string[]);
    },
  };
}
