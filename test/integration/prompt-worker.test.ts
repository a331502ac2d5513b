/**
 * PromptWorker on a real Redis: a job that reaches an idle worker starts
 * before the worker fetches again (BullMQ's own Worker, in the same state,
 * fetches once more first, which this file also shows, so a BullMQ upgrade
 * that changes either is noticed), and jobs, delayed ones too, still all run.
 */
import { type Job, Queue, type RedisClient, Worker } from "bullmq";
import { Redis } from "ioredis";
import { afterEach, describe, expect, inject, it } from "vitest";
import { PromptWorker } from "../../src/worker/prompt-worker.js";
import { testPrefix } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

type Step = "fetch" | "got" | "empty" | `run ${string}`;

/** `Base` with every fetch (moveToActive) and every start of a job written down, in order. */
function recording(Base: typeof Worker, steps: Step[]) {
  return class Recording extends Base {
    protected override async moveToActive(
      client: RedisClient,
      token: string,
      name?: string,
    ): Promise<Job> {
      steps.push("fetch");
      const job = await super.moveToActive(client, token, name);
      steps.push(job === undefined ? "empty" : "got");
      return job;
    }
  };
}

describe("PromptWorker", () => {
  const closing: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const close of closing.splice(0).reverse()) await close();
  });

  /**
   * A queue and a recording worker of class `Base` at `concurrency`, idle:
   * its first fetch found nothing, then a wake-up without a job (the queue's
   * marker, as a job that another fetch took leaves it) found nothing either.
   * BullMQ's fetch loop alternates between two ways of waiting while idle;
   * after the wake-up it is in the one where it fetches again before
   * starting what it got.
   */
  async function idleWorker(Base: typeof Worker, concurrency: number) {
    const connection = { url: inject("redisUrl"), maxRetriesPerRequest: null };
    const prefix = testPrefix();
    const queue = new Queue("prompt", { connection, prefix });
    closing.push(() => queue.close());
    const steps: Step[] = [];
    const done: string[] = [];
    const Recording = recording(Base, steps);
    const worker = new Recording(
      "prompt",
      async (job: Job) => {
        steps.push(`run ${job.name}`);
        done.push(job.name);
      },
      { connection, prefix, concurrency },
    );
    closing.push(() => worker.close());
    await waitFor(() => steps.includes("empty"), { what: "the worker's first, empty fetch" });
    const redis = new Redis(connection.url);
    closing.push(async () => redis.disconnect());
    steps.length = 0;
    await redis.zadd(worker.keys.marker as string, 0, "0");
    await waitFor(() => steps.includes("empty"), { what: "the fetch after the wake-up" });
    steps.length = 0;
    return { queue, steps, done };
  }

  it("starts a job that reaches an idle worker before fetching again", async () => {
    const { queue, steps } = await idleWorker(PromptWorker, 10);
    await queue.add("a", {});
    await waitFor(() => steps.includes("run a") && steps.includes("empty"), {
      what: "the job to start and the next fetch",
    });
    expect(steps.slice(0, 5)).toEqual(["fetch", "got", "run a", "fetch", "empty"]);
  });

  it("(BullMQ's own Worker fetches again first)", async () => {
    const { queue, steps } = await idleWorker(Worker, 10);
    await queue.add("a", {});
    await waitFor(() => steps.includes("run a") && steps.includes("empty"), {
      what: "the job to start and the next fetch",
    });
    expect(steps.slice(0, 5)).toEqual(["fetch", "got", "fetch", "empty", "run a"]);
  });

  it("runs every job of a burst, and delayed jobs, at concurrency 1 and 3", async () => {
    for (const concurrency of [1, 3]) {
      const { queue, done } = await idleWorker(PromptWorker, concurrency);
      const names = Array.from({ length: 20 }, (_, i) => `j${i}`);
      await queue.addBulk(names.map((name) => ({ name, data: {} })));
      await queue.add("later", {}, { delay: 200 });
      await queue.add("last", {});
      await waitFor(() => done.length === names.length + 2, {
        what: () => `every job to run (${done.length} so far)`,
      });
      expect([...done].sort()).toEqual([...names, "last", "later"].sort());
    }
  });
});
