/**
 * Where finished reports are kept: files under ARTIFACT_DIR, one folder per
 * job. Writes are atomic (temp file, then rename), so a re-run overwrites and
 * a reader never sees half a file. The API serves the same folder.
 */
import { randomBytes } from "node:crypto";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import type { ReportArtifact } from "../domain/job.js";

/** Stores report files. */
export interface ArtifactStore {
  put(
    jobId: string,
    fileName: string,
    contentType: string,
    content: string | Uint8Array,
  ): Promise<ReportArtifact>;
  /** Removes a job's files; no error when there are none. */
  remove(jobId: string): Promise<void>;
}

const safeName = /^[A-Za-z0-9_.-]{1,128}$/;

/** The download path the API serves for a job's file. */
export function artifactPath(jobId: string, fileName: string): string {
  return `/v1/artifacts/${encodeURIComponent(jobId)}/${encodeURIComponent(fileName)}`;
}

/** Resolves a job's file on disk; undefined for names that could escape the folder. */
export function artifactFile(dir: string, jobId: string, fileName: string): string | undefined {
  if (!safeName.test(jobId) || !safeName.test(fileName) || fileName.startsWith("."))
    return undefined;
  return path.join(dir, jobId, fileName);
}

/** Creates a store rooted at `dir`. */
export function createArtifactStore(dir: string): ArtifactStore {
  return {
    async put(jobId, fileName, contentType, content) {
      const file = artifactFile(dir, jobId, fileName);
      if (file === undefined) throw new Error(`unsafe artifact name ${JSON.stringify(fileName)}`);
      await mkdir(path.dirname(file), { recursive: true });
      const tmp = `${file}.${randomBytes(6).toString("hex")}.tmp`;
      await writeFile(tmp, content);
      await rename(tmp, file);
      const sizeBytes =
        typeof content === "string" ? Buffer.byteLength(content) : content.byteLength;
      return { downloadPath: artifactPath(jobId, fileName), contentType, sizeBytes };
    },
    async remove(jobId) {
      if (!safeName.test(jobId)) return;
      await rm(path.join(dir, jobId), { recursive: true, force: true });
    },
  };
}
