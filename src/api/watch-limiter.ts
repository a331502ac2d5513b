/**
 * Per-tenant cap on concurrent watches (WatchJob streams, and any other
 * long-lived stream that calls it). Counted per API process: N replicas allow
 * up to N × the cap in total, which bounds what one tenant can hold on each
 * process without a Redis round trip per watch.
 */
import { BackpressureError } from "../domain/errors.js";

/** Counts open watches per tenant. */
export interface WatchLimiter {
  /**
   * Takes a slot for `tenant`; call the returned function exactly once when the watch ends.
   * @throws BackpressureError (RESOURCE_EXHAUSTED) when the tenant is at its cap.
   */
  acquire(tenant: string): () => void;
}

/** Creates a limiter allowing `max` concurrent watches per tenant (0: no cap). */
export function createWatchLimiter(max: number, retryAfterMs = 1000): WatchLimiter {
  const open = new Map<string, number>();
  return {
    acquire(tenant) {
      const n = open.get(tenant) ?? 0;
      if (max > 0 && n >= max) {
        throw new BackpressureError(
          `too many open watches for this tenant (at most ${max} per server); close some first`,
          retryAfterMs,
        );
      }
      open.set(tenant, n + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const left = (open.get(tenant) ?? 1) - 1;
        if (left <= 0) open.delete(tenant);
        else open.set(tenant, left);
      };
    },
  };
}
