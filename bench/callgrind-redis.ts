/**
 * A private redis-server under valgrind's callgrind, for the benchmarks that
 * count Redis's instructions (transition-instructions.ts,
 * submit-instructions.ts): `zero()` before the measured work, `dump()` after
 * it answers the dump's path, `instructionsOf` its total. Needs valgrind and
 * callgrind_control on the PATH.
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { freePort } from "../src/queue/private-redis.js";

/** The running server. */
export interface CallgrindRedis {
  url: string;
  /** A connection for the benchmark's own setup. */
  admin: Redis;
  /** The folder its dumps go to (left for callgrind_annotate). */
  dumps: string;
  /** Zeroes the counters. */
  zero(): void;
  /** Dumps the counters since the last zero; answers the dump's path. */
  dump(): string;
  stop(): void;
}

/** Starts the server (dumps in a fresh folder named after `name`) and waits until it answers. */
export async function startCallgrindRedis(name: string): Promise<CallgrindRedis> {
  const dumps = mkdtempSync(path.join(tmpdir(), `${name}-`));
  const port = await freePort();
  const server = spawn(
    "valgrind",
    [
      "--tool=callgrind",
      `--callgrind-out-file=${dumps}/callgrind.out`,
      "redis-server",
      "--port",
      String(port),
      "--save",
      "",
      "--appendonly",
      "no",
      "--bind",
      "127.0.0.1",
    ],
    { stdio: "ignore" },
  );
  const url = `redis://127.0.0.1:${port}`;
  // Refused until redis-server listens (slowly, under valgrind): retried.
  const admin = new Redis(url, {
    maxRetriesPerRequest: null,
    retryStrategy: (n) => (n > 400 ? null : 100),
  });
  admin.on("error", () => undefined);
  await admin.ping();
  const control = (flag: "-z" | "-d") =>
    execFileSync("callgrind_control", [flag, String(server.pid)], { stdio: "ignore" });
  return {
    url,
    admin,
    dumps,
    zero: () => control("-z"),
    dump() {
      control("-d");
      const files = readdirSync(dumps)
        .filter((f) => /\.out\.\d+$/.test(f))
        .sort((a, b) => Number(a.split(".").pop()) - Number(b.split(".").pop()));
      return path.join(dumps, files[files.length - 1] ?? "");
    },
    stop() {
      admin.disconnect();
      server.kill();
    },
  };
}

/** The instruction count of a dump. */
export function instructionsOf(dump: string): number {
  return Number(/^(?:summary|totals):\s+(\d+)/m.exec(readFileSync(dump, "utf8"))?.[1]);
}
