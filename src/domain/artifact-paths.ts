/**
 * Where a job's report file lives: the URL path the API serves it at and the
 * file under ARTIFACT_DIR. Shared by the worker (which writes) and the API
 * (which reads); names that could escape the folder are refused.
 */
import path from "node:path";

const safeName = /^[A-Za-z0-9_.-]{1,128}$/;

/** The download path the API serves for a job's file. */
export function artifactPath(jobId: string, fileName: string): string {
  return `/v1/artifacts/${encodeURIComponent(jobId)}/${encodeURIComponent(fileName)}`;
}

/** A job's folder under `dir`; undefined for an id that could escape it. */
export function artifactFolder(dir: string, jobId: string): string | undefined {
  return safeName.test(jobId) && !jobId.startsWith(".") ? path.join(dir, jobId) : undefined;
}

/** A job's file under `dir`; undefined for names that could escape the folder. */
export function artifactFile(dir: string, jobId: string, fileName: string): string | undefined {
  const folder = artifactFolder(dir, jobId);
  if (folder === undefined || !safeName.test(fileName) || fileName.startsWith("."))
    return undefined;
  return path.join(folder, fileName);
}
