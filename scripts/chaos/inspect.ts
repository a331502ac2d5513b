/**
 * What the chaos run reads from Redis directly, beside the API: a job's
 * record and whole event log (the authority the watchers are compared with),
 * the job records of every idempotency key, whether a live job is still in
 * BullMQ's hands, and what is left of the run's jobs after their retention.
 */
import { Redis } from "ioredis";
import type { JobEventView, JobView } from "../../src/domain/job.js";
import { decodeEvent } from "../../src/events/event-codec.js";
import { decodeRecord, recordField } from "../../src/queue/job-record.js";
import { createKeys, type Keys, queueNameFor } from "../../src/queue/keys.js";

/** A job as Redis holds it. */
export interface StoredJob {
  record: JobView | undefined;
  events: JobEventView[];
}

/** Read access to the run's Redis. */
export interface Inspector {
  readonly keys: Keys;
  /** The record and log of `id`; retried through Redis faults until `timeoutMs`. */
  job(id: string, timeoutMs?: number): Promise<StoredJob>;
  /** Every job record now in Redis: id, and the tenant and key digest of keyed ones. */
  records(): Promise<{ id: string; idemKey?: string }[]>;
  /** Where BullMQ holds a live job: "waiting", "delayed", "prioritized", "active" (locked), or undefined. */
  bullHolds(job: JobView): Promise<string | undefined>;
  /**
   * What Redis still holds of `ids` (and of any job at all): key names that
   * name a job, and members of the run's sets, lists and sorted sets. Jobs
   * in `exclude` (still live) are not looked for.
   */
  leftovers(ids: ReadonlySet<string>, exclude: ReadonlySet<string>): Promise<string[]>;
  close(): Promise<void>;
}

/** Retries `fn` while Redis is down or frozen, until `timeoutMs`. */
export async function retrying<T>(fn: () => Promise<T>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** Creates an inspector for `prefix` on `url`. */
export function createInspector(url: string, prefix: string): Inspector {
  const keys = createKeys(prefix);
  const redis = new Redis(url, {
    maxRetriesPerRequest: 1,
    enableOfflineQueue: true,
    commandTimeout: 3000,
    retryStrategy: () => 200,
  });
  redis.on("error", () => undefined);

  const scan = async (pattern: string): Promise<string[]> => {
    const out: string[] = [];
    let cursor = "0";
    do {
      const [next, batch] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1000);
      cursor = next;
      out.push(...batch);
    } while (cursor !== "0");
    return out;
  };

  return {
    keys,
    job: (id, timeoutMs = 20_000) =>
      retrying(async () => {
        const [rec, log] = (await redis
          .multi()
          .hgetall(keys.job(id))
          .xrange(keys.events(id), "-", "+")
          .exec()) as [
          [Error | null, Record<string, string>],
          [Error | null, [string, string[]][]],
        ];
        if (rec[0] !== null) throw rec[0];
        if (log[0] !== null) throw log[0];
        return {
          record: decodeRecord(rec[1]),
          events: log[1].map(([eid, fields]) => decodeEvent(eid, fields)),
        };
      }, timeoutMs),

    records: () =>
      retrying(async () => {
        const names = (await scan(`${prefix}:job:*`)).filter(
          (k) => !k.includes(":", prefix.length + 5),
        );
        const out: { id: string; idemKey?: string }[] = [];
        for (const name of names) {
          const [id, tenant, idem] = await redis.hmget(
            name,
            recordField.id,
            recordField.tenant,
            recordField.idempotencyKeyDigest,
          );
          if (id === null || id === undefined) continue;
          out.push(idem ? { id, idemKey: `${tenant}/${idem}` } : { id });
        }
        return out;
      }, 30_000),

    bullHolds: (job) =>
      retrying(async () => {
        const q = `${keys.bullPrefix}:${queueNameFor(job.reportType)}`;
        const [wait, paused, delayed, prioritized, active, lock] = await redis
          .multi()
          .lpos(`${q}:wait`, job.id)
          .lpos(`${q}:paused`, job.id)
          .zscore(`${q}:delayed`, job.id)
          .zscore(`${q}:prioritized`, job.id)
          .lpos(`${q}:active`, job.id)
          .exists(keys.bullJobLock(job.reportType, job.id))
          .exec()
          .then((r) => (r ?? []).map(([, v]) => v));
        if (wait !== null || paused !== null) return "waiting";
        if (delayed !== null) return "delayed";
        if (prioritized !== null) return "prioritized";
        if (active !== null && lock === 1) return "active";
        return undefined;
      }, 20_000),

    leftovers: (ids, exclude) =>
      retrying(async () => {
        const found: string[] = [];
        // Any job's id (acknowledged or not): 128 random bits in base64url (queue/submitter.ts).
        const isJob = (s: string) =>
          !exclude.has(s) && (ids.has(s) || /^[A-Za-z0-9_-]{22}$/.test(s));
        for (const name of await scan(`${prefix}:*`)) {
          // Keys of a job: its record, log and idempotency record, BullMQ's job hash and lock.
          const parts = name.slice(prefix.length + 1).split(":");
          if (parts.some((p) => exclude.has(p))) continue;
          if (
            name.startsWith(`${prefix}:job:`) ||
            name.startsWith(`${prefix}:events:`) ||
            name.startsWith(`${prefix}:idem:`) ||
            parts.some(isJob)
          ) {
            found.push(name);
            continue;
          }
          const type = await redis.type(name);
          let members: string[] = [];
          if (type === "zset") members = await redis.zrange(name, 0, -1);
          else if (type === "set") members = await redis.smembers(name);
          else if (type === "list") members = await redis.lrange(name, 0, -1);
          // BullMQ's queue event stream (<queue>:events, capped) and its
          // queue-level hashes (meta, metrics) hold no job of their own.
          const held = members.filter(isJob);
          if (held.length > 0) found.push(`${name} (${held.length} members)`);
        }
        return found;
      }, 60_000),

    async close() {
      redis.disconnect();
    },
  };
}
