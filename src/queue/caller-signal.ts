/**
 * How queue/ honours the AbortSignal of the call it works for (an RPC's
 * `ctx.signal`, STYLE.md rule 5). A command already sent to Redis cannot be
 * recalled: Redis runs it whatever the caller does next. So a method given a
 * `signal`:
 *
 * 1. checks it before issuing each Redis command or script
 *    (`throwIfAborted`) and then throws the signal's reason: nothing is sent
 *    for a caller that has gone;
 * 2. ends its waits and polls at once when it aborts (`pause`): CancelJob's
 *    wait for a running job to stop, RetryJob's wait for a worker to let go;
 * 3. does NOT race a command's reply against it: the reply comes within the
 *    command connection's own timeout, and a listener per command would cost
 *    on the hot path (issue #11 measured AbortSignal/EventTarget work as a
 *    real cost), so the check is a plain `aborted` read.
 *
 * An aborted call rejects with the signal's reason as it is: connect's
 * CANCELED or DEADLINE_EXCEEDED ConnectError for an RPC, or a DOMException
 * AbortError/TimeoutError, which api/error-map.ts maps to the same codes.
 */

/**
 * What a method that only checks before it sends (rule 1) needs of its
 * caller's signal: an AbortSignal, or a stand-in that reads the call's state
 * when asked (the lean unary route's calls, api/lean-unary.ts: no
 * AbortController and no listeners per call).
 */
export type CallerSignal = Pick<AbortSignal, "aborted" | "reason" | "throwIfAborted">;

/** Throws `signal`'s reason when it has aborted; nothing otherwise (no listener). */
export function throwIfAborted(signal: CallerSignal | undefined): void {
  if (signal?.aborted) signal.throwIfAborted();
}

/** Resolves after `ms`, or rejects with `signal`'s reason as soon as it aborts. */
export function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
