/**
 * Watches whether Redis answers, for the gRPC health service and /readyz.
 * Connection events flip the state at once (a dropped socket is known
 * before any PING could tell); a periodic PING with a short deadline catches
 * what events cannot (a Redis that accepts connections but hangs).
 */

import type { Logger } from "pino";
import type { RedisClient } from "./connections.js";
import { stallTolerantTimeout } from "./connections.js";

/** Whether storage answers now, and a way to hear about changes. */
export interface StorageHealth {
  /** True while the last PING answered within its deadline and the connection is up. */
  readonly healthy: boolean;
  /** Calls `listener` on every change; returns the unsubscribe function. */
  subscribe(listener: (healthy: boolean) => void): () => void;
  /** Checks once (awaited), then keeps checking every interval. */
  start(): Promise<void>;
  /** Stops checking and drops listeners. Idempotent. */
  close(): void;
}

/** What the monitor needs. */
export interface StorageHealthDeps {
  /** A fail-fast command connection (no offline queue), so PING rejects while disconnected. */
  redis: RedisClient;
  /** Time between PINGs, in ms. */
  intervalMs: number;
  /** How long a PING may take before storage counts as down, in ms. */
  timeoutMs: number;
  logger: Logger;
}

/** Creates the monitor; it is idle until `start()`. */
export function createStorageHealth(deps: StorageHealthDeps): StorageHealth {
  const { redis, logger } = deps;
  const listeners = new Set<(healthy: boolean) => void>();
  let healthy = redis.status === "ready";
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  // Only the newest PING may set the state: a slow answer to an old one must
  // not override a newer failure.
  let sequence = 0;
  // The first time Redis answers is the normal start, not a recovery.
  let wasDown = false;

  const set = (next: boolean, reason: string) => {
    if (closed || next === healthy) return;
    healthy = next;
    if (next && wasDown) logger.info("storage is reachable again: serving");
    else if (next) logger.debug("storage is reachable: serving");
    wasDown ||= !next;
    if (!next) logger.warn({ reason }, "storage is unreachable: not serving");
    for (const listener of [...listeners]) {
      try {
        listener(next);
      } catch (err) {
        logger.warn(
          { err: err instanceof Error ? err.message : String(err) },
          "health listener failed",
        );
      }
    }
  };

  const check = async () => {
    const mine = ++sequence;
    let deadline: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        redis.ping(),
        new Promise((_, reject) => {
          deadline = stallTolerantTimeout(deps.timeoutMs, () =>
            reject(new Error("PING timed out")),
          );
        }),
      ]);
      if (mine === sequence) set(true, "ping");
    } catch (err) {
      if (mine === sequence) set(false, err instanceof Error ? err.message : String(err));
    } finally {
      clearTimeout(deadline);
    }
  };

  const onDown = () => set(false, "connection closed");
  const onReady = () => {
    if (!closed) void check();
  };

  return {
    get healthy() {
      return healthy;
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },
    async start() {
      if (closed || timer !== undefined) return;
      redis.on("close", onDown);
      redis.on("end", onDown);
      redis.on("ready", onReady);
      timer = setInterval(() => void check(), deps.intervalMs);
      timer.unref();
      await check();
    },
    close() {
      if (closed) return;
      closed = true;
      clearInterval(timer);
      redis.off("close", onDown);
      redis.off("end", onDown);
      redis.off("ready", onReady);
      listeners.clear();
    },
  };
}
