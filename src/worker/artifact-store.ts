/**
 * Where finished reports are kept: files under ARTIFACT_DIR, one folder per
 * job. Writes are atomic (temp file, then rename), so a re-run overwrites and
 * a reader never sees half a file. The API serves the same folder.
 */
import { randomBytes } from "node:crypto";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { artifactFile, artifactFolder, artifactPath } from "../domain/artifact-paths.js";
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
      const folder = artifactFolder(dir, jobId);
      if (folder === undefined) return;
      await rm(folder, { recursive: true, force: true });
    },
  };
}
