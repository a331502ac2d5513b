/**
 * Service processes for bench:compare: ours (`src/main.ts api|worker`, with
 * the telemetry preload, as `npm start` ships it) and the baseline's, each
 * started as `node --expose-gc --import tsx [...preloads] --import probe.ts
 * <entry> <role>`, optionally under `--cpu-prof`. Their output goes to a log
 * file; CPU time comes from /proc, memory from the probe (see probe.ts).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync, readdirSync, readFileSync, renameSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { processCpuUs } from "../proc-stats.js";
import type { ProbeGc, ProbeMemory, ProbeReply } from "./probe.js";

/** The repository root: every service process runs from there. */
export const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

/** How to start one service process. */
export interface ServiceSpec {
  /** Names the log and profile files, e.g. "ours-api". */
  name: string;
  /** The script, relative to the repository root. */
  entry: string;
  args: string[];
  /** Modules to --import after tsx (and before the probe). */
  preloads: string[];
  env: Record<string, string>;
}

/** Where the processes of a run keep their files. */
export interface ServiceOptions {
  logDir: string;
  /** Run under `node --cpu-prof`, writing `<name>.cpuprofile` here. */
  cpuProfDir?: string;
  /** Worker processes preload bench/heap-sampling.ts, writing `<name>-<pid>.heapprofile` here. */
  heapSamplingDir?: string;
}

/** A running service process. */
export interface ServiceProcess {
  readonly name: string;
  readonly pid: number;
  /** Undefined while it runs. */
  readonly exitCode: number | null | undefined;
  /** CPU time (all threads) used so far, in microseconds. */
  cpuUs(): number;
  /** Memory after a full GC. */
  memory(): Promise<ProbeMemory>;
  /** Heap bytes allocated and collections run since it started. */
  gc(): Promise<ProbeGc>;
  /** The last lines of its output, for error messages. */
  logTail(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

/** Variables passed through from this process; everything else comes from the spec. */
const inherited = ["PATH", "HOME", "TMPDIR", "LANG", "TZ"];

/** Starts the process; it is not ready yet (see waitForService). */
export function startService(spec: ServiceSpec, options: ServiceOptions): ServiceProcess {
  const logFile = path.join(options.logDir, `${spec.name}.log`);
  const fd = openSync(logFile, "a");
  // Every thread of the process writes a profile, tsx's module-hooks thread
  // too: under one --cpu-prof-name the last to exit (that thread) overwrote
  // the main thread's. Each process gets a folder of its own, with Node's
  // names (<pid>.<thread id>), and once it exits the main thread's (thread 0)
  // moves up as <name>.cpuprofile.
  const profileDir =
    options.cpuProfDir === undefined
      ? undefined
      : path.join(path.resolve(options.cpuProfDir), spec.name);
  const profile = profileDir === undefined ? [] : ["--cpu-prof", "--cpu-prof-dir", profileDir];
  const heapDir = spec.name.includes("worker") ? options.heapSamplingDir : undefined;
  const env: Record<string, string> = {};
  if (heapDir !== undefined) env.HEAP_SAMPLING_OUT = path.join(path.resolve(heapDir), spec.name);
  for (const k of inherited) {
    const v = process.env[k];
    if (v !== undefined) env[k] = v;
  }
  const child: ChildProcess = spawn(
    process.execPath,
    [
      ...profile,
      "--expose-gc",
      "--import",
      "tsx",
      ...spec.preloads.flatMap((p) => ["--import", p]),
      ...(heapDir === undefined ? [] : ["--import", "./bench/heap-sampling.ts"]),
      "--import",
      "./bench/compare/probe.ts",
      spec.entry,
      ...spec.args,
    ],
    { cwd: repoRoot, env: { ...env, ...spec.env }, stdio: ["ignore", fd, fd, "ipc"] },
  );
  closeSync(fd);
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${spec.name}: could not start node`);
  let exitCode: number | null | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once("exit", (code, signal) => {
      exitCode = code ?? (signal === null ? null : -1);
      if (profileDir !== undefined) keepMainThreadProfile(profileDir, pid, spec.name);
      resolve();
    });
  });
  const logTail = () => {
    try {
      return readFileSync(logFile, "utf8").slice(-2000);
    } catch {
      return "";
    }
  };
  /** Asks the probe for a reading. */
  const ask = <T>(probe: ProbeReply["probe"]): Promise<T> =>
    new Promise((resolve, reject) => {
      const onMessage = (m: unknown) => {
        if ((m as ProbeReply | undefined)?.probe !== probe) return;
        child.off("message", onMessage);
        clearTimeout(timer);
        resolve(m as T);
      };
      const timer = setTimeout(() => {
        child.off("message", onMessage);
        reject(new Error(`${spec.name}: no ${probe} reading within 30 s`));
      }, 30_000);
      child.on("message", onMessage);
      child.send({ probe });
    });
  let stopping: Promise<void> | undefined;
  return {
    name: spec.name,
    pid,
    get exitCode() {
      return exitCode;
    },
    cpuUs: () => processCpuUs(pid),
    memory: () => ask<ProbeMemory>("memory"),
    gc: () => ask<ProbeGc>("gc"),
    logTail,
    stop(graceMs = 20_000) {
      stopping ??= (async () => {
        if (exitCode !== undefined) return;
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
        await exited;
        clearTimeout(timer);
      })();
      return stopping;
    },
  };
}

/** Moves the main thread's profile of process `pid` out of `dir` as `<name>.cpuprofile` beside it. */
function keepMainThreadProfile(dir: string, pid: number | undefined, name: string): void {
  try {
    const mainThread = new RegExp(`\\.${pid}\\.0\\.\\d+\\.cpuprofile$`);
    const main = readdirSync(dir).find((f) => mainThread.test(f));
    if (main !== undefined)
      renameSync(path.join(dir, main), path.join(dir, `../${name}.cpuprofile`));
  } catch {
    // No profile (the process was killed): nothing to keep.
  }
}

/**
 * Polls `ready` until it answers true; fails at once when the process has
 * exited (with its last output) and after `timeoutMs`.
 */
export async function waitForService(
  proc: ServiceProcess,
  ready: () => Promise<boolean>,
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== undefined) {
      throw new Error(
        `${proc.name} exited (${proc.exitCode}) before it was ready:\n${proc.logTail()}`,
      );
    }
    if (await ready().catch(() => false)) return;
    if (Date.now() > deadline) {
      throw new Error(`${proc.name} was not ready within ${timeoutMs} ms:\n${proc.logTail()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
