/**
 * Keeps `npm run bench:cluster` working: the figures from samples (pure),
 * the measuring side on the shared cluster under a tiny synthetic load, and
 * one tiny run of the CLI (a 1-master and a 3-master cluster of its own).
 * Asserts the shape of the figures, never timings: this machine is shared.
 */
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { describe, expect, inject, it } from "vitest";
import {
  formatJson,
  formatTable,
  type LoadOutcome,
  measureClusterLoad,
  summarize,
} from "../../bench/cluster/cluster-cost.js";
import { clusterBenchOptions } from "../../bench/cluster/main.js";
import { createSyntheticLoad } from "../../bench/cluster/synthetic-load.js";

const root = fileURLToPath(new URL("../../", import.meta.url));
const load: LoadOutcome = { submitted: 10, processed: 10, errors: 0, seconds: 1 };

describe("summarize()", () => {
  it("takes deltas per master, per job, and the busiest master's share", () => {
    const cost = summarize("two", load, [
      {
        address: "a:1",
        slots: [[0, 8191]],
        before: { keys: 5, commands: 100, cpuUs: 1000 },
        after: { keys: 15, commands: 400, cpuUs: 4000 },
      },
      {
        address: "b:2",
        slots: [[8192, 16383]],
        before: { keys: 0, commands: 0, cpuUs: 0 },
        after: { keys: 10, commands: 100, cpuUs: 1000 },
      },
    ]);
    expect(cost.masters.map((m) => [m.keys, m.keysAdded, m.commands, m.cpuUs])).toEqual([
      [15, 10, 300, 3000],
      [10, 10, 100, 1000],
    ]);
    expect(cost.total).toEqual({ keysAdded: 20, commands: 400, cpuUs: 4000 });
    expect(cost.perJob).toEqual({ keys: 2, commands: 40, cpuUs: 400 });
    expect(cost.busiestShare).toEqual({ commands: 0.75, cpu: 0.75 });
    expect(cost.maxOverMean).toEqual({ commands: 1.5, cpu: 1.5 });
  });

  it("reports zero per job and zero shares when nothing happened", () => {
    const idle = { keys: 0, commands: 0, cpuUs: 0 };
    const cost = summarize("idle", { ...load, processed: 0 }, [
      { address: "a:1", slots: [[0, 16383]], before: idle, after: idle },
    ]);
    expect(cost.perJob).toEqual({ keys: 0, commands: 0, cpuUs: 0 });
    expect(cost.busiestShare).toEqual({ commands: 0, cpu: 0 });
  });
});

describe("clusterBenchOptions()", () => {
  it("has defaults and names every bad setting", () => {
    expect(clusterBenchOptions({})).toEqual({
      jobs: 3000,
      shards: 12,
      concurrency: 32,
      masters: [1, 3],
      load: "service",
    });
    expect(() =>
      clusterBenchOptions({ JOBS: "0", SHARDS: "x", MASTERS: "1,two", LOAD: "other" }),
    ).toThrow(
      "bench:cluster: JOBS must be a positive integer; SHARDS must be a positive integer; MASTERS must be a comma-separated list of positive integers; LOAD must be service, submit or synthetic",
    );
  });
});

describe("measureClusterLoad()", () => {
  it("measures a synthetic BullMQ load on every master of the shared cluster", async () => {
    const seeds = inject("redisClusterNodes");
    const synthetic = createSyntheticLoad({
      jobs: 30,
      shards: 6,
      concurrency: 4,
      tagPrefix: `smoke-${randomUUID().slice(0, 8)}-`,
    });
    const cost = await measureClusterLoad("shared", seeds, synthetic);
    expect(cost.load).toMatchObject({ submitted: 30, processed: 30, errors: 0 });
    expect(cost.masters.map((m) => m.slots)).toEqual([
      [[0, 5460]],
      [[5461, 10922]],
      [[10923, 16383]],
    ]);
    for (const m of cost.masters) {
      // Two of the six shards on each master: each got jobs, so keys and commands.
      expect(m.keysAdded, m.address).toBeGreaterThan(0);
      expect(m.commands, m.address).toBeGreaterThan(0);
      expect(m.cpuUs, m.address).toBeGreaterThanOrEqual(0);
    }
    // Every job ran at least BullMQ's add and its move to completed.
    expect(cost.perJob.commands).toBeGreaterThan(2);
    expect(cost.busiestShare.commands).toBeGreaterThanOrEqual(1 / 3);
    expect(cost.busiestShare.commands).toBeLessThanOrEqual(1);

    const table = formatTable([cost]).split("\n");
    expect(table).toHaveLength(1 + 3 + 1);
    expect(table[4]).toContain("total (30 jobs");
    const json = JSON.parse(formatJson([cost])) as { clusters: { perMaster: unknown[] }[] };
    expect(json.clusters[0]?.perMaster).toHaveLength(3);
  });
});

describe("npm run bench:cluster", () => {
  it("measures a 1-master and a 3-master cluster and prints a table and one JSON line", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "bench/cluster/main.ts"], {
      cwd: root,
      env: { ...process.env, JOBS: "24", SHARDS: "3", CONCURRENCY: "4", MASTERS: "1,3" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    expect(code, err).toBe(0);
    const lines = out.trim().split("\n");
    const result = JSON.parse(lines.at(-1) ?? "") as {
      clusters: { masters: number; load: LoadOutcome; maxOverMean: { commands: number } }[];
    };
    expect(result.clusters.map((c) => c.masters)).toEqual([1, 3]);
    for (const c of result.clusters) expect(c.load.processed).toBe(24);
    expect(result.clusters[0]?.maxOverMean.commands).toBe(1);
    // Header, one row per master, one total per cluster, the JSON line.
    expect(lines).toHaveLength(1 + 1 + 1 + 3 + 1 + 1);
  }, 120_000);
});
