/**
 * The orderly stop of a process: named steps, each with a deadline, run last
 * registered first, so a part built on top of another is closed before it
 * (the server before the workers, the workers before Redis, the probe port
 * last of all). A step that throws or hangs is logged and skipped: the rest
 * still runs and the process still exits.
 */
import { setMaxListeners } from "node:events";
import type { Logger } from "pino";

/** How long a step may take unless it says otherwise, in ms. */
export const defaultStepDeadlineMs = 5000;

/** A step of the shutdown. */
export type CloseStep = () => Promise<void> | void;

/** Registered steps and the one close() that runs them. */
export interface Shutdown {
  /**
   * Aborted the moment close() begins, before any step runs: open streams
   * (connect-node's `shutdownSignal`) end with UNAVAILABLE, health turns
   * NOT_SERVING. Many listeners may wait on it (every request's context).
   */
  readonly signal: AbortSignal;
  /** True once close() has been called. */
  readonly closing: boolean;
  /**
   * Registers a step. close() runs steps in the reverse order of
   * registration, each cut off after `deadlineMs`.
   * @throws Error once close() has begun (the step would never run).
   */
  add(name: string, step: CloseStep, deadlineMs?: number): void;
  /**
   * Aborts `signal`, then runs every step, last registered first. A step that
   * throws or outlasts its deadline is logged ("shutdown step failed", with
   * its name) and the next one runs. Idempotent: later calls return the first
   * call's promise. Never rejects.
   */
  close(): Promise<void>;
}

/** What the shutdown needs. */
export interface ShutdownOptions {
  /** Warns about failed and slow steps; names each step at debug level as it begins. */
  logger: Pick<Logger, "warn" | "debug">;
  /** After this long, log once that the shutdown is taking long (it goes on). */
  warnAfterMs?: number;
}

/** Creates an empty shutdown; nothing runs until close(). */
export function createShutdown(options: ShutdownOptions): Shutdown {
  const { logger } = options;
  const steps: Array<{ name: string; step: CloseStep; deadlineMs: number }> = [];
  const stopping = new AbortController();
  setMaxListeners(0, stopping.signal);
  let closed: Promise<void> | undefined;

  const run = async (name: string, step: CloseStep, deadlineMs: number) => {
    let timer: NodeJS.Timeout | undefined;
    logger.debug({ step: name }, "shutdown step");
    try {
      await Promise.race([
        // A step that throws synchronously fails like one that rejects.
        Promise.resolve().then(step),
        new Promise((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`timed out after ${deadlineMs} ms`)),
            deadlineMs,
          );
        }),
      ]);
    } catch (err) {
      logger.warn(
        { err: err instanceof Error ? err.message : String(err), step: name },
        "shutdown step failed",
      );
    } finally {
      clearTimeout(timer);
    }
  };

  return {
    signal: stopping.signal,
    get closing() {
      return closed !== undefined;
    },
    add(name, step, deadlineMs = defaultStepDeadlineMs) {
      if (closed !== undefined) throw new Error(`shutdown has begun: cannot add "${name}"`);
      steps.push({ name, step, deadlineMs });
    },
    close() {
      closed ??= (async () => {
        const slow =
          options.warnAfterMs === undefined
            ? undefined
            : setTimeout(() => logger.warn({}, "shutdown is taking long"), options.warnAfterMs);
        slow?.unref();
        stopping.abort();
        for (const { name, step, deadlineMs } of [...steps].reverse()) {
          await run(name, step, deadlineMs);
        }
        clearTimeout(slow);
      })();
      return closed;
    },
  };
}
