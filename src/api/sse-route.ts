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
import { errorToJson } from "@connectrpc/connect/protocol-connect";
import type { Logger } from "pino";
import { JobEventSchema } from "../../gen/reports/v1/job_pb.js";
import type {
  WatchJobRequestSchema,
  WatchJobResponseSchema,
} from "../../gen/reports/v1/report_service_pb.js";
import { toConnectError } from "./error-map.js";
import {
  bridgedCall,
  type PathParams,
  type RouteHandler,
  type RouteRequest,
} from "./http-router.js";
import { eventTypeFromProto } from "./proto-mapping.js";
import type { BridgedServerStream } from "./rpc-bridge.js";

/** What the events route needs. */
export interface SseRouteDeps {
  /** The WatchJob handler, bridged (rpc-bridge.ts). */
  watchJob: BridgedServerStream<typeof WatchJobRequestSchema, typeof WatchJobResponseSchema>;
  logger: Logger;
  /**
   * How long to wait for the first event before sending the headers anyway.
   * Errors found in that window (unknown job, bad cursor) get a real HTTP status.
   */
  firstEventWaitMs?: number;
}

/**
 * Creates the handler. It rejects only for errors that occur before the
 * response started (the router answers them as JSON errors).
 */
export function createSseRoute(
  deps: SseRouteDeps,
): RouteHandler<PathParams<"/v1/jobs/{jobId}/events">> {
  return (request) => serveJobEvents(deps, request);
}

async function serveJobEvents(
  deps: SseRouteDeps,
  request: RouteRequest<PathParams<"/v1/jobs/{jobId}/events">>,
): Promise<void> {
  const { jobId } = request.params;
  const { req, res, url } = request;
  const header = req.headers["last-event-id"];
  const afterEventId =
    (Array.isArray(header) ? header.at(-1) : header)?.trim() || url.searchParams.get("after") || "";
  // The client going away aborts the handler's context, which ends the
  // watch and releases its subscription.
  const left = new AbortController();
  let closed = false;
  const onClose = () => {
    closed = true;
    left.abort();
  };
  res.once("close", onClose);
  const stream = deps.watchJob({ jobId, afterEventId }, bridgedCall(request, left.signal));

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
          const name = eventTypeFromProto(event.type) ?? "unspecified";
          res.write(`id: ${event.id}\nevent: ${name}\ndata: ${data}\n\n`);
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
    // Ends a handler still running, so that return() below does not wait on it.
    left.abort();
    await stream.return().catch(() => undefined);
  }
}
