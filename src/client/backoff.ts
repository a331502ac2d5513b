/**
 * Waiting between attempts: exponential backoff with full jitter, and a
 * sleep that an AbortSignal cuts short. No Node-only imports: the browser
 * app uses it too.
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** How long to wait between attempts. */
export interface BackoffPolicy {
  /** Upper bound of the first wait, in ms; doubles per attempt. */
  initialDelayMs: number;
  /** Largest wait, in ms. */
  maxDelayMs: number;
}

/** Full jitter: a random wait up to min(max, initial × 2^(attempt-1)), so callers that failed together spread out. */
export function backoffMs(attempt: number, policy: BackoffPolicy): number {
  const cap = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** (attempt - 1));
  return Math.round(Math.random() * cap);
}

/** Waits `ms`, or rejects with CANCELED as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new ConnectError("operation was aborted", Code.Canceled));
    const onAbort = () => {
      clearTimeout(timer);
      reject(new ConnectError("operation was aborted", Code.Canceled));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
