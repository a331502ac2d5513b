/**
 * A BullMQ Worker that completes a job together with its attempt's SUCCEEDED
 * transition, in one script (queue/complete-with-transition.ts), where BullMQ
 * would run its moveToFinished alone: one script call and one round trip per
 * job fewer. The attempt hands its SUCCEEDED write over (`handOver`) and
 * returns from the processor function; BullMQ then completes the job as
 * usual (its 'complete' span, its fetch of the next job), and this worker's
 * moveToFinished runs the composed script instead of BullMQ's.
 *
 * The attempt learns the outcome (`Completion.settled`) and ends as it would
 * have after a write of its own; BullMQ completes the job only when the
 * attempt's end says so. A refused SUCCEEDED (a lost lock, another attempt,
 * a job cancelled meanwhile) changes nothing and the job is left to BullMQ,
 * as after a refused write inside the processor function; so is a failed
 * call, whose attempt records its failure first (or finds its SUCCEEDED
 * applied after all).
 */
import { type Job, raw2NextJobData, type Span, WaitingError, Worker } from "bullmq";
import { completeWithTransition } from "../queue/complete-with-transition.js";
import type { RedisClient } from "../queue/connections.js";
import type { PreparedTransition, TransitionResult } from "../queue/transition-applier.js";

/** An attempt's SUCCEEDED write, handed over to BullMQ's completion of its job. */
export interface Completion {
  /** The SUCCEEDED transition, prepared with the attempt's tokens. */
  readonly succeeded: PreparedTransition;
  /**
   * Called once with how the write went: its result, or the error of a call
   * that failed (sent and unanswered: it may have been applied). Resolves
   * once the attempt has ended in a way that lets BullMQ complete the job;
   * rejects with the error BullMQ gets instead (as from a processor function).
   */
  settled(outcome: TransitionResult | Error): Promise<void>;
}

/** The end of an attempt whose completion did not complete the job: BullMQ gets `cause`. */
class AttemptEnded extends Error {
  constructor(override readonly cause: Error) {
    super(cause.message);
  }
}

/** A Worker whose completions can carry their attempt's SUCCEEDED write. */
export class CompletingWorker<D> extends Worker<D> {
  /** The connection the composed script runs on: the one of the attempts' own writes. */
  private commands: RedisClient | undefined;
  /** Handed-over completions, by job id (BullMQ runs one attempt of a job per worker). */
  private readonly completions = new Map<string, Completion>();

  /**
   * Uses `commands` (fail fast, with a reply deadline: the connection of the
   * attempts' other writes) for the composed script, so a SUCCEEDED write
   * fails or times out as it does on its own.
   */
  useConnection(commands: RedisClient): void {
    this.commands = commands;
  }

  /**
   * Hands job `jobId`'s SUCCEEDED write over to its completion: the
   * processor function returns next, and BullMQ's completion of the job runs it.
   */
  handOver(jobId: string, completion: Completion): void {
    this.completions.set(jobId, completion);
  }

  protected override createScripts(): void {
    super.createScripts();
    // This worker's own Scripts (its jobs use it): a completion that carries
    // a SUCCEEDED write runs the composed script instead of moveToFinished.
    // Called from the constructor, before this class's fields exist.
    const scripts = this.scripts;
    const moveToFinished = scripts.moveToFinished.bind(scripts);
    scripts.moveToFinished = (jobId, args) => {
      const completion = this.completions.get(jobId);
      // ARGV[5] of moveToFinished: its target.
      if (completion === undefined || args[scripts.moveToFinishedKeys.length + 4] !== "completed") {
        return moveToFinished(jobId, args);
      }
      this.completions.delete(jobId);
      return this.complete(jobId, args, completion);
    };
  }

  private async complete(
    jobId: string,
    args: unknown[],
    completion: Completion,
  ): Promise<unknown[]> {
    const commands = this.commands;
    if (commands === undefined) throw new Error("CompletingWorker.useConnection was not called");
    const settled = async (outcome: TransitionResult | Error) => {
      try {
        await completion.settled(outcome);
      } catch (err) {
        throw new AttemptEnded(err as Error);
      }
    };
    let reply: Awaited<ReturnType<typeof completeWithTransition>>;
    try {
      reply = await completeWithTransition(commands, completion.succeeded, args);
    } catch (err) {
      await settled(err as Error);
      // Not reached: an attempt whose SUCCEEDED write failed records a
      // failure (or finds it lost) and rejects. Leave the job to BullMQ.
      throw new AttemptEnded(new WaitingError());
    }
    switch (reply.kind) {
      case "applied":
        await settled(reply.result);
        // What BullMQ's Scripts.moveToFinished makes of its reply.
        return raw2NextJobData(reply.next as unknown[]);
      case "refused":
        await settled(reply.result);
        throw new AttemptEnded(new WaitingError());
      case "bullmq": {
        const err = this.scripts.finishedErrors({
          code: reply.code,
          jobId,
          command: "moveToFinished",
          state: "active",
        });
        await settled(err);
        throw new AttemptEnded(new WaitingError());
      }
    }
  }

  protected override async handleCompleted(
    result: unknown,
    job: Job<D>,
    token: string,
    fetchNextCallback?: () => boolean,
    span?: Span,
  ): Promise<Job<D>> {
    try {
      return await super.handleCompleted(result, job, token, fetchNextCallback, span);
    } catch (err) {
      // The attempt ended without completing the job: BullMQ handles its
      // error as one from the processor function (processJob's catch would,
      // after reporting it as a worker error).
      if (err instanceof AttemptEnded) {
        return await this.handleFailed(err.cause, job, token, fetchNextCallback, span);
      }
      throw err;
    } finally {
      // Not completed here (the connection was closing): the attempt must
      // not wait for it. Its SUCCEEDED was not sent.
      const left = job.id === undefined ? undefined : this.completions.get(job.id);
      if (left !== undefined && job.id !== undefined) {
        this.completions.delete(job.id);
        left.settled(new Error("the worker stopped before completing the job")).catch(() => {});
      }
    }
  }
}
