/**
 * Where finished reports are kept: files under ARTIFACT_DIR, in the
 * deployment's folder, one file per attempt that wrote a report, named by
 * the job and the attempt's tag (`<job id>@<attempt tag>`,
 * domain/artifact-paths.ts; reports stored before sit in a folder per job).
 * The API serves the same folder.
 *
 * An attempt writes its report under its own name and publishes it in two
 * steps: here, the file is written under the attempt's own name (a fresh,
 * unguessable name that nothing reads yet), then it and the deployment's
 * folder (which holds its entry) are fsynced; then the attempt's SUCCEEDED
 * transition, guarded by its lock and fencing token, points the job record
 * at it. So a reader never sees half a file (nobody reads it before the
 * record names it) and what the record names survives a crash, without a
 * temporary file and a rename. An attempt whose transition is refused (it
 * lost its lock) removes its own file and nothing else: the report another
 * attempt published stays. Files of attempts that died before cleaning up
 * (half-written ones included) are removed once the job has ended
 * (`removeLeftovers`, run by the janitor).
 *
 * Cost. A report is a few KB: writing and closing the file are synchronous
 * calls (page cache only), which costs less CPU than a thread-pool round
 * trip per call; the create (which can wait for the journal: `openNew`) and
 * the fsyncs, which wait for the disk, go to the thread pool. A new inode
 * is the dearest of these (on ext4 under load, more than the fsyncs), so a
 * report makes one, its file, in a folder that exists (a folder per job
 * made two, and one more fsync). Files above `syncWriteMaxBytes` are
 * written asynchronously, so a large report never blocks the event loop.
 */
import { closeSync, fsync, mkdirSync, open as openFile, openSync, writeFileSync } from "node:fs";
import { open, readdir, rm } from "node:fs/promises";
import path from "node:path";
import {
  artifactFolder,
  artifactPath,
  attemptEntry,
  parseReportName,
  reportFile,
} from "../domain/artifact-paths.js";
import type { ReportArtifact } from "../domain/job.js";
import { randomText } from "./random-text.js";

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
}

/** A fresh tag for an attempt's files: its number and a random part (a re-run after a stall has the same number). */
export function newAttemptTag(attempt: number): string {
  return `${attempt}-${randomText(6, "hex")}`;
}

/** Creates a store rooted at `dir`, the deployment's folder. */
export function createArtifactStore(dir: string): ArtifactStore {
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
      const file = reportFile(dir, jobId, attemptTag, fileName);
      if (file === undefined) {
        throw new Error(`unsafe artifact name ${JSON.stringify(`${attemptTag}/${fileName}`)}`);
      }
      const sizeBytes =
        typeof content === "string" ? Buffer.byteLength(content) : content.byteLength;
      // The file and its entry (and, for the deployment's first report, the
      // deployment folder's entry) are durable before the record points at
      // them: the fsyncs run side by side.
      if (sizeBytes <= syncWriteMaxBytes) {
        const [fd, created] = await openNew(file, dir);
        const folders = created ? [dir, path.dirname(dir)] : [dir];
        try {
          writeFileSync(fd, content);
          await settleAll([fsyncFd(fd), ...folders.map(syncFolder)]);
        } finally {
          closeSync(fd);
        }
      } else {
        const created = makeFolder(dir);
        const folders = created ? [dir, path.dirname(dir)] : [dir];
        const handle = await open(file, "wx");
        try {
          await handle.writeFile(content);
          await settleAll([handle.sync(), ...folders.map(syncFolder)]);
        } finally {
          await handle.close();
        }
      }
      return { downloadPath: artifactPath(jobId, fileName, attemptTag), contentType, sizeBytes };
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

/** fsync(2) of an open file, on the thread pool. */
function fsyncFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fsync(fd, (err) => (err ? reject(err) : resolve()));
  });
}

/**
 * Shares fsyncs of one folder between concurrent callers: a caller needs an
 * fsync that starts after its call (its entry was made before it). With
 * none of the folder running, a caller's starts at once; else the callers of
 * one turn of the event loop share one that starts at the end of that turn
 * (setImmediate), whether or not the running one has ended. At 50 jobs in
 * flight, the deployment folder (in which every report makes its file) is
 * then synced about once per turn instead of once per job.
 *
 * An earlier version started the next fsync only once the running one had
 * ended: at a steady 200 jobs/s about half the reports waited for the tail
 * of another report's fsync and then a whole fsync of their own (p90 3.6 ms
 * beyond their file's fsync on a loaded disk, against 0.01 ms for the
 * others). Started at once, an fsync waits for the same journal commit as
 * its file's; started after that commit (on ext4) it flushes the disk's
 * cache once more, so a lone caller does not wait for the end of the turn.
 */
export function coalesceSyncs(
  syncOnce: (folder: string) => Promise<void>,
): (folder: string) => Promise<void> {
  const running = new Map<string, number>();
  // Per folder: the sync the callers of this turn share, not started yet.
  const next = new Map<string, Promise<void>>();
  const start = (folder: string): Promise<void> => {
    running.set(folder, (running.get(folder) ?? 0) + 1);
    return syncOnce(folder).finally(() => {
      const left = (running.get(folder) ?? 1) - 1;
      if (left === 0) running.delete(folder);
      else running.set(folder, left);
    });
  };
  return (folder) => {
    const shared = next.get(folder);
    if (shared !== undefined) return shared;
    if (!running.has(folder)) return start(folder);
    const sync = new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
      next.delete(folder);
      return start(folder);
    });
    next.set(folder, sync);
    return sync;
  };
}

/** fsyncs a folder, so entries created in it survive a crash (where the platform allows). */
async function syncFolderOnce(folder: string): Promise<void> {
  let fd: number | undefined;
  try {
    fd = openSync(folder, "r");
    await fsyncFd(fd);
  } catch (err) {
    // Some platforms and file systems cannot fsync a folder; the entry is still there.
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "EISDIR" && code !== "EINVAL" && code !== "EPERM" && code !== "EBADF") throw err;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
