/**
 * The measuring side of `npm run bench:cluster`: what a load cost each master
 * of a Redis Cluster, read from outside (INFO and DBSIZE on a connection to
 * each master), so any load can be measured: the synthetic one of
 * synthetic-load.ts today, the service's once it runs on a cluster
 * (issue 13). Per master: keys (DBSIZE), commands (INFO commandstats calls),
 * Redis CPU (INFO cpu, user + system); per job and as each master's share of
 * the cluster's total, with the busiest master's share and its ratio to the
 * mean (1.0 is perfectly balanced).
 */
import { Redis } from "ioredis";
import { redisCpuUs } from "../proc-stats.js";

/** A load put through a cluster: returns once every job it submitted has been processed. */
export type ClusterLoad = (seeds: string) => Promise<LoadOutcome>;

/** What a load did, by its own count. */
export interface LoadOutcome {
  /** Jobs submitted and acknowledged. */
  submitted: number;
  /** Jobs processed to the end. */
  processed: number;
  /** Calls that failed. */
  errors: number;
  firstError?: string;
  /** Wall time of the whole load. */
  seconds: number;
}

/** One master's counters at one moment. */
export interface MasterSample {
  keys: number;
  /** Calls of every command so far, except INFO and DBSIZE (this module's own). */
  commands: number;
  /** Redis CPU time (user + system) so far, in microseconds. */
  cpuUs: number;
}

/** What one master did during the load. */
export interface MasterCost {
  address: string;
  /** Inclusive [first, last] slot ranges it served. */
  slots: [number, number][];
  /** Keys at the end. */
  keys: number;
  keysAdded: number;
  commands: number;
  cpuUs: number;
}

/** One cluster's figures for one load. */
export interface ClusterCost {
  /** A name for the run, e.g. "3 masters". */
  label: string;
  load: LoadOutcome;
  masters: MasterCost[];
  /** Sums over the masters. */
  total: { keysAdded: number; commands: number; cpuUs: number };
  /** Per processed job (0 when none was). */
  perJob: { keys: number; commands: number; cpuUs: number };
  /** The busiest master's fraction of all commands and all Redis CPU (1/masters: even). */
  busiestShare: { commands: number; cpu: number };
  /** The busiest master's commands and CPU over the mean master's (1.0: even). */
  maxOverMean: { commands: number; cpu: number };
}

/** Reads one master's counters. */
export async function sampleMaster(redis: Redis): Promise<MasterSample> {
  const [stats, keys, cpuUs] = await Promise.all([
    redis.info("commandstats"),
    redis.dbsize(),
    redisCpuUs(redis),
  ]);
  let commands = 0;
  for (const m of stats.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    if (m[1] !== "info" && m[1] !== "dbsize") commands += Number(m[2]);
  }
  return { keys, commands, cpuUs };
}

/** Masters serving slots, with their slot ranges, from `CLUSTER NODES` on any node. */
export async function clusterMasters(
  redis: Redis,
): Promise<{ host: string; port: number; slots: [number, number][] }[]> {
  const text = String(await redis.call("CLUSTER", "NODES"));
  return text
    .split("\n")
    .map((l) => l.trim().split(" "))
    .filter((f) => f[2]?.split(",").includes("master") && !f[2].includes("fail") && f.length > 8)
    .map((f) => {
      const [host = "", port = ""] = (f[1]?.split("@")[0] ?? "").split(/:(?=\d+$)/);
      const slots = f
        .slice(8)
        .filter((s) => !s.startsWith("["))
        .map((s): [number, number] => {
          const [a = "", b = a] = s.split("-");
          return [Number(a), Number(b)];
        });
      return { host, port: Number(port), slots };
    })
    .sort((a, b) => (a.slots[0]?.[0] ?? 0) - (b.slots[0]?.[0] ?? 0));
}

/** The cost figures from each master's samples before and after a load. Pure. */
export function summarize(
  label: string,
  load: LoadOutcome,
  masters: {
    address: string;
    slots: [number, number][];
    before: MasterSample;
    after: MasterSample;
  }[],
): ClusterCost {
  const rows: MasterCost[] = masters.map((m) => ({
    address: m.address,
    slots: m.slots,
    keys: m.after.keys,
    keysAdded: m.after.keys - m.before.keys,
    commands: m.after.commands - m.before.commands,
    cpuUs: m.after.cpuUs - m.before.cpuUs,
  }));
  const sum = (f: (r: MasterCost) => number) => rows.reduce((s, r) => s + f(r), 0);
  const total = {
    keysAdded: sum((r) => r.keysAdded),
    commands: sum((r) => r.commands),
    cpuUs: sum((r) => r.cpuUs),
  };
  const per = (n: number) => (load.processed > 0 ? n / load.processed : 0);
  const share = (f: (r: MasterCost) => number, all: number) =>
    all > 0 ? Math.max(...rows.map(f)) / all : 0;
  const busiestShare = {
    commands: share((r) => r.commands, total.commands),
    cpu: share((r) => r.cpuUs, total.cpuUs),
  };
  return {
    label,
    load,
    masters: rows,
    total,
    perJob: { keys: per(total.keysAdded), commands: per(total.commands), cpuUs: per(total.cpuUs) },
    busiestShare,
    maxOverMean: {
      commands: busiestShare.commands * rows.length,
      cpu: busiestShare.cpu * rows.length,
    },
  };
}

/**
 * Samples every master of the cluster at `seeds`, runs `load` against the
 * seeds, samples again, and returns the figures.
 */
export async function measureClusterLoad(
  label: string,
  seeds: string,
  load: ClusterLoad,
): Promise<ClusterCost> {
  const [first = ""] = seeds.split(",");
  const [host = "127.0.0.1", port = "6379"] = first.split(/:(?=\d+$)/);
  const seed = new Redis({ host, port: Number(port), lazyConnect: true });
  seed.on("error", () => {});
  const connections: Redis[] = [seed];
  try {
    await seed.connect();
    const masters = (await clusterMasters(seed)).map((m) => {
      const redis = new Redis({ host: m.host, port: m.port });
      redis.on("error", () => {});
      connections.push(redis);
      return { address: `${m.host}:${m.port}`, slots: m.slots, redis };
    });
    const before = await Promise.all(masters.map((m) => sampleMaster(m.redis)));
    const outcome = await load(seeds);
    const after = await Promise.all(masters.map((m) => sampleMaster(m.redis)));
    return summarize(
      label,
      outcome,
      masters.map((m, i) => ({
        address: m.address,
        slots: m.slots,
        before: before[i] as MasterSample,
        after: after[i] as MasterSample,
      })),
    );
  } finally {
    for (const c of connections) c.disconnect();
  }
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

/** The figures as a table, one row per master and one summary row per cluster. */
export function formatTable(costs: ClusterCost[]): string {
  const header = [
    "cluster",
    "master",
    "slots",
    "keys",
    "+keys",
    "commands",
    "cmd/job",
    "cpu ms",
    "cpu µs/job",
    "cmd share",
    "cpu share",
  ];
  const rows: string[][] = [header];
  for (const c of costs) {
    const per = (n: number) => (c.load.processed > 0 ? n / c.load.processed : 0);
    for (const m of c.masters) {
      rows.push([
        c.label,
        m.address,
        m.slots.map(([a, b]) => `${a}-${b}`).join(","),
        String(m.keys),
        String(m.keysAdded),
        String(m.commands),
        per(m.commands).toFixed(1),
        (m.cpuUs / 1000).toFixed(0),
        per(m.cpuUs).toFixed(0),
        pct(c.total.commands > 0 ? m.commands / c.total.commands : 0),
        pct(c.total.cpuUs > 0 ? m.cpuUs / c.total.cpuUs : 0),
      ]);
    }
    rows.push([
      c.label,
      `total (${c.load.processed} jobs in ${c.load.seconds.toFixed(1)} s, ${c.load.errors} errors)`,
      "",
      "",
      String(c.total.keysAdded),
      String(c.total.commands),
      c.perJob.commands.toFixed(1),
      (c.total.cpuUs / 1000).toFixed(0),
      c.perJob.cpuUs.toFixed(0),
      `max ${c.maxOverMean.commands.toFixed(2)}× mean`,
      `max ${c.maxOverMean.cpu.toFixed(2)}× mean`,
    ]);
  }
  const widths = header.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows
    .map((r) =>
      r
        .map((cell, i) => (i < 3 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/** The figures as one JSON line (for scripts and docs/scaling.md). */
export function formatJson(costs: ClusterCost[]): string {
  return JSON.stringify({
    bench: "cluster",
    clusters: costs.map((c) => ({
      label: c.label,
      masters: c.masters.length,
      load: c.load,
      perMaster: c.masters.map((m) => ({
        address: m.address,
        keys: m.keys,
        keysAdded: m.keysAdded,
        commands: m.commands,
        cpuUs: Math.round(m.cpuUs),
      })),
      perJob: {
        keys: round(c.perJob.keys),
        commands: round(c.perJob.commands),
        cpuUs: round(c.perJob.cpuUs),
      },
      busiestShare: { commands: round(c.busiestShare.commands), cpu: round(c.busiestShare.cpu) },
      maxOverMean: { commands: round(c.maxOverMean.commands), cpu: round(c.maxOverMean.cpu) },
    })),
  });
}

const round = (x: number) => Math.round(x * 1000) / 1000;
