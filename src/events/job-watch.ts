/**
 * One watcher's view of a job, push-style: the retained history after a
 * cursor, then the live events, each exactly once and in order, ending after
 * a terminal event. watchJobEvents (the async generator the Connect handler
 * and the SSE route use) and the lean gRPC WatchJob route both run on it.
 *
 * Why it is exact: the watch subscribes to live events *before* reading the
 * log, so every event is either in the log read or arrives live afterwards
 * (appends write the log and publish in one atomic script); events present in
 * both are dropped by comparing stream ids with the last one delivered. After
 * a subscriber reconnect the log is read again from the last id delivered.
 * The watch ends after a terminal event that is the latest one known; a
 * terminal event followed by more (RetryJob) does not end a replay.
 *
 * Why a class: an open watch is mostly idle, and 10,000 of them stay open in
 * one process. Its state is one object whose methods live on the prototype
 * (the hub calls `onEvent` on it directly, the keepalive timer gets it as an
 * argument), so an idle watch holds no closures, promises or signals.
 */
import { JobNotFoundError } from "../domain/errors.js";
import { type JobEventView, terminalEventTypes, terminalStates } from "../domain/job.js";
import { compareStreamIds } from "./event-codec.js";
import type { EventHub, EventListener } from "./event-hub.js";
import type { EventLog } from "./event-log.js";

/** Receives what a watch delivers. */
export interface WatchSink {
  /**
   * The next event. Return false to pause delivery until `JobWatch.resume()`
   * (the consumer's buffer is full); keepalives pause with it.
   */
  event(event: JobEventView): boolean;
  /** Nothing was delivered for `keepaliveMs`. */
  keepalive(): void;
  /**
   * The watch is over: after its terminal event (`err` undefined), or with
   * the error (JobNotFoundError, CursorTrimmedError, CursorAheadError, the
   * hub's or the log's errors). Called at most once, never after `close()`.
   */
  end(err?: unknown): void;
}

/** Parameters of one watch. */
export interface JobWatchOptions {
  jobId: string;
  tenant: string;
  afterEventId?: string | undefined;
  /** A keepalive is sent after this long without events, in ms. */
  keepaliveMs: number;
}

const none: readonly JobEventView[] = [];

function keepaliveDue(watch: JobWatch): void {
  watch.onKeepalive();
}

/** A running watch; `start()` it, `close()` it when its consumer goes away. */
export class JobWatch implements EventListener {
  private readonly deps: { log: EventLog; hub: EventHub };
  private readonly jobId: string;
  private readonly tenant: string;
  private readonly keepaliveMs: number;
  private readonly sink: WatchSink;
  /** The last id delivered (or the cursor). */
  private last: string | undefined;
  /** Events being delivered, from `index` on. */
  private queue: readonly JobEventView[] = none;
  private index = 0;
  /** Live events that arrived while `queue` was being delivered or the log read. */
  private pending: JobEventView[] | undefined;
  private resync = false;
  /** Reading the log (at the start and after a resync): live events wait in `pending`. */
  private reading = true;
  private paused = false;
  private done = false;
  private unsubscribe: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(deps: { log: EventLog; hub: EventHub }, options: JobWatchOptions, sink: WatchSink) {
    this.deps = deps;
    this.jobId = options.jobId;
    this.tenant = options.tenant;
    this.last = options.afterEventId;
    this.keepaliveMs = options.keepaliveMs;
    this.sink = sink;
  }

  /** Subscribes, reads the log, and starts delivering. Errors go to `sink.end`. */
  async start(): Promise<void> {
    const { hub, log } = this.deps;
    try {
      const unsubscribe = await hub.subscribe(this.jobId, this);
      if (this.done) {
        unsubscribe();
        return;
      }
      this.unsubscribe = unsubscribe;
      const replay = await log.replay(this.jobId, this.last);
      if (this.done) return;
      if (replay === undefined || replay.tenant !== this.tenant) {
        throw new JobNotFoundError(this.jobId);
      }
      // Resumed from the terminal event: nothing more will come. (A cursor past
      // the log's newest id never gets here: the replay refuses it.)
      if (replay.events.length === 0 && terminalStates.has(replay.state)) {
        this.finish(undefined);
        return;
      }
      this.deliverFrom(replay.events);
    } catch (err) {
      this.finish(err);
    }
  }

  /** Delivery may go on after `sink.event` returned false. */
  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.pump();
  }

  /** Ends the watch without a word to the sink (its consumer is gone). Idempotent. */
  close(): void {
    if (this.done) return;
    this.done = true;
    this.release();
  }

  /** @internal The hub's live event. */
  onEvent(event: JobEventView): void {
    if (this.done) return;
    if (this.pending === undefined) this.pending = [event];
    else this.pending.push(event);
    this.pump();
  }

  /** @internal The hub may have missed events: re-read the log from the last id delivered. */
  onResync(): void {
    if (this.done) return;
    this.resync = true;
    this.pump();
  }

  /** @internal The keepalive timer. */
  onKeepalive(): void {
    if (this.done || this.reading || this.paused) return;
    if (this.index < this.queue.length || this.pending !== undefined || this.resync) return;
    this.sink.keepalive();
    if (!this.done && !this.paused) this.timer?.refresh();
  }

  private deliverFrom(events: readonly JobEventView[]): void {
    this.queue = events;
    this.index = 0;
    this.reading = false;
    this.pump();
  }

  private pump(): void {
    while (!this.done && !this.paused && !this.reading) {
      if (this.index < this.queue.length) {
        const event = this.queue[this.index++] as JobEventView;
        if (this.last !== undefined && compareStreamIds(event.id, this.last) <= 0) continue;
        this.last = event.id;
        const more = this.sink.event(event);
        // A terminal event ends the watch unless newer events follow it (a
        // RetryJob re-queued the job after it FAILED). Live copies of events
        // already delivered (pending since the replay) do not count.
        if (
          terminalEventTypes.has(event.type) &&
          !hasNewer(this.queue, this.index, event.id) &&
          !hasNewer(this.pending ?? none, 0, event.id)
        ) {
          this.finish(undefined);
          return;
        }
        if (!more) this.paused = true;
        continue;
      }
      if (this.resync) {
        this.resync = false;
        this.pending = undefined;
        this.queue = none;
        this.index = 0;
        this.reading = true;
        void this.reread();
        return;
      }
      if (this.pending !== undefined) {
        this.queue = this.pending;
        this.index = 0;
        this.pending = undefined;
        continue;
      }
      // Idle: the keepalive runs from now.
      if (this.timer === undefined) this.timer = setTimeout(keepaliveDue, this.keepaliveMs, this);
      else this.timer.refresh();
      return;
    }
  }

  private async reread(): Promise<void> {
    try {
      const again = await this.deps.log.replay(this.jobId, this.last);
      if (this.done) return;
      if (again === undefined) throw new JobNotFoundError(this.jobId);
      this.deliverFrom(again.events);
    } catch (err) {
      this.finish(err);
    }
  }

  private finish(err: unknown): void {
    if (this.done) return;
    this.done = true;
    this.release();
    this.sink.end(err);
  }

  private release(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.queue = none;
    this.pending = undefined;
    const unsubscribe = this.unsubscribe;
    this.unsubscribe = undefined;
    unsubscribe?.();
  }
}

/** True when `events` holds one newer than `id` from `from` on. */
function hasNewer(events: readonly JobEventView[], from: number, id: string): boolean {
  for (let i = from; i < events.length; i++) {
    if (compareStreamIds((events[i] as JobEventView).id, id) > 0) return true;
  }
  return false;
}
