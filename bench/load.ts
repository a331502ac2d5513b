/**
 * The callers of the benchmark: one measurement of one kind of call, with
 * its own clients (lean protocol clients, see lean-clients.ts), built and
 * closed here. Runs in the load thread (see
 * load-worker.ts) or inline, so the same code drives every measurement.
 */
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { queueNameFor } from "../src/queue/keys.js";
import { connectGetJob, connectJsonSubmit, grpcSubmit } from "./lean-clients.js";
import { type Measurement, type MeasureOptions, measure } from "./measure.js";

/** The JSON filters every submitted job (and every raw job) carries. */
export const benchFilters = { region: "eu", format: "csv" };

/** One measurement to run; plain data, so it can cross to a worker thread. */
export type LoadTask = MeasureOptions &
  (
    | {
        /** SubmitReport with a unique idempotency key per call (every call creates a job). */
        kind: "submit";
        protocol: "connect-json" | "grpc";
        baseUrl: string;
        /** Makes the keys unique across runs and measurements. */
        keyPrefix: string;
      }
    | {
        /** GetJob of one job, as a Connect GET (JSON over HTTP/1.1). */
        kind: "get-job";
        baseUrl: string;
        jobId: string;
      }
    | {
        /** BullMQ `queue.add` on its own Queue, straight to Redis. */
        kind: "raw-add";
        redisUrl: string;
        bullPrefix: string;
      }
  );

/** Runs `task` and returns what it measured. */
export async function runLoad(task: LoadTask): Promise<Measurement> {
  const options: MeasureOptions = {
    concurrency: task.concurrency,
    durationMs: task.durationMs,
    warmupMs: task.warmupMs,
  };
  switch (task.kind) {
    case "submit": {
      const client =
        task.protocol === "grpc"
          ? grpcSubmit(task.baseUrl, benchFilters)
          : connectJsonSubmit(task.baseUrl, task.concurrency, benchFilters);
      try {
        return await measure((seq) => client.call(`${task.keyPrefix}-${seq}`), options);
      } finally {
        client.close();
      }
    }
    case "get-job": {
      const client = connectGetJob(task.baseUrl, task.concurrency, task.jobId);
      try {
        return await measure(() => client.call(), options);
      } finally {
        client.close();
      }
    }
    case "raw-add": {
      const redis = new Redis(task.redisUrl, { maxRetriesPerRequest: null });
      const queue = new Queue(queueNameFor("weekly"), {
        connection: redis,
        prefix: task.bullPrefix,
      });
      try {
        return await measure(
          (seq) =>
            queue.add(
              "weekly",
              {
                tenant: "default",
                userId: "bench-user",
                reportType: "weekly",
                filters: benchFilters,
                seq,
              },
              {
                attempts: 5,
                backoff: { type: "exponential", delay: 1000 },
                removeOnComplete: { age: 24 * 3600 },
                removeOnFail: { age: 7 * 24 * 3600 },
              },
            ),
          options,
        );
      } finally {
        await queue.close();
        redis.disconnect();
      }
    }
  }
}
