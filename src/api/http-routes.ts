/**
 * Plain HTTP for people with curl, next to Connect's own JSON: submit with
 * `POST /v1/reports`, read with `GET /v1/jobs/{id}`, download finished
 * reports, and liveness/readiness probes. Submit and read call the very same
 * ReportService handlers as the RPCs, so validation, errors and idempotency
 * are identical.
 */
import { stat } from "node:fs/promises";
import { fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  createHandlerContext,
  type ServiceImpl,
} from "@connectrpc/connect";
import { codeToHttpStatus, errorToJson } from "@connectrpc/connect/protocol-connect";
import type { Logger } from "pino";
import { JobSchema } from "../../gen/reports/v1/job_pb.js";
import {
  ReportService,
  SubmitReportRequestSchema,
} from "../../gen/reports/v1/report_service_pb.js";
import { artifactFile, artifactPath } from "../domain/artifact-paths.js";
import { IdempotencyConflictError } from "../domain/errors.js";
import type { JobView } from "../domain/job.js";
import type { JobReader } from "../queue/job-reader.js";
import { callerTenant } from "./auth.js";
import type { DownloadSigner } from "./download-signer.js";
import { toConnectError } from "./error-map.js";
import type { NodeRequest, NodeResponse } from "./node-types.js";
import type { Readiness } from "./readiness.js";
import { getTenantJob } from "./report-service.js";
import { sendFile } from "./send-file.js";
import { serveJobEvents } from "./sse-route.js";
import { createStaticAssets } from "./static-assets.js";

type Req = NodeRequest;
type Res = NodeResponse;

/** What the plain routes need. */
export interface HttpRoutesDeps {
  service: Partial<ServiceImpl<typeof ReportService>>;
  jobs: JobReader;
  artifactDir: string;
  /**
   * The request's context values with its authenticated tenant (kTenant).
   * Throws ConnectError UNAUTHENTICATED; every `/v1/*` route calls it first
   * (downloads only when they carry no signature).
   */
  contextValues: (req: Req) => ContextValues;
  /** Checks the signature of download URLs (and signs the ones handed out). */
  signer?: DownloadSigner;
  /** The API's readiness, shared with gRPC health: `/readyz` answers it. */
  readiness: Readiness;
  shutdownSignal: AbortSignal;
  logger: Logger;
  /** The built browser app served at `/` (default web/dist). */
  webDir?: string;
}

/** Largest POST /v1/reports body; larger ones get 413 before they are read whole. */
export const maxBodyBytes = 64 * 1024;
/** The sentence of an idempotency key reused with another request. */
const payloadMismatch = new IdempotencyConflictError().message;
const shortTypes: Record<string, string> = {
  weekly: "REPORT_TYPE_WEEKLY",
  monthly: "REPORT_TYPE_MONTHLY",
  custom: "REPORT_TYPE_CUSTOM",
};

/** Creates the fallback handler; answers 404 for anything it does not know. */
export function createHttpRoutes(deps: HttpRoutesDeps): (req: Req, res: Res) => void {
  const { service, jobs, logger } = deps;
  const assets = createStaticAssets(deps.webDir);

  const sendJson = (
    res: Res,
    status: number,
    body: unknown,
    headers: Record<string, string> = {},
  ) => {
    const text = JSON.stringify(body);
    res.writeHead(status, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(text),
      ...headers,
    });
    res.end(text);
  };
  const sendError = (res: Res, err: unknown) => {
    if (err instanceof UnprocessableError)
      return sendJson(res, 422, errorToJson(err.cause, undefined));
    const ce = toConnectError(err, logger);
    const headers: Record<string, string> = {};
    for (const name of ["retry-after", "www-authenticate"]) {
      const value = ce.metadata.get(name);
      if (value !== null) headers[name] = value;
    }
    const status = bodyTooLarge.has(ce) ? 413 : codeToHttpStatus(ce.code);
    sendJson(res, status, errorToJson(ce, undefined), headers);
  };

  const context = (
    req: Req,
    methodName: "submitReport" | "getJob" | "watchJob",
    values: ContextValues,
  ) =>
    createHandlerContext({
      service: ReportService,
      method: ReportService.method[methodName],
      protocolName: "http",
      requestMethod: req.method ?? "GET",
      url: req.url ?? "/",
      shutdownSignal: deps.shutdownSignal,
      requestHeader: headersOf(req),
      contextValues: values,
    });

  const submit = async (req: Req, res: Res, values: ContextValues) => {
    const submitReport = service.submitReport;
    if (!submitReport) throw new ConnectError("not implemented", Code.Unimplemented);
    const body = await readJson(req);
    let request: ReturnType<typeof fromJson<typeof SubmitReportRequestSchema>>;
    try {
      const normalized =
        body !== null && typeof body === "object" && !Array.isArray(body) ? { ...body } : body;
      if (normalized !== null && typeof normalized === "object" && !Array.isArray(normalized)) {
        for (const k of ["reportType", "report_type"]) {
          const v = normalized[k];
          if (typeof v === "string" && shortTypes[v.toLowerCase()])
            normalized[k] = shortTypes[v.toLowerCase()] as string;
        }
      }
      request = fromJson(SubmitReportRequestSchema, normalized as JsonValue);
    } catch (err) {
      const detail =
        err instanceof Error ? err.message.replace(/^cannot decode [^:]*: /, "") : "malformed";
      throw new ConnectError(
        `request body is not a valid SubmitReportRequest: ${detail}`,
        Code.InvalidArgument,
      );
    }
    const ctx = context(req, "submitReport", values);
    // createHandlerContext links an abort listener to the shutdown signal;
    // only abort() removes it, so every request ends its context.
    const out = await Promise.resolve(submitReport(request, ctx))
      .catch((err: unknown) => {
        // IETF Idempotency-Key draft: a key reused with another payload is 422 here
        // (RPCs keep ALREADY_EXISTS, which is 409 in Connect's own mapping). A key
        // whose job has expired is the other ALREADY_EXISTS, and stays 409.
        const ce = toConnectError(err, logger);
        if (ce.code === Code.AlreadyExists && ce.rawMessage === payloadMismatch) {
          throw new UnprocessableError(ce);
        }
        throw ce;
      })
      .finally(() => ctx.abort());
    const jobId = String(out.jobId ?? "");
    sendJson(
      res,
      202,
      { jobId, statusUrl: out.statusUrl, deduplicated: out.deduplicated ?? false },
      { location: String(out.statusUrl ?? "") },
    );
  };

  const getJob = async (req: Req, res: Res, values: ContextValues, jobId: string) => {
    const get = service.getJob;
    if (!get) throw new ConnectError("not implemented", Code.Unimplemented);
    const ctx = context(req, "getJob", values);
    const out = await Promise.resolve(
      get({ $typeName: "reports.v1.GetJobRequest", jobId }, ctx),
    ).finally(() => ctx.abort());
    sendJson(res, 200, toJson(JobSchema, out.job as never));
  };

  // Every failure of a signed link (altered, expired, another job's or
  // file's, no such job) gets this one answer, so a link reveals nothing.
  const badLink = (res: Res) =>
    sendJson(res, 403, {
      code: "permission_denied",
      message: "download link is invalid or has expired; get a fresh one from GetJob",
    });

  /** The job of a signed download link, or undefined when the link does not verify. */
  const signedJob = async (url: URL, jobId: string, fileName: string) => {
    const signer = deps.signer;
    if (signer === undefined || artifactFile(deps.artifactDir, jobId, fileName) === undefined)
      return undefined;
    const job = await jobs.get(jobId);
    const ok = signer.verify(
      job?.tenant,
      artifactPath(jobId, fileName),
      url.searchParams.get("expires"),
      url.searchParams.get("signature"),
    );
    return ok ? job : undefined;
  };

  const download = async (req: Req, res: Res, url: URL, jobId: string, fileName: string) => {
    let job: JobView;
    if (url.searchParams.has("signature") || url.searchParams.has("expires")) {
      // A signed link stands in for the key: no Authorization needed.
      const signed = await signedJob(url, jobId, fileName);
      if (signed === undefined) return badLink(res);
      job = signed;
    } else {
      const tenant = callerTenant(deps.contextValues(req));
      job = await getTenantJob(jobs, tenant, jobId);
    }
    const file = artifactFile(deps.artifactDir, jobId, fileName);
    if (
      job.result === undefined ||
      file === undefined ||
      !job.result.downloadPath.endsWith(`/${encodeURIComponent(fileName)}`)
    ) {
      throw new ConnectError(`job ${jobId} has no report named ${fileName}`, Code.NotFound);
    }
    const info = await stat(file).catch(() => undefined);
    if (info === undefined)
      throw new ConnectError(`the report of job ${jobId} is no longer available`, Code.NotFound);
    res.writeHead(200, {
      "content-type": job.result.contentType,
      "content-length": info.size,
      "content-disposition": `attachment; filename="${fileName}"`,
      "cache-control": "private, max-age=3600",
    });
    if (req.method === "HEAD") return void res.end();
    await sendFile(res, file);
  };

  return (req, res) => {
    const url = new URL(req.url ?? "/", "http://local");
    const method = req.method ?? "GET";
    const p = url.pathname;
    const jobMatch = /^\/v1\/jobs\/([^/]+)$/.exec(p);
    const eventsMatch = /^\/v1\/jobs\/([^/]+)\/events$/.exec(p);
    const fileMatch = /^\/v1\/artifacts\/([^/]+)\/([^/]+)$/.exec(p);
    const readable = method === "GET" || method === "HEAD";
    let work: Promise<void>;
    if (fileMatch && readable) {
      work = download(
        req,
        res,
        url,
        safeDecode(fileMatch[1] as string),
        safeDecode(fileMatch[2] as string),
      );
    } else if (p.startsWith("/v1/")) {
      // Every other /v1/* route: authenticate first (before reading a body), then route.
      work = (async () => {
        const values = deps.contextValues(req);
        if (p === "/v1/reports" && method === "POST") return submit(req, res, values);
        if (jobMatch && readable)
          return getJob(req, res, values, safeDecode(jobMatch[1] as string));
        if (eventsMatch && method === "GET") {
          const jobId = safeDecode(eventsMatch[1] as string);
          const withValues = (r: Req, m: "watchJob") => context(r, m, values);
          return serveJobEvents({ service, context: withValues, logger }, req, res, jobId);
        }
        sendJson(res, 404, { code: "not_found", message: `no route for ${method} ${p}` });
      })();
    } else if (p === "/healthz") {
      work = Promise.resolve(sendJson(res, 200, { status: "ok" }));
    } else if (p === "/readyz") {
      const status = deps.readiness.status();
      work = Promise.resolve(sendJson(res, status === "ready" ? 200 : 503, { status }));
    } else if (p === "/" || p === "/index.html" || p.startsWith("/assets/")) {
      work = assets(req, res, p).then(() => undefined);
    } else {
      work = Promise.resolve(
        sendJson(res, 404, { code: "not_found", message: `no route for ${method} ${p}` }),
      );
    }
    work.catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      sendError(res, err);
    });
  };
}

/** An error the plain routes answer with 422 Unprocessable Content. */
class UnprocessableError extends Error {
  constructor(override readonly cause: ConnectError) {
    super(cause.message);
  }
}

/** decodeURIComponent that maps malformed escapes to a string no route matches (never throws). */
function safeDecode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return "%";
  }
}

function headersOf(req: Req): Headers {
  const h = new Headers();
  for (const [k, v] of Object.entries(req.headers)) {
    if (k.startsWith(":") || v === undefined) continue;
    const value = Array.isArray(v) ? v.join(", ") : v;
    // The Idempotency-Key draft sends the key as a structured-field string: "abc".
    h.set(k, k === "idempotency-key" ? value.replace(/^"(.*)"$/, "$1") : value);
  }
  return h;
}

/**
 * Errors for bodies over maxBodyBytes: HTTP 413. A set, not a subclass:
 * ConnectError's Symbol.hasInstance accepts every ConnectError as an instance of a subclass.
 */
const bodyTooLarge = new WeakSet<ConnectError>();
function tooLargeError(): ConnectError {
  const err = new ConnectError(
    `request body exceeds ${maxBodyBytes} bytes`,
    Code.ResourceExhausted,
  );
  bodyTooLarge.add(err);
  return err;
}

/**
 * Reads the body up to maxBodyBytes. Not with `for await`: leaving that loop
 * destroys the request, and on HTTP/1.1 the socket with it, before the 413
 * could be sent; here the rest is left to Node to discard.
 */
function readBody(req: Req): Promise<Buffer> {
  if (Number(req.headers["content-length"] ?? 0) > maxBodyBytes)
    return Promise.reject(tooLargeError());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = () => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBodyBytes) {
        done();
        reject(tooLargeError());
      } else chunks.push(chunk);
    };
    const onEnd = () => {
      done();
      resolve(Buffer.concat(chunks));
    };
    const onError = (err: Error) => {
      done();
      reject(err);
    };
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
  });
}

async function readJson(req: Req): Promise<JsonValue> {
  const body = await readBody(req);
  const text = body.toString("utf8");
  try {
    return JSON.parse(text) as JsonValue;
  } catch {
    throw new ConnectError("request body is not valid JSON", Code.InvalidArgument);
  }
}
