/**
 * One private 3-master Redis Cluster (no replicas) for the cluster project's
 * whole run; tests isolate themselves by hash tag and key prefix, and never
 * kill its nodes: fault tests start their own cluster with replicas.
 */
import type { TestProject } from "vitest/node";
import { startRedisCluster } from "./redis-cluster.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** The shared cluster's nodes as `host:port,...` (the REDIS_CLUSTER_NODES format). */
    redisClusterNodes: string;
    /** How long the shared cluster took to start, in ms. */
    redisClusterStartMs: number;
  }
}

export async function setup(project: TestProject) {
  // A node timeout above the test default: a node starved of CPU on a loaded
  // machine must not be failed over under the tests that share this cluster.
  const cluster = await startRedisCluster({ masters: 3, nodeTimeoutMs: 5000 });
  project.provide("redisClusterNodes", cluster.seeds);
  project.provide("redisClusterStartMs", cluster.startMs);
  return async () => {
    await cluster.stop();
  };
}
