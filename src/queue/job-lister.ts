/**
 * ListJobs, served from the per-tenant (and per-user) sorted sets kept by
 * SubmitReport, never by scanning the queue. Pages are ordered newest first
 * by (created ms, id) and the cursor is the last (score, id) returned, so
 * jobs added while a caller pages through appear before its cursor and never
 * shift the pages that follow. Index entries whose job expired are dropped as
 * they are met (and by the janitor).
 *
 * With queue shards each shard has its own indexes: a page reads every
 * shard's from the same cursor (in parallel) and merges them. A shard that
 * stopped early has seen everything down to its position; nothing older than
 * the newest such position can be given yet, since that shard may hold
 * unseen jobs above it. So the page is the merged jobs down to that position
 * (at most page_size), and the next cursor is the last job given, or the
 * position. One (created ms, id) position orders jobs of every shard, so the
 * token keeps the one-position form of unsharded tokens, which stay valid.
 */
import { createHash } from "node:crypto";
import { InvalidArgumentError } from "../domain/errors.js";
import type { JobState, JobView } from "../domain/job.js";
import { throwIfAborted } from "./caller-signal.js";
import type { RedisClient } from "./connections.js";
import { decodeRecord } from "./job-record.js";
import type { Keys } from "./keys.js";
import { loadLuaScript } from "./scripts/load.js";
import { digest } from "./submitter.js";

/** What to list. */
export interface ListQuery {
  tenant: string;
  userId?: string;
  states: readonly JobState[];
  pageSize: number;
  pageToken?: string;
}

/** One page. */
export interface ListPage {
  jobs: JobView[];
  nextPageToken: string;
}

/** Lists jobs. */
export interface JobLister {
  /**
   * `signal`: the caller's (caller-signal.ts); once it has aborted, nothing is read.
   * @throws InvalidArgumentError for a token that is malformed or was made for other filters.
   */
  list(query: ListQuery, signal?: AbortSignal): Promise<ListPage>;
}

const listScript = loadLuaScript("list-jobs");

interface Cursor {
  s: string;
  i: string;
  f: string;
}

/** Creates the lister over a command connection. */
export function createJobLister(deps: {
  redis: RedisClient;
  keys: Keys;
  /** Every queue shard's keys (QUEUE_SHARDS); `keys` alone by default. */
  shards?: readonly Keys[];
  scanBudget?: number;
}): JobLister {
  const { redis } = deps;
  const shards = deps.shards ?? [deps.keys];
  const budget = deps.scanBudget ?? 2000;
  return {
    async list(query, signal) {
      const filterHash = createHash("sha256")
        .update(JSON.stringify([query.userId ?? "", [...query.states].sort()]))
        .digest("base64url")
        .slice(0, 12);
      let cursor: Cursor | undefined;
      if (query.pageToken) {
        cursor = decodeCursor(query.pageToken);
        if (cursor === undefined || cursor.f !== filterHash) {
          throw new InvalidArgumentError([
            {
              field: "page_token",
              description: "is not a next_page_token of this query (filters must stay the same)",
            },
          ]);
        }
      }
      const userDigest = query.userId ? digest(query.userId) : undefined;
      throwIfAborted(signal);
      const replies = await Promise.all(
        shards.map(
          (keys) =>
            listScript.run(
              redis,
              [
                userDigest !== undefined
                  ? keys.userIndex(query.tenant, userDigest)
                  : keys.tenantIndex(query.tenant),
              ],
              [
                keys.jobPrefix,
                cursor?.s ?? "+inf",
                cursor?.i ?? "",
                query.pageSize,
                query.states.length > 0 ? `,${query.states.join(",")},` : "",
                budget,
              ],
            ) as Promise<[number, string, string, ...string[][]]>,
        ),
      );
      // The newest position a shard that did not finish stopped at: jobs
      // older than it cannot be given on this page.
      let frontier: Position | undefined;
      const found: JobView[] = [];
      for (const [done, lastScore, lastId, ...records] of replies) {
        if (done !== 1 && lastId !== "") {
          const at: Position = { score: Number(lastScore), id: lastId };
          if (frontier === undefined || newer(at, frontier)) frontier = at;
        }
        for (const r of records) {
          const job = decodeRecord(r);
          if (job !== undefined && job.tenant === query.tenant) found.push(job);
        }
      }
      const givable = found
        .filter((j) => frontier === undefined || !newer(frontier, positionOf(j)))
        .sort((a, b) => (newer(positionOf(a), positionOf(b)) ? -1 : 1));
      const jobs = givable.slice(0, query.pageSize);
      const last = jobs.at(-1);
      const next = givable.length > jobs.length && last !== undefined ? positionOf(last) : frontier;
      const nextPageToken =
        next === undefined
          ? ""
          : encodeCursor({ s: String(next.score), i: next.id, f: filterHash });
      return { jobs, nextPageToken };
    },
  };
}

/** A place in an index: (created ms, id), ordered newest first. */
interface Position {
  score: number;
  id: string;
}

const positionOf = (job: JobView): Position => ({ score: job.createdAt, id: job.id });

/** Whether `a` comes before `b` newest first (list-jobs.lua's order: score, then id, descending). */
function newer(a: Position, b: Position): boolean {
  return a.score !== b.score ? a.score > b.score : a.id > b.id;
}

function encodeCursor(c: Cursor): string {
  return Buffer.from(JSON.stringify(c)).toString("base64url");
}

function decodeCursor(token: string): Cursor | undefined {
  try {
    const c = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as Partial<Cursor>;
    if (typeof c.s !== "string" || typeof c.i !== "string" || typeof c.f !== "string")
      return undefined;
    if (!/^\d+$/.test(c.s) || !/^[A-Za-z0-9_-]{1,64}$/.test(c.i)) return undefined;
    return c as Cursor;
  } catch {
    return undefined;
  }
}
