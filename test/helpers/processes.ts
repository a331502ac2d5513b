/**
 * Runs the real service as a child process (`node --import tsx src/main.ts
 * <mode>`), the way `npm run api|worker|start` does, for end-to-end tests of
 * crashes and signals. Its pino JSON lines are captured so a test can wait
 * for one; every process started here is killed by `killAllServices()` (call
 * it in afterAll) and, as a last resort, when the test process exits or
 * dies (see parentWatchdog).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "../../src/queue/private-redis.js";

/** The repository root: the child's working directory. */
const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

/** One line the child wrote on stdout: its pino JSON, or `{ msg: line }` for anything else. */
export interface LogLine {
  level?: number;
  msg?: string;
  [field: string]: unknown;
}

/** How a child process ended. */
export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A spawned service process. */
export interface ServiceProcess {
  readonly mode: "api" | "worker" | "all";
  readonly pid: number;
  /** The API's base URL (api and all modes; empty for workers). */
  readonly url: string;
  /** The environment it was started with. */
  readonly env: Readonly<Record<string, string>>;
  /** Every stdout line so far, parsed. */
  readonly logs: readonly LogLine[];
  /** Everything written on stderr so far. */
  readonly stderr: string;
  /** Resolves with the first log line (past or future) whose `msg` contains `msg`; rejects on timeout or exit. */
  waitForLog(msg: string, options?: { timeoutMs?: number }): Promise<LogLine>;
  /** Sends `signal` (a no-op once the process has exited). */
  kill(signal: NodeJS.Signals): void;
  /** Settles when the process has exited. */
  readonly exited: Promise<ProcessExit>;
  /** Undefined while it runs. */
  readonly exit: ProcessExit | undefined;
}

const running = new Set<ChildProcess>();

// Last resort when a test file crashes without its afterAll: never leave a
// service behind holding a port or a job lock.
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/**
 * Preloaded into each child: when this test process dies without cleaning up
 * (a crash, or the runner killing it), the child's stdin pipe ends and the
 * orphan kills itself. The pipe is unref'd, so it never keeps a stopping
 * service alive.
 */
const parentWatchdog = `data:text/javascript,${encodeURIComponent(
  "process.stdin.on('end',()=>process.kill(process.pid,'SIGKILL'));" +
    "process.stdin.on('error',()=>{});process.stdin.resume();process.stdin.unref();",
)}`;

/** Environment passed through from the test process; everything else comes from `env`. */
const inherited = ["PATH", "HOME", "TMPDIR", "LANG", "TZ"];

/**
 * Spawns `src/main.ts <mode>` with `env` (typically `testEnv({...})`) and
 * resolves once it has logged that it started. In api/all modes a free PORT
 * is chosen unless `env` has one; ARTIFACT_DIR defaults to a temporary
 * folder removed when the process exits.
 * LOG_LEVEL is raised to at least info, since tests wait on log lines.
 */
export async function spawnService(
  mode: "api" | "worker" | "all",
  env: Record<string, string>,
  options: { startTimeoutMs?: number } = {},
): Promise<ServiceProcess> {
  const runsApi = mode !== "worker";
  const port = env.PORT ?? (runsApi ? String(await freePort()) : "0");
  const ownArtifactDir =
    env.ARTIFACT_DIR === undefined
      ? mkdtempSync(path.join(tmpdir(), "report-jobs-proc-artifacts-"))
      : undefined;
  const level = env.LOG_LEVEL;
  const fullEnv: Record<string, string> = {
    ...Object.fromEntries(
      inherited.flatMap((k) => (process.env[k] === undefined ? [] : [[k, process.env[k]]])),
    ),
    ...env,
    PORT: port,
    LOG_LEVEL: level === "debug" || level === "trace" ? level : "info",
    ...(ownArtifactDir === undefined ? {} : { ARTIFACT_DIR: ownArtifactDir }),
  };

  const child = spawn(
    process.execPath,
    [
      "--import",
      parentWatchdog,
      "--import",
      "tsx",
      "--import",
      "./src/telemetry/preload.ts",
      "src/main.ts",
      mode,
    ],
    { cwd: repoRoot, env: fullEnv, stdio: ["pipe", "pipe", "pipe"] },
  );
  running.add(child);
  child.stdin?.on("error", () => undefined);

  const logs: LogLine[] = [];
  let stderr = "";
  let exit: ProcessExit | undefined;
  const waiters = new Set<{ match: (line: LogLine) => boolean; onExit: () => void }>();
  const exited = new Promise<ProcessExit>((resolve) => {
    child.once("error", (err) => {
      stderr += `spawn failed: ${err.message}\n`;
    });
    // "close" rather than "exit": every line the child wrote has been read.
    child.once("close", (code, signal) => {
      exit = { code, signal };
      running.delete(child);
      if (ownArtifactDir !== undefined) rmSync(ownArtifactDir, { recursive: true, force: true });
      for (const w of waiters) w.onExit();
      resolve(exit);
    });
  });

  let partial = "";
  child.stdout?.setEncoding("utf8");
  child.stdout?.on("data", (chunk: string) => {
    partial += chunk;
    const lines = partial.split("\n");
    partial = lines.pop() ?? "";
    for (const raw of lines) {
      if (raw.trim() === "") continue;
      let line: LogLine;
      try {
        line = JSON.parse(raw) as LogLine;
      } catch {
        line = { msg: raw };
      }
      logs.push(line);
      if (process.env.TEST_LOG_LEVEL !== undefined) process.stdout.write(`[${mode}] ${raw}\n`);
      for (const w of waiters) if (w.match(line)) waiters.delete(w);
    }
  });
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (chunk: string) => {
    stderr += chunk;
  });

  const describe = () => {
    const tail = logs
      .slice(-10)
      .map((l) => JSON.stringify(l))
      .join("\n");
    return `${mode} process ${child.pid}; last logs:\n${tail}\nstderr:\n${stderr.slice(-2000)}`;
  };

  const waitForLog = (msg: string, opts: { timeoutMs?: number } = {}): Promise<LogLine> => {
    const found = logs.find((l) => typeof l.msg === "string" && l.msg.includes(msg));
    if (found !== undefined) return Promise.resolve(found);
    const timeoutMs = opts.timeoutMs ?? 15_000;
    return new Promise<LogLine>((resolve, reject) => {
      const waiter = {
        match: (line: LogLine) => {
          if (typeof line.msg !== "string" || !line.msg.includes(msg)) return false;
          clearTimeout(timer);
          resolve(line);
          return true;
        },
        onExit: () => {
          clearTimeout(timer);
          waiters.delete(waiter);
          reject(
            new Error(`exited (${JSON.stringify(exit)}) before logging "${msg}": ${describe()}`),
          );
        },
      };
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        reject(
          new Error(`timed out after ${timeoutMs} ms waiting for log "${msg}": ${describe()}`),
        );
      }, timeoutMs);
      if (exit !== undefined) return waiter.onExit();
      waiters.add(waiter);
    });
  };

  const service: ServiceProcess = {
    mode,
    pid: child.pid ?? -1,
    url: runsApi ? `http://127.0.0.1:${port}` : "",
    env: fullEnv,
    get logs() {
      return logs;
    },
    get stderr() {
      return stderr;
    },
    waitForLog,
    kill(signal) {
      if (exit === undefined) child.kill(signal);
    },
    exited,
    get exit() {
      return exit;
    },
  };

  try {
    await waitForLog(runsApi ? "api listening" : "worker started", {
      timeoutMs: options.startTimeoutMs ?? 20_000,
    });
    if (mode === "all") await waitForLog("worker started", { timeoutMs: 5000 });
  } catch (err) {
    child.kill("SIGKILL");
    await exited;
    throw err;
  }
  return service;
}

/** SIGKILLs every service process still running and waits for them to exit. */
export async function killAllServices(): Promise<void> {
  await Promise.all(
    [...running].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once("exit", () => resolve());
          child.kill("SIGKILL");
        }),
    ),
  );
}
