/**
 * Runs one attempt of one job: records STARTED, runs the report type's
 * generator with a progress reporter and an AbortSignal (cancel, shutdown,
 * lost lock, run timeout or deadline), stores the file, records SUCCEEDED.
 * On failure it records RETRYING (with when the next attempt is due) or
 * FAILED on the last attempt, a permanent error or a passed deadline. Each of
 * these is one transition of domain/job-transitions.ts, applied atomically
 * and guarded by the job's state, so a re-run of a finished or cancelled job
 * (after a crash, or a race with CancelJob) changes nothing; and fenced by
 * the attempt's lock token and fencing token, so once the attempt lost the
 * queue's lock on its job (a frozen or partitioned worker), or another
 * attempt of the job started, this one's writes change nothing either.
 *
 * Progress writes do not hold the generator up: `progress()` resolves once
 * its write is queued or sent (one write in flight at a time, in order on
 * the command connection), and its answer comes back while the generator
 * works on. A report that comes within PROGRESS_LINGER_MS of the attempt's
 * previous write (its STARTED answer, or its last progress write) is held up
 * to that long, and the reports made meanwhile join it: one write for all,
 * each still its own event (`ProgressWrites`). When the queue's job says all
 * the attempt needs (`AttemptContext.queued`), its STARTED is held too: the
 * generator starts at once, and STARTED goes first in the attempt's next
 * write, or alone once the linger is over (the reports held with it follow
 * its answer). Reports (and a STARTED) still held when the generator returns
 * travel in the SUCCEEDED write (one script call, all or nothing: a quick
 * job's whole attempt is one call); when the attempt ends any other way,
 * they are sent before its end is recorded (RETRYING, FAILED, CANCELLED,
 * the release or the throttle), and dropped, never written, when it lost its
 * job or a write of it failed, or (a STARTED not sent, with its reports)
 * when the worker released it: the job goes back to the queue as it was. A
 * held STARTED refused by the job's state (CancelJob saw the job QUEUED and
 * cancelled it) ends the attempt as skipped. A refused write aborts the
 * generator's signal with `lockLostReason`, a failed one with its error (an
 * AttemptStorageError when Redis was away); the report is stored and
 * SUCCEEDED sent only after every progress write sent was answered, so
 * nothing is published after a refusal.
 *
 * An attempt that lost its job stops as soon as it learns it (its signal
 * aborts on a lost lock; a refused write aborts it too), writes nothing more
 * and removes only its own files: the report file is written under the
 * attempt's own name and published by the SUCCEEDED transition, so a stale
 * attempt can never overwrite or delete the report another attempt published.
 */
import { context, type Span, SpanStatusCode, trace } from "@opentelemetry/api";
import type { Logger } from "pino";
import type { WorkerConfig } from "../config/config.js";
import type { JobState, JobView, JsonObject, ReportArtifact, ReportType } from "../domain/job.js";
import { terminalStates } from "../domain/job.js";
import {
  type AttemptWrite,
  attemptStart,
  type Position,
  type TransitionInputs,
  type TransitionSubject,
} from "../domain/job-transitions.js";
import type { JobReader } from "../queue/job-reader.js";
import { isStorageUnavailable } from "../queue/storage-errors.js";
import type { TransitionApplier, TransitionResult } from "../queue/transition-applier.js";
import { attrAttempt, attrJobId, attrPhase, attrReportType } from "../telemetry/attributes.js";
import { inJobTrace } from "../telemetry/job-traces.js";
import { type ArtifactStore, newAttemptTag } from "./artifact-store.js";
import {
  PermanentReportError,
  type ReportGenerator,
  SlowDownError,
  TransientReportError,
} from "./generator.js";
import { randomText } from "./random-text.js";

/** What the processor needs to know about a queued job (a BullMQ job fits). */
export interface AttemptContext {
  id: string;
  /** Failed attempts so far (BullMQ's attemptsMade). */
  attemptsMade: number;
  maxAttempts: number;
  /**
   * The queue's lock token of this fetch of the job (BullMQ's): every write
   * of the attempt is refused once the job's lock no longer holds it.
   */
  lockToken: string;
  /**
   * What the queue's job says of the job (BullMQ's job data, written by the
   * submit with the record): enough to name the STARTED write's keys, so the
   * attempt starts without reading the record first (the write returns it).
   * Without it, the record is read first. With all of it (the generator's
   * input, the idempotency key digest, when the run was queued) the attempt
   * needs nothing of the record: its STARTED is held as progress reports are
   * (PROGRESS_LINGER_MS) and the generator starts at once.
   */
  queued?: {
    tenant: string;
    reportType: ReportType;
    deadline?: number;
    userId?: string;
    filters?: JsonObject;
    /** "" for a job submitted without a key. */
    idempotencyKeyDigest?: string;
    /** When this run was queued (the record's requeuedAt, else its createdAt), ms. */
    queuedAt?: number;
  };
}

/** What an attempt knows of its job: the record's, or the queue's job's, fields it needs. */
type AttemptJob = TransitionSubject & Pick<JobView, "userId" | "filters" | "deadline">;

/** Settings of the processor. */
export interface ProcessorSettings {
  /** Each type's timeout, the retry backoff and how long progress reports may be held. */
  worker: Pick<WorkerConfig, "reportTypes" | "retryBackoffMs"> &
    Partial<Pick<WorkerConfig, "progressLingerMs">>;
  random?: () => number;
}

/** How an attempt ended, for the queue adapter. */
export type AttemptOutcome =
  | { kind: "succeeded" | "skipped" | "cancelled" }
  /** The worker is stopping: the attempt was abandoned and the job goes back to the queue. */
  | { kind: "released" }
  /**
   * The attempt lost its job (its lock expired or was taken, or another
   * attempt started): it changed nothing, and the queue's job is left to
   * whoever holds it now. `step` is where it found out; `fenced` and `state`
   * what the refused write met (`fenced` false: the job had left the state
   * the write needs; "lock" also when the worker saw the lock go first).
   */
  | { kind: "lost"; step: string; fenced: "lock" | "token" | false; state?: JobState }
  /** The generator asked to slow down: pause this report type, requeue without using an attempt. */
  | { kind: "throttled"; delayMs: number }
  | { kind: "retry"; error: Error; delayMs: number }
  | { kind: "failed"; error: Error; permanent: boolean };

/** Runs attempts. */
export interface Processor {
  /**
   * Runs one attempt under `control`, the attempt's one AbortController: the
   * caller aborts it (cancelReason, releaseReason, lockLostReason) and so does
   * the processor (lockLostReason for a refused write, the write's error for
   * a failed one, a TimeoutError at the run timeout or the job's deadline);
   * the first reason stands. Its signal is the generator's.
   */
  run(job: AttemptContext, control: AbortController): Promise<AttemptOutcome>;
  /**
   * Records FAILED for a job the queue failed on its own (e.g. stalled too
   * often), unless it has ended, or was queued again (RetryJob) after the
   * failed run began (`runStartedAt`, ms).
   */
  markFailed(jobId: string, attempt: number, reason: string, runStartedAt?: number): Promise<void>;
}

/** Abort reason: the worker is stopping; give the job back to the queue. */
export const releaseReason = "worker shutting down";

/** Abort reason: CancelJob asked for this job. */
export const cancelReason = "job cancelled";

/** Abort reason: the attempt lost the queue's lock on its job (or another attempt took it over). */
export const lockLostReason = "lock lost";

/** The failure reason of jobs whose deadline passed. */
export const deadlineExceeded = "deadline exceeded";

/** Creates a processor. Generators are looked up by report type. */
export function createProcessor(deps: {
  transitions: TransitionApplier;
  jobs: JobReader;
  generators: Record<ReportType, ReportGenerator>;
  artifacts: ArtifactStore;
  settings: ProcessorSettings;
  logger: Logger;
}): Processor {
  const { transitions, jobs, generators, artifacts, settings, logger } = deps;
  const random = settings.random ?? Math.random;
  const lingerMs = settings.worker.progressLingerMs ?? 0;

  return {
    async run(ctx, control) {
      const outcome = await runAttempt(ctx, control);
      if (outcome.kind === "lost") {
        const { step, fenced, state } = outcome;
        inJobTrace(ctx.id, () =>
          logger.warn(
            { job_id: ctx.id, attempt: ctx.attemptsMade + 1, step, fenced, state },
            "attempt lost its job; it changes nothing",
          ),
        );
      }
      return outcome;
    },

    async markFailed(jobId, attempt, reason, runStartedAt) {
      const job = await jobs.get(jobId);
      if (job === undefined || terminalStates.has(job.state)) return;
      if (
        runStartedAt !== undefined &&
        job.requeuedAt !== undefined &&
        job.requeuedAt >= runStartedAt
      ) {
        return;
      }
      await abandon(job, attempt, reason);
    },
  };

  /**
   * Records STARTED. With the queue's view of the job (`ctx.queued`) the
   * write names its keys from it and returns the record as written (one
   * round trip); else, or when the queue's deadline has passed, the record
   * is read first. Either way a job that is gone (expired), finished by an
   * earlier run or cancelled is skipped: the write refuses it by its state.
   */
  async function start(
    ctx: AttemptContext,
    own: Omit<AttemptWrite, "at"> & { lockToken: string },
  ): Promise<{ job: JobView; startedAt: number } | AttemptOutcome> {
    const queued = ctx.queued;
    let job: JobView | undefined;
    if (queued === undefined || (queued.deadline !== undefined && queued.deadline <= Date.now())) {
      job = await jobs.get(ctx.id);
      // Gone (expired), finished by an earlier run, or cancelled: nothing to do.
      if (job === undefined || terminalStates.has(job.state)) return { kind: "skipped" };
      if (job.deadline !== undefined && job.deadline <= Date.now()) {
        await abandon(job, own.attempt - 1, deadlineExceeded);
        return { kind: "failed", error: new Error(deadlineExceeded), permanent: true };
      }
    }
    const startedAt = Date.now();
    // Without a read, the STARTED write needs only the fields that name its
    // keys (it leaves the idempotency record alone) and returns the record.
    const subject = job ?? {
      id: ctx.id,
      tenant: (queued as NonNullable<typeof queued>).tenant,
      reportType: (queued as NonNullable<typeof queued>).reportType,
      createdAt: startedAt,
    };
    const started = await transitions.apply(
      subject,
      "started",
      {
        attempt: own.attempt,
        token: own.token,
        lockToken: own.lockToken,
        at: startedAt,
        maxAttempts: ctx.maxAttempts,
      },
      { withRecord: job === undefined },
    );
    if (!started.applied) {
      // Lost before it began: leave the queue's job alone. Else the job left the live states.
      return started.fenced ? lose("started", started) : { kind: "skipped" };
    }
    job ??= started.record;
    if (job === undefined) throw new Error(`job ${ctx.id} has no record after its STARTED write`);
    return { job, startedAt };
  }

  /**
   * The attempt's STARTED, held (not written yet), when the queue's job says
   * all the attempt needs (`ctx.queued`) and progress reports may be held:
   * it goes with the attempt's next write, or on its own once the linger is
   * over (ProgressWrites). Undefined otherwise, or when the job's deadline
   * has passed (start() reads the record and fails it).
   */
  function heldStart(
    ctx: AttemptContext,
    own: Omit<AttemptWrite, "at"> & { lockToken: string },
  ): { job: AttemptJob; started: TransitionInputs["started"] } | undefined {
    const queued = ctx.queued;
    if (
      lingerMs <= 0 ||
      queued === undefined ||
      queued.userId === undefined ||
      queued.filters === undefined ||
      queued.idempotencyKeyDigest === undefined ||
      queued.queuedAt === undefined
    ) {
      return undefined;
    }
    const at = Date.now();
    if (queued.deadline !== undefined && queued.deadline <= at) return undefined;
    return {
      job: {
        id: ctx.id,
        tenant: queued.tenant,
        reportType: queued.reportType,
        userId: queued.userId,
        filters: queued.filters,
        deadline: queued.deadline,
        createdAt: queued.queuedAt,
        idempotencyKeyDigest:
          queued.idempotencyKeyDigest === "" ? undefined : queued.idempotencyKeyDigest,
      },
      started: {
        attempt: own.attempt,
        token: own.token,
        lockToken: own.lockToken,
        at,
        maxAttempts: ctx.maxAttempts,
      },
    };
  }

  /** One attempt; an attempt that lost its job has removed its files when this returns. */
  async function runAttempt(
    ctx: AttemptContext,
    control: AbortController,
  ): Promise<AttemptOutcome> {
    const attempt = ctx.attemptsMade + 1;
    // Every write of this attempt carries its fencing token and the queue's lock token.
    const own = {
      attempt,
      token: randomText(12, "base64url"),
      lockToken: ctx.lockToken,
    };
    const held = heldStart(ctx, own);
    let job: AttemptJob;
    let startedAt: number;
    if (held !== undefined) {
      job = held.job;
      startedAt = held.started.at;
    } else {
      const begun = await start(ctx, own);
      if ("kind" in begun) return begun;
      job = begun.job;
      startedAt = begun.startedAt;
    }

    const limits = new AttemptLimits(
      job,
      startedAt,
      control,
      settings.worker.reportTypes[job.reportType].timeoutMs,
    );
    const where: Position = { ...attemptStart };
    const phases = createPhaseSpans(job, attempt);
    const tag = newAttemptTag(attempt);
    let published = false;
    // Set once the SUCCEEDED write is sent: a write that timed out may still
    // have been applied (Redis frozen, then thawed), publishing this file.
    let publishing: ReportArtifact | undefined;
    const writes = new ProgressWrites(
      transitions,
      job,
      limits,
      lingerMs,
      Date.now(),
      held?.started,
    );
    try {
      const output = await generators[job.reportType].generate(
        {
          jobId: job.id,
          userId: job.userId,
          reportType: job.reportType,
          filters: job.filters,
          attempt,
        },
        (percent, phase) => {
          where.progress = Math.max(0, Math.min(99, Math.round(percent)));
          where.phase = phase;
          phases.enter(phase);
          // Written out, not spread from `own`: one object of its final shape per report.
          return writes.report({
            attempt: own.attempt,
            token: own.token,
            lockToken: own.lockToken,
            progress: where.progress,
            phase,
            at: Date.now(),
          });
        },
        limits.signal,
      );
      // Nothing is stored or published before every progress write sent was answered.
      await writes.close();
      limits.signal.throwIfAborted();
      phases.enter("completed");
      const artifact = await artifacts.put(
        job.id,
        tag,
        output.fileName,
        output.contentType,
        output.content,
      );
      limits.signal.throwIfAborted();
      publishing = artifact;
      // STARTED and the reports still held travel with SUCCEEDED: written with it or not at all.
      const started = writes.takeStarted();
      const before = writes.take();
      const done = await ownStorage(() =>
        transitions.apply(
          job,
          "succeeded",
          {
            attempt: own.attempt,
            token: own.token,
            lockToken: own.lockToken,
            at: Date.now(),
            startedAt,
            artifact,
          },
          started !== undefined || before.length > 0 ? { before, started } : undefined,
        ),
      );
      phases.end();
      if (!done.applied) {
        publishing = undefined;
        // Its STARTED refused by the job's state: the job had left the live
        // states before this attempt began (cancelled while queued, say).
        if (started !== undefined && done.fenced === false) return { kind: "skipped" };
        return lose("succeeded", done);
      }
      published = true;
      return { kind: "succeeded" };
    } catch (thrown) {
      // A progress write still travelling decides how the attempt ended: wait for its answer.
      await writes.close();
      const stopped = limits.failure === undefined ? stopOf(thrown, limits) : undefined;
      // Released before its STARTED was written: the job was never this
      // attempt's in the record, and goes back to the queue as it is.
      if (stopped === "released" && writes.dropStarted()) {
        phases.end();
        return { kind: "released" };
      }
      // STARTED and the reports still held are written before the end, unless
      // the attempt lost its job or a write of it failed (they would be refused or fail).
      if (limits.failure === undefined && stopped !== "lost") await writes.flush();
      // A failed write of the attempt is why it stopped, whatever the generator threw then.
      const err = limits.failure ?? thrown;
      const stop = stopOf(err, limits);
      if (stop !== undefined) phases.end();
      else phases.fail(err);
      // Calls are awaited, never returned: the finally below must not run
      // while a rejection of theirs waits without a handler.
      switch (stop) {
        case "lost":
          // Its STARTED refused by the job's state: the job had left the live states.
          if (writes.startRefused) return { kind: "skipped" };
          return lose(writes.refusal === undefined ? "running" : "progress", writes.refusal);
        case "released": {
          const r = await transitions.apply(job, "released", { ...own, at: Date.now() });
          return r.applied ? { kind: "released" } : lose("released", r);
        }
        case "cancelled":
          return await recordCancelled(job, { ...own, ...where });
        case "throttled": {
          const { message, retryAfterMs } = err as SlowDownError;
          const r = await transitions.apply(job, "throttled", {
            ...own,
            at: Date.now(),
            reason: message,
            retryAfterMs,
          });
          if (!r.applied) return lose("throttled", r);
          return { kind: "throttled", delayMs: retryAfterMs };
        }
        default:
          return await recordFailure(job, { ...own, ...where }, err, limits, ctx.maxAttempts);
      }
    } finally {
      limits.end();
      // Whatever this attempt wrote and did not publish goes; nothing of any other attempt.
      if (!published && !(await mayBePublished(job.id, publishing))) {
        await artifacts
          .discard(job.id, tag)
          .catch((err: unknown) =>
            inJobTrace(job.id, () =>
              logger.warn({ err, job_id: job.id, attempt }, "could not remove an attempt's files"),
            ),
          );
      }
    }
  }

  /**
   * Whether the record may point at `artifact`, whose SUCCEEDED write failed
   * without an answer (sent, then timed out or disconnected: Redis may have
   * applied it). True unless the record is read and points elsewhere; when
   * it cannot be read the files stay, and the janitor removes them once the
   * job has ended without pointing at them (attempt-leftovers.ts).
   */
  async function mayBePublished(
    jobId: string,
    artifact: ReportArtifact | undefined,
  ): Promise<boolean> {
    if (artifact === undefined) return false;
    try {
      const current = await jobs.get(jobId);
      if (current?.result?.downloadPath !== artifact.downloadPath) return false;
    } catch (err) {
      inJobTrace(jobId, () =>
        logger.warn(
          { err: (err as Error).message, job_id: jobId },
          "could not read whether an attempt's unanswered SUCCEEDED write was applied; its files stay",
        ),
      );
      return true;
    }
    inJobTrace(jobId, () =>
      logger.warn(
        { job_id: jobId },
        "an attempt's SUCCEEDED write failed without an answer but was applied; its report stays",
      ),
    );
    return true;
  }

  /**
   * The attempt no longer owns its job: its lock expired or was taken (the
   * signal says so, or a write was refused), or another attempt started. It
   * writes nothing more; its files go (the caller's `finally`).
   */
  function lose(step: string, refusal: TransitionResult | undefined): AttemptOutcome {
    const why = refusal === undefined || refusal.applied ? undefined : refusal;
    // Logged by run(), once the attempt's files are gone.
    // No refusal: the worker saw the lock go.
    return {
      kind: "lost",
      step,
      fenced: why === undefined ? "lock" : why.fenced,
      state: why?.state,
    };
  }

  /** Fails a job outside an attempt (not fenced). */
  async function abandon(job: JobView, attempt: number, reason: string) {
    const { progress, phase } = job;
    await transitions.apply(job, "abandoned", { attempt, progress, phase, at: Date.now(), reason });
  }

  /** A failed attempt: RETRYING with the next attempt's time, or FAILED when no attempt follows. */
  async function recordFailure(
    job: AttemptJob,
    place: AttemptPlace,
    err: unknown,
    limits: AttemptLimits,
    maxAttempts: number,
  ): Promise<AttemptOutcome> {
    const deadlinePassed = limits.deadlinePassed;
    const permanent = err instanceof PermanentReportError || deadlinePassed;
    const reason = deadlinePassed
      ? deadlineExceeded
      : limits.timedOut
        ? `attempt timed out after ${limits.timeoutMs} ms in phase ${place.phase}`
        : describeFailure(err, place.phase, logger, job.id);
    const error = new Error(reason);
    const delayMs = backoffDelay(settings.worker.retryBackoffMs, place.attempt, random);
    const now = Date.now();
    if (job.deadline !== undefined && now + delayMs >= job.deadline && !permanent) {
      const last = `${deadlineExceeded} (last error: ${reason})`;
      const r = await transitions.apply(job, "failed", { ...place, at: now, reason: last });
      if (!r.applied) return lose("failed", r);
      return { kind: "failed", error, permanent: true };
    }
    if (permanent || place.attempt >= maxAttempts) {
      const r = await transitions.apply(job, "failed", { ...place, at: now, reason });
      if (!r.applied) return lose("failed", r);
      return { kind: "failed", error, permanent };
    }
    const nextAttemptAt = now + delayMs;
    const r = await transitions.apply(job, "retrying", {
      ...place,
      at: now,
      reason,
      nextAttemptAt,
    });
    if (!r.applied) return lose("retrying", r);
    return { kind: "retry", error, delayMs };
  }

  /**
   * CANCELLED with the reason CancelJob gave. The job's files go: a job that
   * ends CANCELLED published none, and no attempt can publish once it ended.
   */
  async function recordCancelled(job: AttemptJob, place: AttemptPlace): Promise<AttemptOutcome> {
    const current = await jobs.get(job.id);
    const reason = current?.cancelReason || "cancelled";
    const r = await transitions.apply(current ?? job, "cancelled", {
      ...place,
      at: Date.now(),
      reason,
    });
    if (!r.applied) return lose("cancelled", r);
    await artifacts.remove(job.id);
    return { kind: "cancelled" };
  }
}

/** An attempt (number and fencing token) and where it was when it stopped. */
type AttemptPlace = Omit<AttemptWrite, "at"> & Position;

/**
 * Why an attempt stopped without failing: it lost its job (a refused write
 * called `lose`, or the worker saw its lock go), was released, cancelled or
 * throttled; undefined for a failure.
 */
function stopOf(
  err: unknown,
  limits: AttemptLimits,
): "lost" | "released" | "cancelled" | "throttled" | undefined {
  const { signal } = limits;
  if (limits.lost || (signal.aborted && signal.reason === lockLostReason)) return "lost";
  if (signal.aborted && signal.reason === releaseReason) return "released";
  if (signal.aborted && signal.reason === cancelReason) return "cancelled";
  if (err instanceof SlowDownError && !signal.aborted) return "throttled";
  return undefined;
}

/**
 * What ends an attempt: the worker (cancel, shutdown, lost lock), a refused
 * or failed write (`lose`, `fail`), the run timeout, the job's deadline. One
 * controller (the worker's) and one timer per attempt: AbortSignal.any and
 * AbortSignal.timeout cost several objects, listeners and timers each, and
 * a controller of its own that forwards the worker's one signal and one
 * listener more. A class, not an object of getters and closures: one object
 * per attempt.
 */
class AttemptLimits {
  /** The generator's signal: aborted by any of the above. */
  readonly signal: AbortSignal;
  /** The run timeout aborted it (it came first). */
  timedOut = false;
  /** The job's deadline aborted it (before the run timeout). */
  deadlinePassed = false;
  /** A write of the attempt was refused: it no longer owns the job. */
  lost = false;
  /** Why a write of the attempt failed (`fail`), when that aborted it first. */
  failure: unknown;
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(
    job: Pick<JobView, "deadline">,
    startedAt: number,
    readonly controller: AbortController,
    readonly timeoutMs: number,
  ) {
    this.signal = controller.signal;
    const deadlineMs =
      job.deadline !== undefined ? Math.max(0, job.deadline - startedAt) : Number.POSITIVE_INFINITY;
    const firesInMs = Math.min(timeoutMs, deadlineMs);
    this.timer =
      firesInMs > maxTimerMs
        ? undefined
        : setTimeout(expire, firesInMs, this, timeoutMs <= deadlineMs);
  }

  /** Aborts the attempt because it lost its job. */
  lose(): void {
    this.lost = true;
    if (!this.signal.aborted) this.controller.abort(lockLostReason);
  }

  /** Aborts the attempt because one of its writes failed: `err` becomes the signal's reason. */
  fail(err: unknown): void {
    if (this.signal.aborted) return;
    this.failure = err;
    this.controller.abort(err);
  }

  /** Stops the timer; call once the attempt has ended. */
  end(): void {
    clearTimeout(this.timer);
  }
}

/**
 * An attempt's progress writes. A report is sent at once (or, while a write
 * is in flight, as soon as its answer came: the call waits for it, as it
 * always did) unless it comes within `lingerMs` of the attempt's previous
 * write: then it is held up to `lingerMs`, and the reports that follow while
 * it is held (or waits) join it. Whatever is sent goes in one write, each
 * report its own event, in the order made; at most one write in flight. A
 * refused write aborts the attempt (`limits.lose`), a failed one too
 * (`limits.fail`); either way nothing more is sent on its own. Once the
 * generator has ended (`close`) nothing is sent on its own either: the
 * processor takes the held reports for its SUCCEEDED write (`take`) or
 * sends them before another end (`flush`).
 */
class ProgressWrites {
  /** The first refusal of a progress write (or of the held STARTED). */
  refusal: TransitionResult | undefined;
  /**
   * The held STARTED was refused by the job's state (not fenced): the job
   * left the live states before the attempt began (cancelled while queued).
   */
  startRefused = false;
  /** Reports made and not sent, in order: held, or waiting for the write in flight. */
  private queue: TransitionInputs["progress"][] = [];
  /** The write on its way, if any; it settles once its answer was handled. */
  private inFlight: Promise<void> | undefined;
  /** Sends the held reports when the linger is over. */
  private timer: NodeJS.Timeout | undefined;
  /** The queue is to go as soon as the write in flight is answered. */
  private due = false;
  /** The generator has ended: nothing is sent on its own. */
  private closed = false;

  constructor(
    private readonly transitions: TransitionApplier,
    private readonly job: TransitionSubject,
    private readonly limits: AttemptLimits,
    private readonly lingerMs: number,
    /** When the attempt's previous write went (first: its STARTED answer), ms. */
    private lastWriteAt: number,
    /**
     * The attempt's STARTED, held: it goes with the next write, first (the
     * reports made meanwhile join it), or on its own once the linger is over.
     */
    private started?: TransitionInputs["started"],
  ) {
    if (started !== undefined) this.timer = setTimeout(lingerOver, lingerMs, this);
  }

  /** The generator's report: resolves once it is queued or sent (see ProgressReporter). */
  async report(input: TransitionInputs["progress"]): Promise<void> {
    this.limits.signal.throwIfAborted();
    this.queue.push(input);
    // Joins the reports that are held or waiting (or the held STARTED).
    if (this.queue.length > 1 || this.started !== undefined) return;
    if (this.lingerMs > 0 && input.at - this.lastWriteAt < this.lingerMs) {
      this.timer = setTimeout(lingerOver, this.lingerMs, this);
      return;
    }
    const inFlight = this.inFlight;
    if (inFlight === undefined) return this.send();
    // As before: the report goes once the write in flight was answered (or
    // never, when that write was refused or failed), and the call waits for it.
    this.due = true;
    await inFlight;
    this.limits.signal.throwIfAborted();
  }

  /** The linger is over: the held writes go now, or once the write in flight is answered. */
  lingered(): void {
    this.timer = undefined;
    if (this.closed || this.limits.signal.aborted) return;
    if (this.started !== undefined) {
      // STARTED first, alone; the reports held with it go once it is answered.
      this.send();
      this.due = true;
      return;
    }
    if (this.queue.length === 0) return;
    if (this.inFlight === undefined) this.send();
    else this.due = true;
  }

  /** The generator has ended: waits for the write in flight (and any it set off) to be answered. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.inFlight !== undefined) await this.inFlight;
  }

  /** Takes the reports not sent (after `close`): they travel with the caller's write. */
  take(): TransitionInputs["progress"][] {
    const held = this.queue;
    this.queue = [];
    return held;
  }

  /** Takes the STARTED if it was not sent (after `close`): it travels with the caller's write. */
  takeStarted(): TransitionInputs["started"] | undefined {
    const started = this.started;
    this.started = undefined;
    return started;
  }

  /**
   * Drops the held STARTED and reports (after `close`) when STARTED was not
   * sent: nothing of the attempt was written. False when it was sent.
   */
  dropStarted(): boolean {
    if (this.started === undefined) return false;
    this.started = undefined;
    this.queue = [];
    return true;
  }

  /**
   * Sends what was not sent (after `close`), the held STARTED first, and
   * waits for the answers; stops at a refusal or a failure.
   */
  async flush(): Promise<void> {
    while (
      (this.started !== undefined || this.queue.length > 0) &&
      !this.limits.lost &&
      this.limits.failure === undefined
    ) {
      this.send();
      await this.close();
    }
  }

  /**
   * Sends the held STARTED alone (the reports held with it go once it is
   * answered: `due`), or else the queued reports in one write.
   */
  private send(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.lastWriteAt = Date.now();
    const started = this.started;
    let write: Promise<TransitionResult>;
    if (started !== undefined) {
      this.started = undefined;
      write = this.transitions.apply(this.job, "started", started);
    } else {
      this.due = false;
      const reports = this.queue;
      this.queue = [];
      const last = reports.length - 1;
      write = this.transitions.apply(
        this.job,
        "progress",
        reports[last] as TransitionInputs["progress"],
        last > 0 ? { before: reports.slice(0, last) } : undefined,
      );
    }
    const sent: Promise<void> = write.then(
      (written) => this.answered(sent, written, started !== undefined),
      (err: unknown) => this.failed(sent, err),
    );
    this.inFlight = sent;
  }

  /**
   * A write's answer: a refusal aborts the attempt (a STARTED refused by the
   * job's state marks it skipped); else what became due meanwhile goes.
   */
  private answered(sent: Promise<void>, written: TransitionResult, started: boolean): void {
    if (this.inFlight === sent) this.inFlight = undefined;
    if (!written.applied) {
      this.refusal ??= written;
      if (started && written.fenced === false) this.startRefused = true;
      this.limits.lose();
    } else if (this.due && this.queue.length > 0 && !this.closed && !this.limits.signal.aborted) {
      this.send();
    }
  }

  /** A write that failed: the attempt aborts with its error (storage errors marked). */
  private failed(sent: Promise<void>, err: unknown): void {
    if (this.inFlight === sent) this.inFlight = undefined;
    this.limits.fail(storageErrorOf(err));
  }
}

/** The timer callback of ProgressWrites: a module function, not a closure per attempt. */
function lingerOver(writes: ProgressWrites): void {
  writes.lingered();
}

/** setTimeout's longest delay; a longer one would fire at once. */
const maxTimerMs = 2 ** 31 - 1;

/** The attempt's timer fired: its run timeout (`timeout`) or else the job's deadline. */
function expire(limits: AttemptLimits, timeout: boolean): void {
  if (limits.signal.aborted) return;
  if (timeout) limits.timedOut = true;
  else limits.deadlinePassed = true;
  limits.controller.abort(new DOMException("The operation timed out.", "TimeoutError"));
}

/**
 * A failure of the worker's own Redis writes during an attempt (not of the
 * generator's downstream calls, whose errors may mention the same socket
 * errors): the attempt failed because storage was away. A progress write
 * that failed so aborts the generator's signal with one of these as reason.
 */
export class AttemptStorageError extends Error {
  override readonly name = "AttemptStorageError";
}

/** A failure of one of the worker's own storage calls, "storage unavailable" ones marked as such. */
function storageErrorOf(err: unknown): unknown {
  return isStorageUnavailable(err)
    ? new AttemptStorageError((err as Error).message, { cause: err })
    : err;
}

/** Runs one of the worker's own storage calls, marking "storage unavailable" failures as such. */
async function ownStorage<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw storageErrorOf(err);
  }
}

/**
 * Exponential backoff with jitter: base * 2^(attempt-1), scaled by a random
 * factor in [0.5, 1] so that jobs failing together do not retry together.
 */
export function backoffDelay(baseMs: number, attempt: number, random: () => number): number {
  const full = baseMs * 2 ** Math.min(attempt - 1, 20);
  return Math.round(full * (0.5 + 0.5 * random()));
}

/** A failure reason safe to show callers: generator errors say what they mean; anything else is logged. */
function describeFailure(err: unknown, phase: string, logger: Logger, jobId: string): string {
  if (err instanceof PermanentReportError || err instanceof TransientReportError)
    return err.message;
  if (err instanceof AttemptStorageError) {
    const message = err.message;
    inJobTrace(jobId, () =>
      logger.warn({ err: message, jobId, phase }, "storage unavailable during attempt"),
    );
    return `storage unavailable in phase ${phase}`;
  }
  inJobTrace(jobId, () =>
    logger.error({ err, jobId, phase }, "report generator failed unexpectedly"),
  );
  return `internal error in phase ${phase}`;
}

/** The phases of an attempt whose trace is not recorded. */
const unrecordedPhases = { enter(_phase: string) {}, end() {}, fail(_err: unknown) {} };

/** The tracer of the worker's own spans. */
const tracer = trace.getTracer("report-jobs-worker");

/**
 * One child span per generator phase of an attempt ("phase started",
 * "phase fetch-data", ...), under the active (BullMQ consumer) span. A phase
 * lasts from the progress report that enters it to the one that leaves it;
 * "completed" covers storing the file and recording success.
 */
function createPhaseSpans(job: Pick<JobView, "id" | "reportType">, attempt: number) {
  const parent = context.active();
  // An unsampled job (no exporter, or the sampler said no) records none of
  // its spans: its phases would only cost a span object each.
  if (trace.getSpan(parent)?.isRecording() !== true) return unrecordedPhases;
  const start = (phase: string): Span =>
    tracer.startSpan(
      `phase ${phase}`,
      {
        attributes: {
          [attrPhase]: phase,
          [attrJobId]: job.id,
          [attrReportType]: job.reportType,
          [attrAttempt]: attempt,
        },
      },
      parent,
    );
  let current: { phase: string; span: Span } | undefined = {
    phase: "started",
    span: start("started"),
  };
  return {
    enter(phase: string) {
      if (current?.phase === phase) return;
      current?.span.end();
      current = { phase, span: start(phase) };
    },
    end() {
      current?.span.end();
      current = undefined;
    },
    fail(err: unknown) {
      if (current === undefined) return;
      const error = err instanceof Error ? err : new Error(String(err));
      current.span.recordException(error);
      current.span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
      current.span.end();
      current = undefined;
    },
  };
}
