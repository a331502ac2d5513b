/**
 * `npm run bench:cluster` (issue 13 item 7): puts the same load through a
 * 1-master and a 3-master Redis Cluster (private redis-servers, one cluster
 * at a time) and prints, per master, keys, commands and Redis CPU in total
 * and per job, and the busiest master's share of all Redis work, as a table
 * and one JSON line.
 *
 * The load is the service's own (service-load.ts: an API and a worker with
 * REDIS_CLUSTER_NODES and QUEUE_SHARDS=SHARDS, jobs submitted over gRPC and
 * run to SUCCEEDED); LOAD=synthetic puts plain BullMQ queues over the same
 * shard tags instead (synthetic-load.ts), BullMQ's own floor.
 *
 *   JOBS=3000 SHARDS=12 CONCURRENCY=32 MASTERS=1,3 npm run bench:cluster
 *
 * On this shared 2-core machine the wall time says nothing about scaling;
 * the commands and CPU per job and their spread over the masters do.
 */
import { startRedisCluster } from "../../test/helpers/redis-cluster.js";
import { type ClusterCost, formatJson, formatTable, measureClusterLoad } from "./cluster-cost.js";
import { createServiceLoad } from "./service-load.js";
import { createSyntheticLoad } from "./synthetic-load.js";

/** The run's settings, from the environment. */
export interface ClusterBenchOptions {
  jobs: number;
  shards: number;
  concurrency: number;
  /** Cluster sizes to measure, in order. */
  masters: number[];
  /** LOAD: the service's (default), the service's submits alone (no worker), or plain BullMQ's. */
  load: "service" | "submit" | "synthetic";
}

/** Reads the settings; throws one line naming every bad one. */
export function clusterBenchOptions(env: NodeJS.ProcessEnv): ClusterBenchOptions {
  const problems: string[] = [];
  const int = (name: string, fallback: number) => {
    const raw = env[name];
    const n = raw === undefined || raw === "" ? fallback : Number(raw);
    if (!Number.isInteger(n) || n < 1) problems.push(`${name} must be a positive integer`);
    return n;
  };
  const options = {
    jobs: int("JOBS", 3000),
    shards: int("SHARDS", 12),
    concurrency: int("CONCURRENCY", 32),
    masters: (env.MASTERS ?? "1,3").split(",").map(Number),
    load: (env.LOAD ?? "service") as ClusterBenchOptions["load"],
  };
  if (options.masters.some((m) => !Number.isInteger(m) || m < 1)) {
    problems.push("MASTERS must be a comma-separated list of positive integers");
  }
  if (!["service", "submit", "synthetic"].includes(options.load)) {
    problems.push("LOAD must be service, submit or synthetic");
  }
  if (problems.length > 0) throw new Error(`bench:cluster: ${problems.join("; ")}`);
  return options;
}

/** Measures the load on each cluster size, one cluster at a time. */
export async function runClusterBench(options: ClusterBenchOptions): Promise<ClusterCost[]> {
  const costs: ClusterCost[] = [];
  for (const masters of options.masters) {
    const cluster = await startRedisCluster({ masters });
    try {
      const load =
        options.load !== "synthetic"
          ? createServiceLoad({
              jobs: options.jobs,
              shards: options.shards,
              concurrency: options.concurrency,
              submitOnly: options.load === "submit",
            })
          : createSyntheticLoad({
              jobs: options.jobs,
              shards: options.shards,
              concurrency: options.concurrency,
            });
      const label = `${masters} master${masters === 1 ? "" : "s"}, ${options.shards} shards, ${options.load}`;
      costs.push(await measureClusterLoad(label, cluster.seeds, load));
    } finally {
      await cluster.stop();
    }
  }
  return costs;
}

const isMain = process.argv[1]?.endsWith("bench/cluster/main.ts") ?? false;
if (isMain) {
  const costs = await runClusterBench(clusterBenchOptions(process.env));
  process.stdout.write(`${formatTable(costs)}\n${formatJson(costs)}\n`);
  const failed = costs.filter((c) => c.load.errors > 0 || c.load.processed < c.load.submitted);
  if (failed.length > 0) {
    process.stderr.write(
      `bench:cluster: ${failed.map((c) => `${c.label}: ${c.load.errors} errors (${c.load.firstError})`).join("; ")}\n`,
    );
    process.exitCode = 1;
  }
}
