/**
 * `GET /v1/jobs/{id}/events`: a job's events as Server-Sent Events, so
 * `curl -N` and a browser `EventSource` can follow a job without Connect
 * framing. It runs the very same WatchJob handler as the RPC (tenant, auth,
 * validation, replay-then-live, exactly once and in order); only the framing
 * differs:
 *
 *     id: <event id: the stream cursor>
 *     event: <queued|started|progress|retrying|succeeded|failed|cancelled>
 *     data: <the JobEvent as proto JSON, one line>
 *
 * Resuming: the `Last-Event-ID` header (what EventSource sends when it
 * reconnects) or, for clients that cannot set headers, `?after=<event id>`;
 * the header wins when both are present. Quiet periods carry `: keepalive`
 * comments. The response ends after the terminal event; a resume from the
 * terminal event answers 204, which tells EventSource to stop reconnecting.
 * An error before anything was sent is an HTTP error with Connect's JSON error
 * body; an error after that (the server shutting down, say) is a final
 * `event: error` whose data is that body, so clients resume elsewhere.
 */
import { toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { errorToJson } from "@connectrpc/connect/protocol-connect";
import type { Logger } from "pino";
import { JobEventSchema, JobEventType } from "../../gen/reports/v1/job_pb.js";
import type {
  ReportService,
  WatchJobRequest,
  WatchJobResponse,
} from "../../gen/reports/v1/report_service_pb.js";
import { toConnectError } from "./error-map.js";
import type { NodeRequest, NodeResponse } from "./node-types.js";

/** What the events route needs; `context` is the plain routes' own handler-context factory. */
export interface SseRouteDeps {
  service: Partial<ServiceImpl<typeof ReportService>>;
  /** Builds the handler context (tenant, auth) exactly as the other plain routes do. */
  context: (
    req: NodeRequest,
    methodName: "watchJob",
  ) => HandlerContext & { abort(reason?: unknown): void };
  logger: Logger;
  /**
   * How long to wait for the first event before sending the headers anyway.
   * Errors found in that window (unknown job, bad cursor) get a real HTTP status.
   */
  firstEventWaitMs?: number;
}

/** The SSE `event:` name of each event type. */
const eventNames: Record<JobEventType, string> = {
  [JobEventType.UNSPECIFIED]: "unspecified",
  [JobEventType.QUEUED]: "queued",
  [JobEventType.STARTED]: "started",
  [JobEventType.PROGRESS]: "progress",
  [JobEventType.RETRYING]: "retrying",
  [JobEventType.SUCCEEDED]: "succeeded",
  [JobEventType.FAILED]: "failed",
  [JobEventType.CANCELLED]: "cancelled",
};

/** The WatchJob handler as the plain route calls it. */
type WatchImpl = (
  req: WatchJobRequest,
  ctx: HandlerContext,
) => AsyncIterable<Partial<WatchJobResponse>>;

/**
 * Serves one SSE request for `jobId`. Rejects only for errors that occur
 * before the response started (the caller answers them as JSON errors).
 */
export async function serveJobEvents(
  deps: SseRouteDeps,
  req: NodeRequest,
  res: NodeResponse,
  jobId: string,
): Promise<void> {
  const watch = deps.service.watchJob as unknown as WatchImpl | undefined;
  if (!watch) throw new ConnectError("not implemented", Code.Unimplemented);
  const url = new URL(req.url ?? "/", "http://local");
  const header = req.headers["last-event-id"];
  const afterEventId =
    (Array.isArray(header) ? header.at(-1) : header)?.trim() || url.searchParams.get("after") || "";
  const ctx = deps.context(req, "watchJob");
  // The client going away ends the handler, which releases its subscription.
  let closed = false;
  const onClose = () => {
    closed = true;
    ctx.abort();
  };
  res.once("close", onClose);
  const stream = watch({ $typeName: "reports.v1.WatchJobRequest", jobId, afterEventId }, ctx)[
    Symbol.asyncIterator
  ]();

  let started = false;
  const start = () => {
    if (started) return;
    started = true;
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache, no-transform",
      // nginx: pass each event through as it comes.
      "x-accel-buffering": "no",
    });
    // EventSource: reconnect after 1 s when the connection drops.
    res.write("retry: 1000\n\n");
  };
  try {
    let next = stream.next();
    const waitMs = deps.firstEventWaitMs ?? 250;
    let timer: NodeJS.Timeout | undefined;
    const first = await Promise.race([
      next,
      new Promise<"wait">((resolve) => {
        timer = setTimeout(() => resolve("wait"), waitMs);
      }),
    ]).finally(() => clearTimeout(timer));
    if (first !== "wait" && first.done) {
      // Resumed from the terminal event: nothing more will ever come.
      res.writeHead(204, { "cache-control": "no-cache" });
      res.end();
      return;
    }
    start();
    try {
      for (;;) {
        const item = await next;
        if (item.done) break;
        const event = item.value.event;
        if (event === undefined) {
          res.write(": keepalive\n\n");
        } else {
          const data = JSON.stringify(toJson(JobEventSchema, event));
          res.write(`id: ${event.id}\nevent: ${eventNames[event.type]}\ndata: ${data}\n\n`);
        }
        next = stream.next();
      }
    } catch (err) {
      if (closed) return; // the client left
      const ce = toConnectError(err, deps.logger);
      res.write(`event: error\ndata: ${JSON.stringify(errorToJson(ce, undefined))}\n\n`);
    }
    res.end();
  } catch (err) {
    if (started) {
      res.end();
      return;
    }
    throw err;
  } finally {
    res.off("close", onClose);
    ctx.abort();
    await stream.return?.().catch(() => undefined);
  }
}
