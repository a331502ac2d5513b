/**
 * What the benchmarks read from outside the processes they measure: CPU time
 * and Redis connections of a process from /proc (Linux), and Redis's own CPU
 * time and client counts from INFO. Nothing here needs the measured process
 * to cooperate.
 */
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import type { Redis } from "ioredis";

let ticksPerSecond: number | undefined;
function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    const out = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout?.trim();
    const n = Number(out);
    ticksPerSecond = Number.isInteger(n) && n > 0 ? n : 100;
  }
  return ticksPerSecond;
}

/**
 * CPU time (user + system, all threads) `pid` has used so far, in
 * microseconds; resolution one clock tick (10 ms on most systems).
 */
export function processCpuUs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may hold spaces) start at field 3.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return ((utime + stime) * 1e6) / clockTicks();
}

/** Resident set size of `pid`, in bytes. */
export function processRssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1] ?? Number.NaN);
  return kb * 1024;
}

/**
 * Established TCP connections from `pid` to `port` on any address: e.g. how
 * many connections a process holds to its Redis.
 */
export function tcpConnectionsTo(pid: number, port: number): number {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m?.[1] !== undefined) inodes.add(m[1]);
    } catch {
      // Closed between readdir and readlink.
    }
  }
  let count = 0;
  for (const table of ["tcp", "tcp6"]) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      // cols: sl local rem st tx:rx tr:when retrnsmt uid timeout inode
      const remotePort = Number.parseInt(cols[2]?.split(":")[1] ?? "", 16);
      if (remotePort === port && cols[3] === "01" && inodes.has(cols[9] ?? "")) count++;
    }
  }
  return count;
}

/** CPU time (user + system) redis-server has used so far, in microseconds. */
export async function redisCpuUs(redis: Redis): Promise<number> {
  const cpu = await redis.info("cpu");
  const user = Number(/used_cpu_user:([\d.]+)/.exec(cpu)?.[1] ?? 0);
  const sys = Number(/used_cpu_sys:([\d.]+)/.exec(cpu)?.[1] ?? 0);
  return (user + sys) * 1e6;
}

/** Script calls (EVALSHA and EVAL, sent by clients; not the commands scripts run) Redis has served so far. */
export async function redisScriptCalls(redis: Redis): Promise<number> {
  const stats = await redis.info("commandstats");
  let calls = 0;
  for (const m of stats.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm)) calls += Number(m[1]);
  return calls;
}

/** Redis's calls and CPU µs per command so far (INFO commandstats; scripts' inner commands included). */
export async function redisCommandStats(
  redis: Redis,
): Promise<Map<string, { calls: number; usec: number }>> {
  const stats = await redis.info("commandstats");
  const out = new Map<string, { calls: number; usec: number }>();
  for (const m of stats.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm))
    out.set(m[1] as string, { calls: Number(m[2]), usec: Number(m[3]) });
  return out;
}

/**
 * The commands that took the most of Redis's CPU between two readings of
 * `redisCommandStats`, per job: "name calls/job µs/job" lines, most first.
 */
export function commandStatsPerJob(
  from: Map<string, { calls: number; usec: number }>,
  to: Map<string, { calls: number; usec: number }>,
  jobs: number,
  top = 12,
): string[] {
  const rows: Array<[string, number, number]> = [];
  for (const [name, b] of to) {
    const a = from.get(name) ?? { calls: 0, usec: 0 };
    if (b.calls > a.calls) rows.push([name, (b.calls - a.calls) / jobs, (b.usec - a.usec) / jobs]);
  }
  rows.sort((x, y) => y[2] - x[2]);
  return rows
    .slice(0, top)
    .map(
      ([name, calls, usec]) => `${name} ${calls.toFixed(2)} calls/job ${usec.toFixed(1)} µs/job`,
    );
}

/** Redis's connected and blocked (BLPOP, XREAD BLOCK, ...) client counts. */
export async function redisClients(redis: Redis): Promise<{ connected: number; blocked: number }> {
  const info = await redis.info("clients");
  return {
    connected: Number(/connected_clients:(\d+)/.exec(info)?.[1] ?? 0),
    blocked: Number(/blocked_clients:(\d+)/.exec(info)?.[1] ?? 0),
  };
}

/** The server's version, e.g. "7.0.15". */
export async function redisVersion(redis: Redis): Promise<string> {
  return /redis_version:(\S+)/.exec(await redis.info("server"))?.[1] ?? "unknown";
}
