/**
 * BullMQ's Worker, starting each job it fetches before it fetches the next.
 *
 * BullMQ's fetch loop (bullmq 5.81.5, `Worker.mainLoop`) fetches jobs one
 * after the other until it has `concurrency` of them or a fetch comes back
 * empty, and only then starts the ones it got. A job that arrives at an idle
 * worker (woken from its blocking wait on the queue's marker) therefore waited
 * for a second fetch, a moveToActive script and its round trip that find the
 * queue empty, before it started: at a steady trickle, every job. The loop
 * already starts a job at once when the queue has delayed jobs (it keeps
 * the next one's due time, `blockUntil`, and breaks out to process); this
 * worker says the same after every fetch that got a job, with a due time of
 * now. The next fetch (moveToActive) sets `blockUntil` again from Redis's
 * answer, as before, so nothing else of BullMQ's scheduling changes: the
 * same fetches happen, the empty one while the job runs instead of before.
 * Should a later BullMQ no longer read the field, jobs start as they did
 * before (test/integration/prompt-worker.test.ts says so).
 */
import { type Job, type RedisClient, Worker } from "bullmq";

/** The BullMQ Worker's private field this class sets (see above). */
interface FetchLoopState {
  blockUntil: number;
}

/** A BullMQ Worker that starts a fetched job before fetching the next (see above). */
export class PromptWorker<
  DataType = unknown,
  ResultType = unknown,
  NameType extends string = string,
> extends Worker<DataType, ResultType, NameType> {
  protected override async moveToActive(
    client: RedisClient,
    token: string,
    name?: string,
  ): Promise<Job<DataType, ResultType, NameType>> {
    const job = await super.moveToActive(client, token, name);
    const loop = this as unknown as FetchLoopState;
    // Undefined when the queue had nothing; a due time already set (a delayed job's) stays.
    if (job !== undefined && !loop.blockUntil) loop.blockUntil = Date.now();
    return job;
  }
}
