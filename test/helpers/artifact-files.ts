/**
 * What the artifact folder holds, for tests that check which report files
 * exist after attempts ran, lost their lock or were swept.
 */
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { Redis } from "ioredis";
import { segmentFile } from "../../src/domain/artifact-paths.js";
import { decodeRecord, recordField } from "../../src/queue/job-record.js";

/** Every file under `dir` (recursively), as sorted paths relative to it; [] when `dir` is missing. */
export async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}

/**
 * A job's report files in deployment folder `dir`: its `<job id>@<attempt
 * tag>` files and the files in its folder (the layouts before), as sorted
 * paths relative to `dir`.
 */
export async function reportFilesOf(dir: string, jobId: string): Promise<string[]> {
  return (await filesUnder(dir)).filter(
    (file) => file.startsWith(`${jobId}@`) || file.startsWith(`${jobId}${path.sep}`),
  );
}

/**
 * Moves attempt `tag`'s report of `jobId` (`<job id>@<tag>` in deployment
 * folder `dir`) to where the layouts before kept it, in the job's folder
 * `into` (by default `<dir>/<job id>`): `<tag>` (the file), or with
 * `fileName`, `<tag>/<fileName>`. Answers the file's new path.
 */
export function moveToJobFolder(
  dir: string,
  jobId: string,
  tag: string,
  fileName?: string,
  into = path.join(dir, jobId),
): string {
  const to = fileName === undefined ? path.join(into, tag) : path.join(into, tag, fileName);
  mkdirSync(path.dirname(to), { recursive: true });
  renameSync(path.join(dir, `${jobId}@${tag}`), to);
  return to;
}

/**
 * Turns the published report of job record `jobKey`, stored in a segment,
 * into what versions before segments stored: its attempt's file
 * `<job id>@<tag>` in deployment folder `dir`, named by the record without
 * a segment field (as those versions wrote it). Answers the report's bytes.
 */
export async function segmentReportToFile(
  redisUrl: string,
  jobKey: string,
  dir: string,
  jobId: string,
  tag: string,
): Promise<Buffer> {
  const redis = new Redis(redisUrl);
  try {
    const job = decodeRecord(await redis.hgetall(jobKey));
    const where = job?.result?.segment;
    const file = where === undefined ? undefined : segmentFile(dir, where.name);
    if (job?.result === undefined || where === undefined || file === undefined) {
      throw new Error(`job ${jobId}'s report is in no segment`);
    }
    const held = await readFile(file);
    const bytes = held.subarray(where.offset, where.offset + job.result.sizeBytes);
    writeFileSync(path.join(dir, `${jobId}@${tag}`), bytes);
    await redis.hdel(jobKey, recordField.resultSegment);
    return Buffer.from(bytes);
  } finally {
    redis.disconnect();
  }
}
