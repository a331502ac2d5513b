/**
 * The callers of the benchmark: one measurement of one kind of call, with
 * its own clients, built and closed here. Runs in the load thread (see
 * load-worker.ts) or inline, so the same code drives every measurement.
 */
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { ReportType } from "../gen/reports/v1/job_pb.js";
import { ReportService } from "../gen/reports/v1/report_service_pb.js";
import { queueNameFor } from "../src/queue/keys.js";
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
      const transport =
        task.protocol === "grpc"
          ? createGrpcTransport({ baseUrl: task.baseUrl })
          : createConnectTransport({ baseUrl: task.baseUrl, httpVersion: "1.1" });
      const client = createClient(ReportService, transport);
      return measure(async (seq) => {
        const res = await client.submitReport({
          idempotencyKey: `${task.keyPrefix}-${seq}`,
          userId: "bench-user",
          reportType: ReportType.WEEKLY,
          filters: benchFilters,
        });
        if (res.deduplicated) throw new Error("a unique idempotency key was deduplicated");
      }, options);
    }
    case "get-job": {
      const client = createClient(
        ReportService,
        createConnectTransport({ baseUrl: task.baseUrl, httpVersion: "1.1", useHttpGet: true }),
      );
      return measure(async () => {
        const { job } = await client.getJob({ jobId: task.jobId });
        if (job?.id !== task.jobId) throw new Error("GetJob returned another job");
      }, options);
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
