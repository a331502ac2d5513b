/**
 * The Redis connections of one process: a shared fail-fast command
 * connection, the others opened by purpose as parts need them, and one
 * close() for them all. Also the start-up checks that Redis answers and
 * keeps what BullMQ writes.
 */
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { RedisConfig } from "../config/config.js";
import {
  type ConnectionPurpose,
  closeRedis,
  createRedisConnection,
  waitForReady,
} from "./connections.js";

/** A process's connections. */
export interface ConnectionSet {
  /** The shared command connection (fail fast, no offline queue). */
  readonly commands: Redis;
  /** Opens another connection for `purpose`; close() closes it with the rest. */
  open(purpose: ConnectionPurpose): Redis;
  /**
   * Resolves once the command connection is ready, then warns (in the log) if
   * Redis may evict keys.
   * @throws Error naming host:port (never the password) when Redis does not answer within `timeoutMs`.
   */
  ready(timeoutMs?: number): Promise<void>;
  /** Closes every connection opened here. Never throws. */
  close(): Promise<void>;
}

/** Opens the command connection to `redis.url`. */
export function createConnectionSet(
  redis: Pick<RedisConfig, "url">,
  logger: Logger,
): ConnectionSet {
  const opened: Redis[] = [];
  const open = (purpose: ConnectionPurpose) => {
    const c = createRedisConnection(redis.url, purpose, logger);
    opened.push(c);
    return c;
  };
  const commands = open("command");
  return {
    commands,
    open,
    async ready(timeoutMs = 5000) {
      await waitForReady(commands, timeoutMs).catch(() => {
        throw new Error(`cannot reach Redis at ${redactedTarget(redis.url)} (set REDIS_URL)`);
      });
      await checkEvictionPolicy(commands, logger);
    },
    async close() {
      await Promise.all(opened.map((c) => closeRedis(c)));
    },
  };
}

/** host:port of a Redis URL, without credentials. */
function redactedTarget(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || 6379}`;
  } catch {
    return "(invalid REDIS_URL)";
  }
}

/** BullMQ loses jobs if Redis evicts keys; say so loudly at start. */
async function checkEvictionPolicy(redis: Redis, logger: Logger): Promise<void> {
  try {
    const reply = (await redis.config("GET", "maxmemory-policy")) as string[];
    const policy = reply[1];
    if (policy !== undefined && policy !== "noeviction") {
      logger.error(
        { policy },
        `Redis maxmemory-policy is ${policy}; set it to noeviction or jobs can be lost (CONFIG SET maxmemory-policy noeviction)`,
      );
    }
  } catch {
    logger.warn(
      "could not read Redis maxmemory-policy (CONFIG is disabled); make sure it is noeviction",
    );
  }
}
