import { defineConfig } from "vitest/config";

/**
 * Two projects in one run: "default" (everything but test/cluster/, with one
 * private redis-server) and "cluster" (test/cluster/, with one private
 * 3-master Redis Cluster beside a redis-server; tests that kill nodes start
 * their own cluster). A project's globalSetup runs only when some of its files
 * run, so `npx vitest run test/integration/x.test.ts` starts no cluster.
 * `npm run test:cluster` runs the cluster project alone.
 */
export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: "forks",
    reporters: ["default"],
    projects: [
      {
        extends: true,
        test: {
          name: "default",
          include: ["test/**/*.test.ts"],
          exclude: ["test/cluster/**", "**/node_modules/**"],
          globalSetup: ["test/helpers/global-setup.ts"],
        },
      },
      {
        extends: true,
        test: {
          name: "cluster",
          include: ["test/cluster/**/*.test.ts"],
          globalSetup: ["test/helpers/global-setup.ts", "test/helpers/cluster-global-setup.ts"],
          // Cluster starts and failovers take seconds, more on a loaded machine.
          testTimeout: 60_000,
          hookTimeout: 60_000,
          // One file at a time: files that start clusters of their own, kill
          // and pause nodes, would otherwise starve the shared cluster's nodes
          // of CPU past their node timeout (a false failover mid-test).
          fileParallelism: false,
        },
      },
    ],
  },
});
