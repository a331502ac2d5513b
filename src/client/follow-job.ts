/**
 * Following a job's events to its end across dropped streams: the resumable
 * watch of the Node client (reports-client.ts) and of the browser app
 * (web/main.ts). Each stream is opened after the last event seen, so every
 * event comes exactly once and in order whatever drops in between. No
 * Node-only imports: esbuild bundles it for the browser.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { JobEvent } from "../../gen/reports/v1/job_pb.js";
import type { WatchJobResponse } from "../../gen/reports/v1/report_service_pb.js";
import { type BackoffPolicy, backoffMs, sleep } from "./backoff.js";
import { isTerminalEvent } from "./job-enums.js";

/** How to follow a job. */
export interface FollowOptions {
  /** Opens one WatchJob stream after `afterEventId` ("" for the job's first event). */
  open(afterEventId: string, signal: AbortSignal | undefined): AsyncIterable<WatchJobResponse>;
  /** Start after this event id (a cursor from an earlier watch); default: the first event. */
  afterEventId?: string;
  /** Ends the watch; the iterator then throws a CANCELED ConnectError. */
  signal?: AbortSignal;
  /** Reconnects in a row, without a new event in between, before the last error is thrown. */
  maxReconnects: number;
  /** The wait before each reconnect. */
  backoff: BackoffPolicy;
  /** Called before each reconnect with the reconnects in a row so far (1, 2, …) and what dropped. */
  onReconnect?(attempt: number, err: ConnectError): void;
}

/**
 * The job's events (keepalives left out), ending after the terminal one.
 * A stream that drops (isDroppedStream) is opened again after the last event
 * yielded; a stream that ends cleanly without a terminal event was resumed
 * from the end, so nothing more will come. Any other error is thrown, as a
 * ConnectError.
 */
export async function* followJob(
  options: FollowOptions,
): AsyncGenerator<JobEvent, void, undefined> {
  const { signal } = options;
  let after = options.afterEventId ?? "";
  let failures = 0;
  for (;;) {
    try {
      for await (const res of options.open(after, signal)) {
        if (res.event === undefined) continue; // a keepalive
        failures = 0;
        after = res.event.id;
        yield res.event;
        if (isTerminalEvent(res.event.type)) return;
      }
      return;
    } catch (err) {
      const ce = ConnectError.from(err);
      if (signal?.aborted || !isDroppedStream(ce) || failures >= options.maxReconnects) throw ce;
      failures++;
      options.onReconnect?.(failures, ce);
      await sleep(backoffMs(failures, options.backoff), signal);
    }
  }
}

/**
 * A watch stream that broke on the way (not an answer about the job), so
 * resuming is safe: UNAVAILABLE (the server says "resume elsewhere or
 * later"); CANCELED that the caller did not ask for (how an HTTP/2 stream
 * reset by a dying server shows up); a reset connection; or, in browsers, a
 * failed fetch (a TypeError, which Connect-Web reports as UNKNOWN).
 */
export function isDroppedStream(ce: ConnectError): boolean {
  return (
    ce.code === Code.Unavailable ||
    ce.code === Code.Canceled ||
    isConnectionReset(ce) ||
    (ce.code === Code.Unknown && ce.cause instanceof TypeError)
  );
}

/** A reset or refused connection, as connect-node reports it (ECONNRESET is ABORTED there). */
export function isConnectionReset(ce: ConnectError): boolean {
  if (ce.code !== Code.Aborted && ce.code !== Code.Internal && ce.code !== Code.Unknown) {
    return false;
  }
  for (let e: unknown = ce.cause; e instanceof Error; e = e.cause) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && /^(ECONNRESET|ECONNREFUSED|EPIPE|ERR_HTTP2_)/.test(code)) {
      return true;
    }
  }
  return /premature close|stream closed|socket hang up|missing trailer|protocol error/i.test(
    ce.rawMessage,
  );
}
