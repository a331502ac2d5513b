/**
 * Redis connections by purpose, configured as BullMQ's production guide says:
 * commands fail fast (no offline queue, one retry) so a caller gets
 * UNAVAILABLE within seconds; BullMQ workers retry forever
 * (maxRetriesPerRequest: null); blocking readers get their own connection.
 */
import { Redis, type RedisOptions } from "ioredis";
import type { Logger } from "pino";

/** Which role a connection plays (also its CLIENT SETNAME suffix). */
export type ConnectionPurpose = "command" | "worker" | "subscriber" | "control";

const base: RedisOptions = {
  lazyConnect: false,
  connectTimeout: 2000,
  // Reconnect forever with a capped backoff; command connections still fail
  // fast because they have no offline queue.
  retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
};

const byPurpose: Record<ConnectionPurpose, RedisOptions> = {
  command: { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 3000 },
  control: { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 3000 },
  worker: { enableOfflineQueue: true, maxRetriesPerRequest: null },
  subscriber: { enableOfflineQueue: true, maxRetriesPerRequest: null },
};

/**
 * Opens a connection for one purpose, with an `error` listener that logs
 * (rate-limited) instead of crashing the process.
 */
export function createRedisConnection(
  url: string,
  purpose: ConnectionPurpose,
  logger: Logger,
  name = "reports",
): Redis {
  const redis = new Redis(url, {
    ...base,
    ...byPurpose[purpose],
    connectionName: `${name}:${purpose}`,
  });
  let lastLog = 0;
  redis.on("error", (err: unknown) => {
    const now = Date.now();
    if (now - lastLog < 5000) return;
    lastLog = now;
    logger.warn({ purpose, err: errorText(err) }, "redis connection error");
  });
  return redis;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Waits until `redis` is ready, or rejects after `timeoutMs`.
 */
export async function waitForReady(redis: Redis, timeoutMs: number): Promise<void> {
  if (redis.status === "ready") return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`redis not ready after ${timeoutMs} ms`));
    }, timeoutMs);
    const onReady = () => {
      cleanup();
      resolve();
    };
    const cleanup = () => {
      clearTimeout(timer);
      redis.off("ready", onReady);
    };
    redis.on("ready", onReady);
  });
}

/**
 * Closes a connection: QUIT when connected, disconnect otherwise. Never throws.
 */
export async function closeRedis(redis: Redis): Promise<void> {
  try {
    if (redis.status === "ready") {
      await Promise.race([redis.quit(), new Promise((r) => setTimeout(r, 1000).unref())]);
    }
  } catch {
    // Closing anyway below.
  }
  redis.disconnect(false);
}
