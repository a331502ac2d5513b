/**
 * The chaos run's processes: one redis-server (AOF on, its own port and
 * folder) and the service's API and worker processes, each started the way
 * `npm run api|worker` starts them (`src/main.ts api|worker` under tsx), with
 * its output appended to a log file. Each can be killed, frozen, thawed and
 * started again on the same port; an exit nobody asked for is recorded (a
 * service must not die of a fault) and the process is started again.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, mkdirSync, type WriteStream } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { isListening } from "../../src/queue/private-redis.js";

/** The repository root: the services' working directory. */
const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

/**
 * Preloaded into each child: when the chaos process dies without cleaning up,
 * the child's stdin pipe ends and the orphan kills itself.
 */
const parentWatchdog = `data:text/javascript,${encodeURIComponent(
  "process.stdin.on('end',()=>process.kill(process.pid,'SIGKILL'));" +
    "process.stdin.on('error',()=>{});process.stdin.resume();process.stdin.unref();",
)}`;

/** An exit of a process that no fault caused. */
export interface UnexpectedExit {
  name: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The end of what it wrote on stderr. */
  stderrTail: string;
}

/** One managed process: a slot that is running, frozen or down. */
export interface ManagedProcess {
  readonly name: string;
  /** Running (possibly frozen). */
  readonly up: boolean;
  readonly frozen: boolean;
  /** Starts it (again); resolves once it is ready, retrying starts that fail until `timeoutMs`. */
  start(timeoutMs?: number): Promise<void>;
  /** Sends `signal` and waits for the exit (SIGKILL: at once; SIGTERM: an orderly stop). */
  kill(signal: "SIGKILL" | "SIGTERM"): Promise<void>;
  /** SIGSTOP. */
  freeze(): void;
  /** SIGCONT. */
  thaw(): void;
}

interface ChildSpec {
  name: string;
  command: string;
  args: string[];
  env?: Record<string, string>;
  logFile: string;
  /** Resolves true once the child is ready to serve (it is known to be running). */
  ready(child: ChildProcess, output: { text: string }): Promise<boolean>;
  onUnexpectedExit(exit: UnexpectedExit): void;
}

function manage(spec: ChildSpec): ManagedProcess {
  let child: ChildProcess | undefined;
  let frozen = false;
  let expectingExit = false;
  let log: WriteStream | undefined;
  let starting: Promise<void> | undefined;
  const openLog = () => {
    log ??= createWriteStream(spec.logFile, { flags: "a" });
    return log;
  };
  const running = () => child !== undefined && child.exitCode === null && child.signalCode === null;

  const launch = async (): Promise<boolean> => {
    const out = openLog();
    out.write(`--- ${new Date().toISOString()} start ${spec.name}\n`);
    const output = { text: "" };
    let stderrTail = "";
    const c = spawn(spec.command, spec.args, {
      cwd: repoRoot,
      env: spec.env,
      stdio: ["pipe", "pipe", "pipe"],
    });
    child = c;
    frozen = false;
    // Until it is ready, an exit is a failed start (start() retries it), not a finding.
    expectingExit = true;
    c.stdin?.on("error", () => undefined);
    c.stdout?.setEncoding("utf8");
    c.stderr?.setEncoding("utf8");
    c.stdout?.on("data", (chunk: string) => {
      out.write(chunk);
      if (output.text.length < 1_000_000) output.text += chunk;
    });
    c.stderr?.on("data", (chunk: string) => {
      out.write(chunk);
      stderrTail = (stderrTail + chunk).slice(-2000);
    });
    c.once("exit", (code, signal) => {
      out.write(
        `--- ${new Date().toISOString()} exit ${spec.name} code=${code} signal=${signal}\n`,
      );
      if (!expectingExit && child === c) {
        spec.onUnexpectedExit({ name: spec.name, code, signal, stderrTail });
      }
    });
    const ok = await spec.ready(c, output);
    if (ok && child === c) expectingExit = false;
    // Started but not ready: this start failed (Redis down at the preflight, a port race).
    if (!ok && c.exitCode === null && c.signalCode === null) {
      expectingExit = true;
      await killChild(c, "SIGKILL");
    }
    return ok;
  };

  return {
    name: spec.name,
    get up() {
      return running();
    },
    get frozen() {
      return frozen;
    },
    start(timeoutMs = 60_000) {
      // One start at a time: two fault loops (or a loop and a crash) never launch two children.
      starting ??= (async () => {
        try {
          if (running()) return;
          const deadline = Date.now() + timeoutMs;
          for (;;) {
            if (await launch()) return;
            if (Date.now() > deadline)
              throw new Error(`${spec.name} did not start within ${timeoutMs} ms`);
            await new Promise((r) => setTimeout(r, 500));
          }
        } finally {
          starting = undefined;
        }
      })();
      return starting;
    },
    async kill(signal) {
      const c = child;
      if (c === undefined || !running()) return;
      expectingExit = true;
      if (frozen && signal !== "SIGKILL") c.kill("SIGCONT");
      frozen = false;
      await killChild(c, signal);
    },
    freeze() {
      if (!running() || frozen) return;
      frozen = true;
      child?.kill("SIGSTOP");
    },
    thaw() {
      if (!frozen) return;
      frozen = false;
      child?.kill("SIGCONT");
    },
  };
}

function killChild(c: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  return new Promise<void>((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) return resolve();
    c.once("exit", () => resolve());
    c.kill(signal);
  });
}

/** Resolves true once `output` (the child's stdout so far) contains `marker`, false on exit or timeout. */
function waitForOutput(
  c: ChildProcess,
  output: { text: string },
  marker: string,
  timeoutMs: number,
): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearInterval(poll);
      c.off("exit", onExit);
      resolve(ok);
    };
    const onExit = () => done(output.text.includes(marker));
    const started = Date.now();
    const poll = setInterval(() => {
      if (output.text.includes(marker)) done(true);
      else if (Date.now() - started > timeoutMs) done(false);
    }, 50);
    c.once("exit", onExit);
  });
}

/** The redis-server of a run. */
export interface RedisProcess extends ManagedProcess {
  readonly port: number;
  readonly url: string;
  readonly dir: string;
}

/**
 * A redis-server on `port` with its data in `dir`: AOF on with `appendfsync`,
 * no RDB snapshots, so a restart reloads exactly what the AOF holds.
 */
export function createRedisProcess(options: {
  port: number;
  dir: string;
  appendfsync: "always" | "everysec";
  onUnexpectedExit(exit: UnexpectedExit): void;
}): RedisProcess {
  const { port, dir } = options;
  mkdirSync(dir, { recursive: true });
  const proc = manage({
    name: "redis",
    command: "redis-server",
    args: [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--dir",
      dir,
      "--save",
      "",
      "--appendonly",
      "yes",
      "--appendfsync",
      options.appendfsync,
      "--maxmemory-policy",
      "noeviction",
      "--logfile",
      "redis.log",
    ],
    logFile: path.join(dir, "stdout.log"),
    async ready(c) {
      const deadline = Date.now() + 15_000;
      while (Date.now() < deadline) {
        if (c.exitCode !== null || c.signalCode !== null) return false;
        if (await isListening("127.0.0.1", port, 200)) return true;
        await new Promise((r) => setTimeout(r, 25));
      }
      return false;
    },
    onUnexpectedExit: options.onUnexpectedExit,
  });
  return Object.assign(proc, { port, url: `redis://127.0.0.1:${port}`, dir });
}

/** An API or worker process of the service. */
export interface ServiceProcess extends ManagedProcess {
  readonly mode: "api" | "worker";
  /** The API's base URL ("" for a worker). */
  readonly url: string;
}

/** A service process in `mode` with `env` (PORT included for an API), logging to `logFile`. */
export function createServiceProcess(options: {
  name: string;
  mode: "api" | "worker";
  env: Record<string, string>;
  logFile: string;
  onUnexpectedExit(exit: UnexpectedExit): void;
}): ServiceProcess {
  const { mode, env } = options;
  const proc = manage({
    name: options.name,
    command: process.execPath,
    args: [
      "--import",
      parentWatchdog,
      "--import",
      "tsx",
      "--import",
      "./src/telemetry/preload.ts",
      "src/main.ts",
      mode,
    ],
    env,
    logFile: options.logFile,
    ready: (c, output) =>
      waitForOutput(c, output, mode === "api" ? "api listening" : "worker started", 45_000),
    onUnexpectedExit: options.onUnexpectedExit,
  });
  return Object.assign(proc, {
    mode,
    url: mode === "api" ? `http://127.0.0.1:${env.PORT}` : "",
  });
}
