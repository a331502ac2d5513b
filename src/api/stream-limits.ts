/**
 * Bounds for the streams callers may open without an API key (gRPC
 * Health/Watch and server reflection are exempt from authentication by
 * default): how many are open at once in this process, and how long each
 * stays open. A stream over its duration ends with UNAVAILABLE, which gRPC
 * clients (health checkers included) answer by opening a new one.
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** Open streams of one kind, with a cap. */
export interface StreamBudget {
  /**
   * Counts one more open stream: returns its release function (idempotent).
   * @throws ConnectError RESOURCE_EXHAUSTED when `max` are open already.
   */
  acquire(): () => void;
  /** Streams open now. */
  readonly open: number;
}

/** Creates a budget of `max` open streams (0: no cap); `what` names them in the error, e.g. "health watches". */
export function createStreamBudget(what: string, max: number): StreamBudget {
  let open = 0;
  return {
    get open() {
      return open;
    },
    acquire() {
      if (max > 0 && open >= max) {
        throw new ConnectError(
          `too many open ${what} on this server (${max}); retry later`,
          Code.ResourceExhausted,
        );
      }
      open++;
      let released = false;
      return () => {
        if (released) return;
        released = true;
        open--;
      };
    },
  };
}

/** A stream's maximum duration. */
export interface StreamDeadline {
  /** True once the duration has passed. */
  readonly expired: boolean;
  /** Resolves when the duration has passed (never rejects). */
  readonly reached: Promise<void>;
  /** The error the stream ends with once `expired`. */
  error(): ConnectError;
  /** Stops the timer (call it when the stream ends). */
  clear(): void;
}

/** Starts the deadline of a stream of `what` (e.g. "health watch") that may last `ms`. */
export function startStreamDeadline(
  what: string,
  ms: number,
  onExpire?: () => void,
): StreamDeadline {
  let expired = false;
  let timer: NodeJS.Timeout | undefined;
  const reached = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      expired = true;
      resolve();
      onExpire?.();
    }, ms);
    timer.unref();
  });
  return {
    get expired() {
      return expired;
    },
    reached,
    error: () =>
      new ConnectError(
        `${what} reached its maximum duration (${ms} ms); open a new one`,
        Code.Unavailable,
      ),
    clear: () => clearTimeout(timer),
  };
}
