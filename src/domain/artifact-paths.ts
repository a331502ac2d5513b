/**
 * Where a job's report file lives: the URL path the API serves it at and the
 * file on disk. Shared by the worker (which writes) and the API (which
 * reads); names that could escape their folder are refused.
 *
 * On disk, each deployment (REDIS_PREFIX) has a folder of its own under
 * ARTIFACT_DIR, `@<prefix>`, holding one folder per job, so deployments that
 * share an ARTIFACT_DIR (and a Redis) never sweep each other's reports. The
 * `@` cannot begin a job id, and janitors of versions before these folders
 * delete only names shaped like a job id, so they leave the folders alone.
 * Reports written before (ARTIFACT_DIR/<job id>/) are still served from
 * there until their deployment's janitor adopts them into its folder.
 */
import path from "node:path";

const safeName = /^[A-Za-z0-9_.-]{1,128}$/;

/** The download path the API serves for a job's file. */
export function artifactPath(jobId: string, fileName: string): string {
  return `/v1/artifacts/${encodeURIComponent(jobId)}/${encodeURIComponent(fileName)}`;
}

/** The folder of deployment `prefix` (REDIS_PREFIX) under ARTIFACT_DIR `artifactDir`. */
export function deploymentArtifactDir(artifactDir: string, prefix: string): string {
  return path.join(artifactDir, `@${prefix}`);
}

/**
 * Where reports were kept before deployments had folders of their own:
 * ARTIFACT_DIR itself, the parent of a deployment's folder.
 */
export function legacyArtifactDir(deploymentDir: string): string {
  return path.dirname(deploymentDir);
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
