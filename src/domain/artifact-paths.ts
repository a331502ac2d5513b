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
 *
 * Each attempt writes its report under a name of its own, `<job id>@<attempt
 * tag>`, directly in the deployment's folder (served at
 * `/v1/artifacts/<job id>/<attempt tag>/<file name>`: the file name is the
 * download's, kept in the URL and the record), so two attempts of one job (a
 * stalled worker and the one that took its job over) never write the same
 * file, and the record names exactly the one that was published. A report
 * is one new inode (its file) in a folder that already exists: on ext4 each
 * new inode costs the worker more CPU than the rest of a job's file work, and
 * only the file and the deployment's folder need an fsync. The `@` cannot
 * occur in a job id or a tag, so the name splits back into both, and
 * janitors of versions before this layout, which take every entry of the
 * deployment's folder for a job's folder, skip such names as unsafe.
 *
 * Reports up to 256 KiB are not files of their own but places in a segment,
 * `@segments/s-<created ms>-<random>` in the deployment's folder, a file
 * holding many reports (worker/report-segments.ts): the job record names the
 * segment and offset, the download URL is the same. The `@` keeps janitors
 * of every earlier layout off that folder.
 *
 * Reports stored before sit in a folder per job: `<job id>/<attempt tag>`
 * (the file), before that `<job id>/<attempt tag>/<file name>`, and before
 * attempts had names `<job id>/<file name>` (served at
 * `/v1/artifacts/<job id>/<file name>`); all still work. Either way an
 * attempt's entry is its tag (or, for the oldest, the file name), which is
 * what the janitor keeps or removes.
 */
import path from "node:path";

const safeName = /^[A-Za-z0-9_.-]{1,128}$/;

/** A name that can be one path segment under ARTIFACT_DIR: no separators, no leading dot. */
function isSafe(name: string): boolean {
  return safeName.test(name) && !name.startsWith(".");
}

/** The download path the API serves for a job's file (of attempt `attemptTag`, when given). */
export function artifactPath(jobId: string, fileName: string, attemptTag?: string): string {
  const attempt = attemptTag === undefined ? "" : `/${encodeURIComponent(attemptTag)}`;
  return `/v1/artifacts/${encodeURIComponent(jobId)}${attempt}/${encodeURIComponent(fileName)}`;
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
  return isSafe(jobId) ? path.join(dir, jobId) : undefined;
}

/**
 * The entry of one attempt in the job's folder, of the layouts before
 * reports left it (its report file, or before that its folder); undefined
 * for unsafe names.
 */
export function attemptEntry(dir: string, jobId: string, attemptTag: string): string | undefined {
  const folder = artifactFolder(dir, jobId);
  return folder !== undefined && isSafe(attemptTag) ? path.join(folder, attemptTag) : undefined;
}

/**
 * Where attempt `attemptTag` writes its report (named `fileName`, when
 * given, which must be safe too): its file in the deployment's folder `dir`
 * (see the top of this file); undefined for unsafe names.
 */
export function reportFile(
  dir: string,
  jobId: string,
  attemptTag: string,
  fileName?: string,
): string | undefined {
  return reportNamesSafe(jobId, attemptTag, fileName)
    ? path.join(dir, `${jobId}${reportSeparator}${attemptTag}`)
    : undefined;
}

/**
 * Whether reportFile has a file for these names, without making its path
 * (a report that goes into a segment needs none).
 */
export function reportNamesSafe(jobId: string, attemptTag: string, fileName?: string): boolean {
  return isSafe(jobId) && isSafe(attemptTag) && (fileName === undefined || isSafe(fileName));
}

/**
 * The job id and attempt tag of an entry of the deployment's folder that is
 * a report file (`<job id>@<attempt tag>`); undefined for any other entry
 * (a job's folder of the older layouts, a stray name).
 */
export function parseReportName(name: string): { jobId: string; attemptTag: string } | undefined {
  const at = name.indexOf(reportSeparator);
  if (at < 0) return undefined;
  const jobId = name.slice(0, at);
  const attemptTag = name.slice(at + 1);
  return isSafe(jobId) && isSafe(attemptTag) ? { jobId, attemptTag } : undefined;
}

const reportSeparator = "@";

/**
 * Where attempt `attemptTag` wrote the report it names `fileName` in the
 * layout before reports left the job's folder: the attempt's entry in it;
 * undefined for unsafe names.
 */
export function attemptFile(
  dir: string,
  jobId: string,
  fileName: string,
  attemptTag: string,
): string | undefined {
  return isSafe(fileName) ? attemptEntry(dir, jobId, attemptTag) : undefined;
}

/**
 * A job's file as stored before attempts wrote their reports under their own
 * name: in the folder of attempt `attemptTag`, when given, else in the job's
 * folder; undefined for names that could escape the folder.
 */
export function artifactFile(
  dir: string,
  jobId: string,
  fileName: string,
  attemptTag?: string,
): string | undefined {
  const folder =
    attemptTag === undefined ? artifactFolder(dir, jobId) : attemptEntry(dir, jobId, attemptTag);
  return folder !== undefined && isSafe(fileName) ? path.join(folder, fileName) : undefined;
}

/**
 * The entry of the job's folder that a published download path points at:
 * the attempt's (`/v1/artifacts/<job>/<tag>/<file>`: its file, or its
 * folder) or, for files stored before attempts had names, the file itself;
 * undefined for a path of another shape.
 */
export function publishedEntry(downloadPath: string): string | undefined {
  const parts = downloadPath.split("/");
  // ["", "v1", "artifacts", job, (tag,) file]
  if (parts[1] !== "v1" || parts[2] !== "artifacts") return undefined;
  if (parts.length !== 5 && parts.length !== 6) return undefined;
  const entry = parts[4];
  if (entry === undefined) return undefined;
  try {
    const name = decodeURIComponent(entry);
    return isSafe(name) ? name : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The folder of report segments in the deployment's folder `dir`: files that
 * hold many reports each, appended by one worker process at a time
 * (worker/report-segments.ts). Its name begins with `@`, which no job id
 * can: janitors of the layouts before, which take every safe entry of the
 * deployment's folder for a job's folder (and delete it when no such job
 * exists), skip it as unsafe, and none takes it for a report file.
 */
export function segmentFolder(dir: string): string {
  return path.join(dir, segmentFolderName);
}

const segmentFolderName = "@segments";

const segmentName = /^s-([0-9]{13})-([0-9a-f]{8,32})$/;

/**
 * A new segment's name: `s-<creation time, ms, 13 digits>-<random hex>`.
 * The time is the janitor's: a segment takes no report once it is older
 * than the writers' roll age (report-segments.ts).
 */
export function newSegmentName(createdAt: number, random: string): string {
  return `s-${String(createdAt).padStart(13, "0")}-${random}`;
}

/** A segment's creation time (ms) from its name; undefined for any other name. */
export function parseSegmentName(name: string): number | undefined {
  const m = segmentName.exec(name);
  return m === null ? undefined : Number(m[1]);
}

/** A segment's file in the deployment's folder `dir`; undefined for a name no segment has. */
export function segmentFile(dir: string, name: string): string | undefined {
  return parseSegmentName(name) === undefined ? undefined : path.join(segmentFolder(dir), name);
}
