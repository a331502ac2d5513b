/**
 * Where finished reports are kept: files under ARTIFACT_DIR, one folder per
 * job, and in it one file per attempt that wrote a report, named by the
 * attempt's tag (domain/artifact-paths.ts; reports stored before sit in a
 * folder per attempt). The API serves the same folder.
 *
 * An attempt writes its report under its own name and publishes it in two
 * steps: here, the file is written under the attempt's own name (a fresh,
 * unguessable name that nothing reads yet), then it, the job's folder and
 * (when the job's folder is new) the deployment's folder are fsynced; then
 * the attempt's SUCCEEDED transition, guarded by its lock and fencing token,
 * points the job record at it. So a reader never sees half a file (nobody
 * reads it before the record names it) and what the record names survives a
 * crash, without a temporary file and a rename. An attempt whose transition
 * is refused (it lost its lock) removes its own file and nothing else: the
 * report another attempt published stays. Files of attempts that died
 * before cleaning up (half-written ones included) are removed once the job
 * has ended (`removeLeftovers`, run by the janitor).
 *
 * Cost. A report is a few KB: creating the job's folder and writing the file
 * are synchronous calls (page cache only), which costs less CPU than a
 * thread-pool round trip per call; only the fsyncs, which wait for the disk,
 * go to the thread pool, all at once. A new inode is the dearest of these
 * (on ext4 under load, more than the fsyncs), so a report makes two: the
 * job's folder and the file. Files above `syncWriteMaxBytes` are written
 * asynchronously, so a large report never blocks the event loop.
 */
import { closeSync, fsync, mkdirSync, openSync, writeFileSync } from "node:fs";
import { open, readdir, rm } from "node:fs/promises";
import path from "node:path";
import {
  artifactFolder,
  artifactPath,
  attemptEntry,
  attemptFile,
} from "../domain/artifact-paths.js";
import type { ReportArtifact } from "../domain/job.js";
import { randomText } from "./random-text.js";

/** Stores report files. */
export interface ArtifactStore {
  /**
   * Writes attempt `attemptTag`'s report of `jobId` under the attempt's own
   * name (fsync of the file, of the job's folder and, when that is new, of
   * the deployment's) and returns what the SUCCEEDED transition publishes.
   * Nothing else of the job is touched.
   */
  put(
    jobId: string,
    attemptTag: string,
    fileName: string,
    contentType: string,
    content: string | Uint8Array,
  ): Promise<ReportArtifact>;
  /** Removes one attempt's file (or folder) that it did not publish; no error when there is none. */
  discard(jobId: string, attemptTag: string): Promise<void>;
  /** Removes all of a job's files; no error when there are none. */
  remove(jobId: string): Promise<void>;
  /** The entries of a job's folder (attempts' files or folders, and files stored before them); [] when none. */
  entries(jobId: string): Promise<string[]>;
  /**
   * Removes `names`, entries of a finished job's folder that its record does
   * not point at (listed by `entries` before the record was read, so none
   * can belong to an attempt that could still publish).
   */
  removeEntries(jobId: string, names: readonly string[]): Promise<void>;
}

/** A fresh tag for an attempt's files: its number and a random part (a re-run after a stall has the same number). */
export function newAttemptTag(attempt: number): string {
  return `${attempt}-${randomText(6, "hex")}`;
}

/** Creates a store rooted at `dir`. */
export function createArtifactStore(dir: string): ArtifactStore {
  // Every new job's folder is an entry of `dir`: concurrent attempts share its fsyncs.
  const syncFolder = coalesceSyncs(syncFolderOnce);
  return {
    async put(jobId, attemptTag, fileName, contentType, content) {
      const file = attemptFile(dir, jobId, fileName, attemptTag);
      const jobFolder = artifactFolder(dir, jobId);
      if (file === undefined || jobFolder === undefined) {
        throw new Error(`unsafe artifact name ${JSON.stringify(`${attemptTag}/${fileName}`)}`);
      }
      const created = makeJobFolder(jobFolder);
      const sizeBytes =
        typeof content === "string" ? Buffer.byteLength(content) : content.byteLength;
      // The file, its entry and (for a new job) the job folder's entry are
      // durable before the record points at them: the fsyncs run side by side.
      const folders = created ? [jobFolder, dir] : [jobFolder];
      if (sizeBytes <= syncWriteMaxBytes) {
        const fd = openSync(file, "wx");
        try {
          writeFileSync(fd, content);
          await settleAll([fsyncFd(fd), ...folders.map(syncFolder)]);
        } finally {
          closeSync(fd);
        }
      } else {
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
      // A file, or for a report stored before, a folder.
      const entry = attemptEntry(dir, jobId, attemptTag);
      if (entry === undefined) return;
      await rm(entry, { recursive: true, force: true });
    },
    async remove(jobId) {
      const folder = artifactFolder(dir, jobId);
      if (folder === undefined) return;
      await rm(folder, { recursive: true, force: true });
    },
    async entries(jobId) {
      const folder = artifactFolder(dir, jobId);
      if (folder === undefined) return [];
      return readdir(folder).catch(() => []);
    },
    async removeEntries(jobId, names) {
      const folder = artifactFolder(dir, jobId);
      if (folder === undefined) return;
      // Names come from readdir, so they are plain entries; anything else is refused.
      const plain = names.filter(
        (name) => name !== "" && name !== "." && name !== ".." && !name.includes(path.sep),
      );
      await Promise.all(
        plain.map((name) => rm(path.join(folder, name), { recursive: true, force: true })),
      );
    },
  };
}

/**
 * Makes the job's folder unless it exists (an earlier attempt's): one mkdir
 * call (a recursive one would cost more only when the deployment's folder is
 * missing too: its first report). Whether it was created.
 */
function makeJobFolder(jobFolder: string): boolean {
  try {
    mkdirSync(jobFolder);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EEXIST") return false;
    if (code !== "ENOENT") throw err;
    mkdirSync(jobFolder, { recursive: true });
    return true;
  }
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
 * flight, the deployment folder (in which every new job makes its folder) is
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
