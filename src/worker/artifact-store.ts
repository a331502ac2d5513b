/**
 * Where finished reports are kept: files under ARTIFACT_DIR, one folder per
 * job, and in it one folder per attempt that wrote a report
 * (domain/artifact-paths.ts). The API serves the same folder.
 *
 * An attempt writes its report under its own name and publishes it in two
 * steps: here, a temporary file is written, fsynced and renamed into the
 * attempt's folder (a reader never sees half a file, and the rename survives
 * a crash); then the attempt's SUCCEEDED transition, guarded by its lock and
 * fencing token, points the job record at it. An attempt whose transition is
 * refused (it lost its lock) removes its own folder and nothing else: the
 * report another attempt published stays. Folders of attempts that died
 * before cleaning up are removed once the job has ended
 * (`removeLeftovers`, run by the janitor).
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, readdir, rename, rm } from "node:fs/promises";
import path from "node:path";
import {
  artifactFile,
  artifactFolder,
  artifactPath,
  attemptFolder,
} from "../domain/artifact-paths.js";
import type { ReportArtifact } from "../domain/job.js";

/** Stores report files. */
export interface ArtifactStore {
  /**
   * Writes attempt `attemptTag`'s report of `jobId` into the attempt's own
   * folder (temporary file, fsync, rename, fsync of the folders) and returns
   * what the SUCCEEDED transition publishes. Nothing else of the job is touched.
   */
  put(
    jobId: string,
    attemptTag: string,
    fileName: string,
    contentType: string,
    content: string | Uint8Array,
  ): Promise<ReportArtifact>;
  /** Removes one attempt's files (those it did not publish); no error when there are none. */
  discard(jobId: string, attemptTag: string): Promise<void>;
  /** Removes all of a job's files; no error when there are none. */
  remove(jobId: string): Promise<void>;
  /** The entries of a job's folder (attempt folders, and files stored before them); [] when none. */
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
  return `${attempt}-${randomBytes(6).toString("hex")}`;
}

/** Creates a store rooted at `dir`. */
export function createArtifactStore(dir: string): ArtifactStore {
  return {
    async put(jobId, attemptTag, fileName, contentType, content) {
      const file = artifactFile(dir, jobId, fileName, attemptTag);
      const jobFolder = artifactFolder(dir, jobId);
      if (file === undefined || jobFolder === undefined) {
        throw new Error(`unsafe artifact name ${JSON.stringify(`${attemptTag}/${fileName}`)}`);
      }
      const folder = path.dirname(file);
      // The first folder mkdir created, if any: the job's (new job) or the attempt's.
      const created = await mkdir(folder, { recursive: true });
      // Dot-prefixed: never a name the API serves.
      const tmp = path.join(folder, `.${fileName}.tmp`);
      const handle = await open(tmp, "w");
      try {
        await handle.writeFile(content);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(tmp, file);
      // The rename, and the entries of the folders just created, are durable
      // before the record points at them.
      await syncFolder(folder);
      if (created !== undefined) await syncFolder(jobFolder);
      if (created !== undefined && created !== folder) await syncFolder(dir);
      const sizeBytes =
        typeof content === "string" ? Buffer.byteLength(content) : content.byteLength;
      return { downloadPath: artifactPath(jobId, fileName, attemptTag), contentType, sizeBytes };
    },
    async discard(jobId, attemptTag) {
      const folder = attemptFolder(dir, jobId, attemptTag);
      if (folder === undefined) return;
      await rm(folder, { recursive: true, force: true });
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

/** fsyncs a folder, so entries created or renamed in it survive a crash (where the platform allows). */
async function syncFolder(folder: string): Promise<void> {
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(folder, "r");
    await handle.sync();
  } catch (err) {
    // Some platforms and file systems cannot fsync a folder; the rename still happened.
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "EISDIR" && code !== "EINVAL" && code !== "EPERM" && code !== "EBADF") throw err;
  } finally {
    await handle?.close();
  }
}
