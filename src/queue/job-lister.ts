/**
 * ListJobs, served from the per-tenant (and per-user) sorted sets kept by
 * SubmitReport, never by scanning the queue. Pages are ordered newest first
 * by (created ms, id) and the cursor is the last (score, id) returned, so
 * jobs added while a caller pages through appear before its cursor and never
 * shift the pages that follow. Index entries whose job expired are dropped as
 * they are met (and by the janitor).
 */
import { createHash } from "node:crypto";
import type { Redis } from "ioredis";
import { InvalidArgumentError } from "../domain/errors.js";
import type { JobState, JobView } from "../domain/job.js";
import { throwIfAborted } from "./caller-signal.js";
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
  redis: Redis;
  keys: Keys;
  scanBudget?: number;
}): JobLister {
  const { redis, keys } = deps;
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
      const index = query.userId
        ? keys.userIndex(query.tenant, digest(query.userId))
        : keys.tenantIndex(query.tenant);
      throwIfAborted(signal);
      const reply = (await listScript.run(
        redis,
        [index],
        [
          keys.job(""),
          cursor?.s ?? "+inf",
          cursor?.i ?? "",
          query.pageSize,
          query.states.length > 0 ? `,${query.states.join(",")},` : "",
          budget,
        ],
      )) as [number, string, string, ...string[][]];
      const [done, lastScore, lastId, ...records] = reply;
      const jobs = records
        .map((r) => decodeRecord(r))
        .filter((j): j is JobView => j !== undefined && j.tenant === query.tenant);
      const nextPageToken =
        done === 1 || lastId === "" ? "" : encodeCursor({ s: lastScore, i: lastId, f: filterHash });
      return { jobs, nextPageToken };
    },
  };
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
