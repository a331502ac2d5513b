/**
 * Where finished reports are kept, under ARTIFACT_DIR in the deployment's
 * folder: a report up to `syncWriteMaxBytes` is appended to this process's
 * open segment, a file holding many reports (report-segments.ts); a larger
 * one is a file of its own, named by the job and the attempt's tag
 * (`<job id>@<attempt tag>`, domain/artifact-paths.ts; reports stored
 * before sit in a folder per job). The API serves the same folder: the job
 * record names the segment and offset, or the file by the download path.
 *
 * An attempt publishes its report in two steps: here, its bytes are written
 * where nothing reads them yet (a fresh place in the segment, or a fresh,
 * unguessable file name) and made durable (fdatasync of the segment; fsync
 * of the file and of the deployment's folder, which holds its entry); then
 * the attempt's SUCCEEDED transition, guarded by its lock and fencing token,
 * points the job record at them. So a reader never sees half a report and
 * what the record names survives a crash. An attempt whose transition is
 * refused (it lost its lock) removes its own file and nothing else; its
 * bytes in a segment stay, named by no record, until the segment goes. Files
 * of attempts that died before cleaning up (half-written ones included) are
 * removed once the job has ended (`removeLeftovers`, run by the janitor);
 * segments once no record can name them (`removeExpiredSegments`).
 *
 * Cost. A new inode is the dearest part of storing a small report (on ext4
 * under load, more than the fsyncs; see docs/performance.md), so small
 * reports make none: a segment is one inode per 64 MiB or 10 minutes. A
 * report above `syncWriteMaxBytes` is written asynchronously to a file of
 * its own, so it never blocks the event loop; its create (which can wait for
 * the journal: `openNew`) and fsyncs go to the thread pool.
 */
import { closeSync, mkdirSync, open as openFile, openSync, writeFileSync } from "node:fs";
import { open, readdir, rm } from "node:fs/promises";
import path from "node:path";
import {
  artifactFolder,
  artifactPath,
  attemptEntry,
  parseReportName,
  reportFile,
  reportNamesSafe,
} from "../domain/artifact-paths.js";
import type { ReportArtifact } from "../domain/job.js";
import { coalesceSyncs, fsyncFd, syncFolder as syncFolderOnce } from "./file-syncs.js";
import { randomText } from "./random-text.js";
import {
  createSegmentWriter,
  defaultSegmentLimits,
  removeExpiredSegments,
  type SegmentLimits,
} from "./report-segments.js";

/** What the store holds of one job. */
export interface StoredJob {
  /** The attempt tags of its report files. */
  readonly tags: string[];
  /** Whether it has a folder (the layouts before reports left the job's folder), or an entry of its name. */
  readonly folder: boolean;
}

/** Stores report files. */
export interface ArtifactStore {
  /**
   * Writes attempt `attemptTag`'s report of `jobId` under the attempt's own
   * name (fsync of the file and of the deployment's folder) and returns what
   * the SUCCEEDED transition publishes. Nothing else of the job is touched.
   */
  put(
    jobId: string,
    attemptTag: string,
    fileName: string,
    contentType: string,
    content: string | Uint8Array,
  ): Promise<ReportArtifact>;
  /** Removes one attempt's file (or, stored before, its entry in the job's folder) that it did not publish; no error when there is none. */
  discard(jobId: string, attemptTag: string): Promise<void>;
  /**
   * Removes a job's folder (the layouts before) and the report files of
   * `attemptTags`; no error when there are none. A job's report files are
   * found only by listing the deployment's folder (`list`), which the
   * janitor does: those of tags not given go with its next sweep.
   */
  remove(jobId: string, attemptTags?: readonly string[]): Promise<void>;
  /** Every job with files here (one listing of the deployment's folder). */
  list(): Promise<Map<string, StoredJob>>;
  /**
   * A job's entries: its report files' attempt tags and its folder's
   * entries (attempts' files or folders, and files stored before them), from
   * `stored` (its `list` entry; listed afresh when not given); [] when none.
   */
  entries(jobId: string, stored?: StoredJob): Promise<string[]>;
  /**
   * Removes `names`, entries of a finished job (from `entries`) that its
   * record does not point at (listed before the record was read, so none
   * can belong to an attempt that could still publish).
   */
  removeEntries(jobId: string, names: readonly string[]): Promise<void>;
  /**
   * Removes the segments (report-segments.ts) whose last append was more
   * than `keepMs` ago, except this process's open one; how many went.
   */
  removeExpiredSegments(keepMs: number): Promise<number>;
  /** Seals this process's open segment (once its appends are durable). */
  close(): Promise<void>;
}

/** How a store keeps small reports. */
export interface ArtifactStoreOptions {
  /** How segments roll (report-segments.ts defaultSegmentLimits); false: every report a file of its own, as before segments. */
  segments?: SegmentLimits | false;
}

/** A fresh tag for an attempt's files: its number and a random part (a re-run after a stall has the same number). */
export function newAttemptTag(attempt: number): string {
  return `${attempt}-${randomText(6, "hex")}`;
}

/** Creates a store rooted at `dir`, the deployment's folder. */
export function createArtifactStore(
  dir: string,
  options: ArtifactStoreOptions = {},
): ArtifactStore {
  const limits = options.segments ?? defaultSegmentLimits;
  const segments = limits === false ? undefined : createSegmentWriter(dir, limits);
  // Every report is an entry of `dir`: concurrent attempts share its fsyncs.
  const syncFolder = coalesceSyncs(syncFolderOnce);
  /** Removes attempt `tag`'s file and its entry in the job's folder (layouts before). */
  const removeAttempt = async (jobId: string, tag: string) => {
    const file = reportFile(dir, jobId, tag);
    const entry = attemptEntry(dir, jobId, tag);
    await Promise.all([
      file === undefined ? undefined : rm(file, { force: true }),
      entry === undefined ? undefined : rm(entry, { recursive: true, force: true }),
    ]);
  };
  const list = async () => {
    const found = new Map<string, { tags: string[]; folder: boolean }>();
    const of = (jobId: string) => {
      let job = found.get(jobId);
      if (job === undefined) {
        job = { tags: [], folder: false };
        found.set(jobId, job);
      }
      return job;
    };
    const listed = await readdir(dir).catch(() => [] as string[]);
    for (const name of listed) {
      const report = parseReportName(name);
      if (report !== undefined) of(report.jobId).tags.push(report.attemptTag);
      // A job's folder (or a stray entry of that name, removed with it).
      else if (artifactFolder(dir, name) !== undefined) of(name).folder = true;
    }
    return found as Map<string, StoredJob>;
  };
  return {
    async put(jobId, attemptTag, fileName, contentType, content) {
      if (!reportNamesSafe(jobId, attemptTag, fileName)) {
        throw new Error(`unsafe artifact name ${JSON.stringify(`${attemptTag}/${fileName}`)}`);
      }
      const bytes = typeof content === "string" ? Buffer.from(content) : content;
      const sizeBytes = bytes.byteLength;
      const downloadPath = artifactPath(jobId, fileName, attemptTag);
      if (segments !== undefined && sizeBytes <= syncWriteMaxBytes) {
        const segment = await segments.append(bytes);
        return { downloadPath, contentType, sizeBytes, segment };
      }
      // A file of its own: its path only now (path.join normalizes it, a segment needs none).
      const file = reportFile(dir, jobId, attemptTag) as string;
      // The file and its entry (and, for the deployment's first report, the
      // deployment folder's entry) are durable before the record points at
      // them: the fsyncs run side by side.
      if (sizeBytes <= syncWriteMaxBytes) {
        const [fd, created] = await openNew(file, dir);
        const folders = created ? [dir, path.dirname(dir)] : [dir];
        try {
          writeFileSync(fd, bytes);
          await settleAll([fsyncFd(fd), ...folders.map(syncFolder)]);
        } finally {
          closeSync(fd);
        }
      } else {
        const created = makeFolder(dir);
        const folders = created ? [dir, path.dirname(dir)] : [dir];
        const handle = await open(file, "wx");
        try {
          await handle.writeFile(bytes);
          await settleAll([handle.sync(), ...folders.map(syncFolder)]);
        } finally {
          await handle.close();
        }
      }
      return { downloadPath, contentType, sizeBytes };
    },
    async discard(jobId, attemptTag) {
      await removeAttempt(jobId, attemptTag);
    },
    async remove(jobId, attemptTags = []) {
      const folder = artifactFolder(dir, jobId);
      if (folder === undefined) return;
      await Promise.all([
        rm(folder, { recursive: true, force: true }),
        ...attemptTags.map((tag) => removeAttempt(jobId, tag)),
      ]);
    },
    list,
    async entries(jobId, stored) {
      const job = stored ?? (await list()).get(jobId);
      if (job === undefined) return [];
      const folder = artifactFolder(dir, jobId);
      const inFolder =
        job.folder && folder !== undefined ? await readdir(folder).catch(() => []) : [];
      return [...job.tags, ...inFolder];
    },
    async removeEntries(jobId, names) {
      const folder = artifactFolder(dir, jobId);
      // Names come from `entries`, so they are plain names; anything else is
      // refused. In a job's folder any plain name goes (a temporary file of
      // the oldest layout, too); a report file's name is a safe tag.
      const plain = names.filter(
        (name) => name !== "" && name !== "." && name !== ".." && !name.includes(path.sep),
      );
      await Promise.all(
        plain.flatMap((name) => {
          const file = reportFile(dir, jobId, name);
          return [
            file === undefined ? undefined : rm(file, { force: true }),
            folder === undefined
              ? undefined
              : rm(path.join(folder, name), { recursive: true, force: true }),
          ];
        }),
      );
    },
    async removeExpiredSegments(keepMs) {
      const open = segments?.openName();
      return await removeExpiredSegments(
        dir,
        keepMs,
        new Set(open === undefined ? [] : [open]),
        limits === false ? defaultSegmentLimits : limits,
      );
    },
    async close() {
      await segments?.close();
    },
  };
}

/**
 * Creates `file` (it must not exist) for writing, and the folder `dir` that
 * holds it when that is missing (the deployment's first report): one open
 * call otherwise, on the thread pool. The create adds an entry to the
 * folder every report shares, whose blocks the journal is often writing
 * for another report's fsync; the kernel then makes the create wait for
 * that write. A synchronous open waited with the whole event loop: in
 * drains at concurrency 10 that cost a fifth of the throughput (see
 * docs/performance.md). The descriptor, and whether `dir` was created.
 */
function openNew(file: string, dir: string): Promise<[number, boolean]> {
  return new Promise((resolve, reject) => {
    openFile(file, "wx", (err, fd) => {
      if (err === null) return resolve([fd, false]);
      if (err.code !== "ENOENT") return reject(err);
      try {
        const created = makeFolder(dir);
        resolve([openSync(file, "wx"), created]);
      } catch (e) {
        reject(e);
      }
    });
  });
}

/** Makes folder `dir` (and its parents) unless it exists; whether it was created. */
function makeFolder(dir: string): boolean {
  return mkdirSync(dir, { recursive: true }) !== undefined;
}

/** Reports up to this size are written with synchronous calls (see the top of this file). */
export const syncWriteMaxBytes = 256 * 1024;

/**
 * Waits for every one of `calls` (so none still uses a descriptor that the
 * caller closes next), then throws the first failure, if any.
 */
async function settleAll(calls: Promise<void>[]): Promise<void> {
  for (const r of await Promise.allSettled(calls)) if (r.status === "rejected") throw r.reason;
}
