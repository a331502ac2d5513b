/**
 * `GET|HEAD /v1/artifacts/{jobId}/{attemptTag}/{fileName}` (and
 * `/v1/artifacts/{jobId}/{fileName}` for files stored before attempts had
 * names): a finished report's file, only the one the job record points at.
 * A signed link (`?expires=…&signature=…`, download-signer.ts) stands in for
 * the API key; an unsigned one needs the key of the job's tenant. Every
 * failure of a signed link gets one answer (403), so a link reveals nothing.
 * A report in a segment (a file holding many reports, worker/report-segments.ts)
 * is served from the place the record names: its offset and size.
 */
import type { Stats } from "node:fs";
import { stat } from "node:fs/promises";
import {
  artifactFile,
  artifactPath,
  attemptFile,
  legacyArtifactDir,
  reportFile,
  segmentFile,
} from "../domain/artifact-paths.js";
import { InvalidDownloadLinkError, ReportNotFoundError } from "../domain/errors.js";
import type { JobView } from "../domain/job.js";
import type { JobReader } from "../queue/job-reader.js";
import { callerTenant } from "./auth.js";
import type { DownloadSigner } from "./download-signer.js";
import type { PathParams, RouteHandler } from "./http-router.js";
import type { NodeResponse } from "./node-types.js";
import { getTenantJob } from "./report-service.js";
import { sendFile } from "./send-file.js";

/** The path parameters of both download routes (`attemptTag` only in the newer one). */
export type DownloadParams = PathParams<"/v1/artifacts/{jobId}/{fileName}"> & {
  readonly attemptTag?: string;
};

/** What downloads need. */
export interface DownloadRouteDeps {
  jobs: JobReader;
  /** The deployment's report folder (artifact-paths.ts deploymentArtifactDir). */
  artifactDir: string;
  /** Checks signed links; without it, every signed link is refused. */
  signer?: DownloadSigner;
}

/** Creates the download handler. */
export function createDownloadRoute(deps: DownloadRouteDeps): RouteHandler<DownloadParams> {
  const { jobs, artifactDir } = deps;

  /** The job of a signed download link, or undefined when the link does not verify. */
  const signedJob = async (url: URL, params: DownloadParams) => {
    const { jobId, fileName, attemptTag } = params;
    const signer = deps.signer;
    if (
      signer === undefined ||
      artifactFile(artifactDir, jobId, fileName, attemptTag) === undefined
    )
      return undefined;
    const job = await jobs.get(jobId);
    const ok = signer.verify(
      job?.tenant,
      artifactPath(jobId, fileName, attemptTag),
      url.searchParams.get("expires"),
      url.searchParams.get("signature"),
    );
    return ok ? job : undefined;
  };

  return async (request) => {
    const { req, res, url } = request;
    const { jobId, fileName, attemptTag } = request.params;
    let job: JobView;
    if (url.searchParams.has("signature") || url.searchParams.has("expires")) {
      const signed = await signedJob(url, request.params);
      if (signed === undefined) throw new InvalidDownloadLinkError();
      job = signed;
    } else {
      job = await getTenantJob(jobs, callerTenant(request.authenticate()), jobId);
    }
    // Only the published file: never another attempt's (a stalled worker's) leftovers.
    let file = artifactFile(artifactDir, jobId, fileName, attemptTag);
    if (
      job.result === undefined ||
      file === undefined ||
      job.result.downloadPath !== artifactPath(jobId, fileName, attemptTag)
    ) {
      throw new ReportNotFoundError(jobId, fileName, "not-produced");
    }
    // A report in a segment: its bytes at the place the record names, when
    // the segment still holds them.
    const segment = job.result.segment;
    if (segment !== undefined) {
      const where = segmentFile(artifactDir, segment.name);
      const length = job.result.sizeBytes;
      const held = where === undefined ? undefined : await stat(where).catch(() => undefined);
      if (where === undefined || held?.isFile() !== true || held.size < segment.offset + length) {
        throw new ReportNotFoundError(jobId, fileName, "removed");
      }
      writeHeaders(res, job.result.contentType, length, fileName);
      if (req.method === "HEAD") return void res.end();
      return await sendFile(res, where, { start: segment.offset, length });
    }
    // The attempt's report file in the deployment's folder; then, for
    // reports stored in a folder per job (artifact-paths.ts), in the
    // deployment's folder, then where reports were before deployments had
    // folders, then the first once more, as the janitor may be moving the
    // job's folder from the second meanwhile; in each, the attempt's file,
    // then as stored before: in the attempt's folder.
    const candidates = [
      ...(attemptTag === undefined ? [] : [reportFile(artifactDir, jobId, attemptTag, fileName)]),
      ...[artifactDir, legacyArtifactDir(artifactDir), artifactDir].flatMap((d) => [
        ...(attemptTag === undefined ? [] : [attemptFile(d, jobId, fileName, attemptTag)]),
        artifactFile(d, jobId, fileName, attemptTag),
      ]),
    ];
    let info: Stats | undefined;
    for (const candidate of candidates) {
      if (candidate === undefined) continue;
      info = await stat(candidate).catch(() => undefined);
      // An attempt's entry is a folder for a report stored before.
      if (info?.isFile() === true) {
        file = candidate;
        break;
      }
      info = undefined;
    }
    if (info === undefined) throw new ReportNotFoundError(jobId, fileName, "removed");
    writeHeaders(res, job.result.contentType, info.size, fileName);
    if (req.method === "HEAD") return void res.end();
    await sendFile(res, file);
  };
}

/** The headers of a download of `size` bytes, saved as `fileName`. */
function writeHeaders(res: NodeResponse, contentType: string, size: number, fileName: string) {
  res.writeHead(200, {
    "content-type": contentType,
    "content-length": size,
    "content-disposition": `attachment; filename="${fileName}"`,
    "cache-control": "private, max-age=3600",
  });
}
