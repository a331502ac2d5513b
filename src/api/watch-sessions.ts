/**
 * WatchJob's handler for the lean gRPC route (grpc-watch-route.ts): the same
 * steps as ReportService.watchJob (validation, the tenant's watch cap, the
 * maximum duration, UNAVAILABLE at shutdown, errors mapped by error-map.ts)
 * on a JobWatch, producing gRPC-framed WatchJobResponse messages.
 *
 * Built for 10,000 open watches in one process: an open watch is one small
 * object (no AbortSignal, no generator, no per-watch closure but the limiter's
 * release); one shutdown listener serves them all; and an event's framed
 * message is encoded once and the same bytes written to every watcher of the
 * job (the hub decodes each event once, and shared replays hand out the same
 * event objects), signed download URLs included.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import {
  type WatchJobRequest,
  WatchJobResponseSchema,
} from "../../gen/reports/v1/report_service_pb.js";
import { ShuttingDownError, WatchTimeLimitError } from "../domain/errors.js";
import type { JobEventView } from "../domain/job.js";
import type { EventHub } from "../events/event-hub.js";
import type { EventLog } from "../events/event-log.js";
import { JobWatch, type WatchSink } from "../events/job-watch.js";
import type { DownloadSigner } from "./download-signer.js";
import { toConnectError } from "./error-map.js";
import { eventToProto } from "./proto-mapping.js";
import { validateWatchJob } from "./validation.js";
import type { WatchLimiter } from "./watch-limiter.js";

/** Where a watch's messages go: a gRPC response stream. */
export interface WatchOutput {
  /**
   * One gRPC-framed WatchJobResponse (the 5-byte prefix included; the bytes
   * may be shared with other watches: never modify them). False when the
   * transport's buffer is full: call the session's `resume()` once it drained.
   */
  write(frame: Uint8Array): boolean;
  /** The watch is over: OK (`err` undefined) or the error to answer. Called once, never after `close()`. */
  end(err: ConnectError | undefined): void;
}

/** One open watch. */
export interface WatchSession {
  /** The transport drained after `write` returned false. */
  resume(): void;
  /** The caller went away: stop, without a word to the output. Idempotent. */
  close(): void;
}

/** Opens watches. */
export interface WatchSessions {
  /**
   * Validates `request` and opens its watch for `tenant` (authenticated);
   * `timeoutMs` is the caller's deadline (DEADLINE_EXCEEDED when it passes).
   * @throws ConnectError INVALID_ARGUMENT, RESOURCE_EXHAUSTED (the tenant's
   *   cap) or UNAVAILABLE (shutting down); later errors go to `out.end`.
   */
  open(
    request: WatchJobRequest,
    tenant: string,
    out: WatchOutput,
    timeoutMs?: number,
  ): WatchSession;
  /** Watches open now. */
  readonly count: number;
}

/** What the sessions need: ReportServiceDeps' watch part. */
export interface WatchSessionsDeps {
  log: EventLog;
  hub: EventHub;
  publicUrl: string;
  keepaliveMs: number;
  watchMaxDurationMs: number;
  downloadSigner?: DownloadSigner;
  watchLimiter?: WatchLimiter;
  shutdownSignal: AbortSignal;
  logger: Logger;
}

/** Frames a message as one gRPC length-prefixed message (uncompressed). */
function frame(bytes: Uint8Array): Uint8Array {
  const out = Buffer.allocUnsafe(5 + bytes.length);
  out[0] = 0;
  out.writeUInt32BE(bytes.length, 1);
  out.set(bytes, 5);
  return out;
}

/** The state all sessions share. */
class Shared {
  /**
   * Open sessions in the order they opened, which is the order of their
   * deadlines (every watch has the same maximum duration): one timer, for the
   * oldest, serves them all.
   */
  readonly open = new Set<Session>();
  private deadlineTimer: NodeJS.Timeout | undefined;
  /** Framed messages of events that read the same for every tenant. */
  private readonly frames = new WeakMap<JobEventView, Uint8Array>();
  /** Framed messages of events with a signed download URL, and the tenant it was signed for. */
  private readonly signedFrames = new WeakMap<
    JobEventView,
    { tenant: string; bytes: Uint8Array }
  >();

  constructor(readonly deps: WatchSessionsDeps) {}

  frameOf(event: JobEventView, tenant: string): Uint8Array {
    const signer = this.deps.downloadSigner;
    if (event.result === undefined || signer === undefined) {
      let bytes = this.frames.get(event);
      if (bytes === undefined) {
        bytes = this.encode(event, undefined);
        this.frames.set(event, bytes);
      }
      return bytes;
    }
    // A signed download URL is the tenant's (and its expiry moves in coarse
    // steps): every watcher of the job is of its tenant, so one encoding
    // still serves them all.
    const signed = this.signedFrames.get(event);
    if (signed !== undefined && signed.tenant === tenant) return signed.bytes;
    const bytes = this.encode(event, (path: string) => signer.sign(tenant, path));
    this.signedFrames.set(event, { tenant, bytes });
    return bytes;
  }

  private encode(event: JobEventView, sign: ((path: string) => string) | undefined): Uint8Array {
    const message = create(WatchJobResponseSchema, {
      event: eventToProto(event, this.deps.publicUrl, sign),
    });
    return frame(toBinary(WatchJobResponseSchema, message));
  }

  add(session: Session): void {
    this.open.add(session);
    if (this.deadlineTimer === undefined) this.armDeadline(session.deadlineAt);
  }

  private armDeadline(at: number): void {
    this.deadlineTimer = setTimeout(deadlinesDue, Math.max(0, at - performance.now()), this);
    this.deadlineTimer.unref();
  }

  /** Ends the sessions past their maximum duration; re-arms for the next one. */
  deadlinesDue(): void {
    this.deadlineTimer = undefined;
    const now = performance.now();
    for (const session of this.open) {
      if (session.deadlineAt > now) {
        this.armDeadline(session.deadlineAt);
        return;
      }
      session.stop(new WatchTimeLimitError(this.deps.watchMaxDurationMs));
    }
  }

  stopAll(err: unknown): void {
    clearTimeout(this.deadlineTimer);
    this.deadlineTimer = undefined;
    for (const session of [...this.open]) session.stop(err);
  }

  keepaliveFrame(): Uint8Array {
    const message = create(WatchJobResponseSchema, { keepaliveTime: timestampNow() });
    return frame(toBinary(WatchJobResponseSchema, message));
  }

  fail(err: unknown): ConnectError {
    return toConnectError(err, this.deps.logger);
  }
}

function callerDeadlinePassed(session: Session): void {
  // connect-node's words for a passed deadline.
  session.stop(new ConnectError("the operation timed out", Code.DeadlineExceeded));
}

function deadlinesDue(shared: Shared): void {
  shared.deadlinesDue();
}

/** One watch: the JobWatch's sink, and what ends it. */
class Session implements WatchSink, WatchSession {
  readonly watch: JobWatch;
  /** When the watch reaches its maximum duration (performance.now() ms). */
  readonly deadlineAt: number;
  /** The caller's own deadline, when it set one (rare for a watch: a timer of its own). */
  private callerDeadline: NodeJS.Timeout | undefined;
  private ended = false;

  constructor(
    private readonly shared: Shared,
    private readonly out: WatchOutput,
    private readonly tenant: string,
    private readonly release: (() => void) | undefined,
    jobId: string,
    afterEventId: string | undefined,
  ) {
    const { deps } = shared;
    this.watch = new JobWatch(
      { log: deps.log, hub: deps.hub },
      { jobId, tenant, afterEventId, keepaliveMs: deps.keepaliveMs },
      this,
    );
    this.deadlineAt = performance.now() + deps.watchMaxDurationMs;
    shared.add(this);
  }

  event(event: JobEventView): boolean {
    return this.out.write(this.shared.frameOf(event, this.tenant));
  }

  keepalive(): void {
    this.out.write(this.shared.keepaliveFrame());
  }

  end(err?: unknown): void {
    if (this.ended) return;
    this.cleanup();
    this.out.end(err === undefined ? undefined : this.shared.fail(err));
  }

  /** Ends the watch with `err` (its maximum duration, the shutdown). */
  stop(err: unknown): void {
    if (this.ended) return;
    this.watch.close();
    this.end(err);
  }

  resume(): void {
    this.watch.resume();
  }

  setTimeout(ms: number): void {
    this.callerDeadline = setTimeout(callerDeadlinePassed, ms, this);
    this.callerDeadline.unref();
  }

  close(): void {
    if (this.ended) return;
    this.watch.close();
    this.cleanup();
  }

  private cleanup(): void {
    this.ended = true;
    clearTimeout(this.callerDeadline);
    this.shared.open.delete(this);
    this.release?.();
  }
}

/** Creates the sessions; at shutdown every open one ends with UNAVAILABLE. */
export function createWatchSessions(deps: WatchSessionsDeps): WatchSessions {
  const shared = new Shared(deps);
  deps.shutdownSignal.addEventListener("abort", () => shared.stopAll(new ShuttingDownError()), {
    once: true,
  });
  return {
    get count() {
      return shared.open.size;
    },
    open(request, tenant, out, timeoutMs) {
      try {
        if (deps.shutdownSignal.aborted) throw new ShuttingDownError();
        const { jobId, afterEventId } = validateWatchJob(request);
        const release = deps.watchLimiter?.acquire(tenant);
        const session = new Session(shared, out, tenant, release, jobId, afterEventId);
        if (timeoutMs !== undefined) session.setTimeout(timeoutMs);
        void session.watch.start();
        return session;
      } catch (err) {
        throw shared.fail(err);
      }
    },
  };
}
