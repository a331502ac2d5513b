/**
 * A stand-in for the service's load on a Redis Cluster until the service
 * runs on one (issue 13): BullMQ queues, one per shard, each with a hash-tag
 * prefix from pickShardTags, jobs added round robin over the shards and
 * processed by one worker per shard, with the ioredis Cluster options BullMQ
 * documents (producers fail fast, workers retry forever). The service's load
 * plugs into the same seam: a `ClusterLoad`, a function of the seed list.
 */
import { performance } from "node:perf_hooks";
import { Queue, Worker } from "bullmq";
import { Cluster } from "ioredis";
import { pickShardTags } from "../../src/queue/shard-tags.js";
import { measureCount } from "../measure.js";
import type { ClusterLoad, LoadOutcome } from "./cluster-cost.js";

/** How much synthetic work. */
export interface SyntheticLoadOptions {
  /** Jobs to add and process. */
  jobs: number;
  /** Queues (shards), spread evenly over the slots. */
  shards: number;
  /** Adds in flight. */
  concurrency: number;
  /** Jobs each shard's worker runs at once. */
  workerConcurrency?: number;
  /** Prefix of the shard tags: another one per run keeps runs apart. */
  tagPrefix?: string;
  /** How long the added jobs may take to end (default 120 s). */
  timeoutMs?: number;
}

const startupNodes = (seeds: string) =>
  seeds.split(",").map((s) => {
    const [host = "127.0.0.1", port = "6379"] = s.trim().split(/:(?=\d+$)/);
    return { host, port: Number(port) };
  });

/** A ClusterLoad that adds `jobs` BullMQ jobs over `shards` hash-tagged queues and waits until all ran. */
export function createSyntheticLoad(options: SyntheticLoadOptions): ClusterLoad {
  const { jobs, shards, concurrency, workerConcurrency = 8, tagPrefix = "bench-" } = options;
  const timeoutMs = options.timeoutMs ?? 120_000;
  return async (seeds: string): Promise<LoadOutcome> => {
    const nodes = startupNodes(seeds);
    const producer = new Cluster(nodes, { enableOfflineQueue: false });
    const consumer = new Cluster(nodes, { redisOptions: { maxRetriesPerRequest: null } });
    for (const c of [producer, consumer]) c.on("error", () => {});
    const tags = pickShardTags(shards, { prefix: tagPrefix });
    const queues: Queue[] = [];
    const workers: Worker[] = [];
    const t0 = performance.now();
    try {
      await new Promise<void>((resolve, reject) => {
        producer.once("ready", () => resolve());
        producer.once("end", () => reject(new Error("the cluster client could not connect")));
      });
      let processed = 0;
      let failed = 0;
      // Known once the adds are over: every added job must end.
      let expected = Number.POSITIVE_INFINITY;
      let allDone: () => void = () => {};
      const done = new Promise<void>((resolve) => {
        allDone = resolve;
      });
      const settle = () => {
        if (processed + failed >= expected) allDone();
      };
      for (const tag of tags) {
        const prefix = `{${tag}}`;
        queues.push(new Queue("reports", { connection: producer, prefix }));
        const worker = new Worker("reports", async () => "ok", {
          connection: consumer,
          prefix,
          concurrency: workerConcurrency,
        });
        worker.on("completed", () => {
          processed++;
          settle();
        });
        worker.on("failed", () => {
          failed++;
          settle();
        });
        worker.on("error", () => {});
        workers.push(worker);
      }
      await Promise.all(workers.map((w) => w.waitUntilReady()));
      const added = await measureCount(
        (seq) => (queues[seq % queues.length] as Queue).add("weekly", { seq }),
        { count: jobs, concurrency },
      );
      expected = added.values.length;
      settle();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        done,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`${expected - processed - failed} jobs did not end in time`)),
            timeoutMs,
          );
        }),
      ]).finally(() => clearTimeout(timer));
      return {
        submitted: added.values.length,
        processed,
        errors: added.errors + failed,
        ...(added.firstError === undefined ? {} : { firstError: added.firstError }),
        seconds: (performance.now() - t0) / 1000,
      };
    } finally {
      await Promise.all(workers.map((w) => w.close()));
      await Promise.all(queues.map((q) => q.close()));
      producer.disconnect();
      consumer.disconnect();
    }
  };
}
