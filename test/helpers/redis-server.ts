/**
 * A private redis-server for tests: its own port and data folder, never the
 * machine's shared one. Fault tests kill and restart it.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { freePort, isListening } from "../../src/queue/private-redis.js";

/** A running (or killed) test redis-server. */
export interface RedisServerHandle {
  readonly port: number;
  readonly url: string;
  readonly dir: string;
  /** Kills the process (SIGKILL by default) and waits for it to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Freezes the server (SIGSTOP): connections stay open, nothing answers. */
  pause(): void;
  /** Thaws a paused server (SIGCONT). */
  resume(): void;
  /** Starts it again on the same port and folder (AOF data is reloaded). */
  restart(): Promise<void>;
  /** Stops it and removes its folder. */
  stop(): Promise<void>;
}

/**
 * Starts redis-server on a free port; `appendonly` turns AOF on (fsync
 * always); `args` adds (or, given later, overrides) server options;
 * `binary` runs another Redis-compatible server.
 */
export async function startRedisServer(
  options: { appendonly?: boolean; args?: string[]; binary?: string } = {},
): Promise<RedisServerHandle> {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), "report-jobs-redis-"));
  const args = [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--dir",
    dir,
    "--save",
    "",
    "--appendonly",
    options.appendonly ? "yes" : "no",
    "--appendfsync",
    "always",
    "--maxmemory-policy",
    "noeviction",
    "--logfile",
    "redis.log",
    "--maxclients",
    "20000",
    ...(options.args ?? []),
  ];
  let child: ChildProcess | undefined;
  const launch = async () => {
    child = spawn(options.binary ?? "redis-server", args, { stdio: "ignore" });
    const deadline = Date.now() + 10_000;
    while (!(await isListening("127.0.0.1", port, 200))) {
      if (child.exitCode !== null || Date.now() > deadline)
        throw new Error(`redis-server on ${port} did not start`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const kill = async (signal: NodeJS.Signals = "SIGKILL") => {
    const c = child;
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once("exit", () => resolve());
      c.kill(signal);
    });
  };
  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    kill,
    pause: () => void child?.kill("SIGSTOP"),
    resume: () => void child?.kill("SIGCONT"),
    restart: launch,
    async stop() {
      await kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
