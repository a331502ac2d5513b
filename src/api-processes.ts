/**
 * API_PROCESSES > 1: this process becomes a primary that serves nothing
 * itself and runs that many API processes (node:cluster) on the one port,
 * which the primary hands their connections round-robin, so the API uses
 * more than one core in one container. Each is a whole API process (its own
 * Redis connections, event hub, limits and /metrics on METRICS_PORT + its
 * index), started from the same command line with API_PROCESS_INDEX set.
 *
 * Stopping: SIGTERM or SIGINT to the primary asks every API process to stop
 * (a "stop" message, which each handles as its own SIGTERM: graceful, in
 * order); the primary exits once all have exited, 0 if all exited 0. A
 * second signal kills them. An API process that exits on its own stops the
 * others and the primary exits 1: the orchestrator restarts the container,
 * as it would restart a lone process that died.
 */
import cluster, { type Worker } from "node:cluster";
import type { Logger } from "pino";

/** The message the primary sends an API process to stop it gracefully. */
export const stopMessage = "report-jobs:stop";

/** Runs `count` API processes until they have all exited; resolves with the exit code. */
export function superviseApiProcesses(count: number, logger: Logger): Promise<number> {
  return new Promise((resolve) => {
    const running = new Set<Worker>();
    let stopping = false;
    let failed = false;
    const stopAll = () => {
      stopping = true;
      for (const w of running) {
        if (w.isConnected()) w.send(stopMessage);
        else w.process.kill("SIGTERM");
      }
    };
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        logger.warn({ signal }, "second signal: killing the API processes");
        for (const w of running) w.process.kill("SIGKILL");
        failed = true;
        return;
      }
      logger.info({ signal, processes: running.size }, "stopping the API processes");
      stopAll();
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
    for (let index = 0; index < count; index++) {
      const worker = cluster.fork({ API_PROCESS_INDEX: String(index) });
      running.add(worker);
      worker.on("exit", (code, signal) => {
        running.delete(worker);
        if (code !== 0) failed = true;
        if (!stopping) {
          logger.error(
            { api_process: index, code, signal },
            "an API process exited on its own: stopping the others",
          );
          failed = true;
          stopAll();
        }
        if (running.size === 0) {
          process.off("SIGTERM", onSignal);
          process.off("SIGINT", onSignal);
          resolve(failed ? 1 : 0);
        }
      });
    }
    logger.info({ processes: count }, "started the API processes");
  });
}
