/**
 * Runs LoadTasks in the load process (a child of its own, so callers never
 * share an event loop with the service they measure) or inline. One load
 * process serves every task of a run; tasks run one at a time.
 */
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { type LoadTask, type ResultOf, runLoad } from "./load.js";
import type { LoadReply } from "./load-process.js";

/** Runs load tasks. */
export interface LoadRunner {
  run<T extends LoadTask>(task: T): Promise<ResultOf<T>>;
  /** Ends the load process (idempotent). */
  close(): Promise<void>;
}

/** Where the callers run: "process" (a child) or "inline" (this event loop). */
export type CallerPlacement = "process" | "inline";

/** Creates a runner; with "process" it forks the load process now. */
export function createLoadRunner(callers: CallerPlacement): LoadRunner {
  if (callers === "inline") return { run: runLoad, close: async () => {} };
  // The load process runs the TypeScript sources through tsx, also when this
  // process got them some other way (vitest, for the smoke tests).
  const child = fork(fileURLToPath(new URL("./load-process.ts", import.meta.url)), [], {
    execArgv: ["--import", "tsx"],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  let failure: Error | undefined;
  const failed = new Promise<never>((_, reject) => {
    child.once("error", (err) => {
      failure = err;
      reject(err);
    });
    child.once("exit", (code, signal) => {
      failure ??= new Error(`load process exited (${signal ?? code})`);
      reject(failure);
    });
  });
  failed.catch(() => {});
  let queue: Promise<unknown> = Promise.resolve();
  return {
    run<T extends LoadTask>(task: T): Promise<ResultOf<T>> {
      const next = queue.then(async () => {
        if (failure) throw failure;
        const reply = new Promise<LoadReply>((resolve) =>
          child.once("message", (m) => resolve(m as LoadReply)),
        );
        child.send(task);
        const r = await Promise.race([reply, failed]);
        if (!r.ok) throw new Error(`load process: ${r.error}`);
        return r.result as ResultOf<T>;
      });
      queue = next.catch(() => undefined);
      return next;
    },
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      child.kill("SIGTERM");
      await exited;
    },
  };
}
