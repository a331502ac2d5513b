/**
 * The Redis connections of one process: a shared fail-fast command
 * connection, the others opened by purpose as parts need them, and one
 * close() for them all. Also the start-up checks that Redis answers, is
 * new enough, and keeps what it acknowledged (redis-preflight.ts).
 */
import type { Cluster } from "ioredis";
import type { Logger } from "pino";
import type { RedisConfig } from "../config/config.js";
import {
  type ConnectionPurpose,
  closeRedis,
  createRedisConnection,
  type RedisClient,
  waitForReady,
} from "./connections.js";
import { judgeRedis, readRedisFacts } from "./redis-preflight.js";

/** A process's connections. */
export interface ConnectionSet {
  /** The shared command connection (fail fast, no offline queue). */
  readonly commands: RedisClient;
  /** Whether the connections go to a Redis Cluster (REDIS_CLUSTER_NODES). */
  readonly cluster: boolean;
  /** Opens another connection for `purpose`; close() closes it with the rest. */
  open(purpose: ConnectionPurpose): RedisClient;
  /**
   * Resolves once the command connection is ready and Redis passed the
   * start-up check: logs one line on its version and persistence, and loudly
   * what can lose jobs (AOF off, eviction) or could not be checked.
   * @throws Error naming host:port (never the password) when Redis does not answer within `timeoutMs`;
   *   Error with one line when Redis is older than 7.0, or lacks what REQUIRE_AOF or SUBMIT_WAITAOF need.
   */
  ready(timeoutMs?: number): Promise<void>;
  /** Closes every connection opened here. Never throws. */
  close(): Promise<void>;
}

/** Opens the command connection to `redis.url`, or to the cluster of `redis.clusterNodes`. */
export function createConnectionSet(
  redis: Pick<RedisConfig, "url" | "requireAof" | "submitWaitAof"> &
    Partial<Pick<RedisConfig, "clusterNodes">>,
  logger: Logger,
): ConnectionSet {
  const opened: RedisClient[] = [];
  const cluster = (redis.clusterNodes?.length ?? 0) > 0;
  const open = (purpose: ConnectionPurpose) => {
    const c = createRedisConnection(
      { url: redis.url, clusterNodes: redis.clusterNodes },
      purpose,
      logger,
    );
    opened.push(c);
    return c;
  };
  const commands = open("command");
  return {
    commands,
    cluster,
    open,
    async ready(timeoutMs = 5000) {
      await waitForReady(commands, timeoutMs).catch(() => {
        throw new Error(
          cluster
            ? `cannot reach the Redis Cluster at ${redis.clusterNodes?.map((n) => `${n.host}:${n.port}`).join(",")} (set REDIS_CLUSTER_NODES)`
            : `cannot reach Redis at ${redactedTarget(redis.url)} (set REDIS_URL)`,
        );
      });
      // On a cluster every master is checked: each holds acknowledged jobs.
      const targets: Array<{ node: RedisClient; name?: string }> = cluster
        ? (commands as Cluster).nodes("master").map((node) => ({
            node,
            name: `${node.options.host}:${node.options.port}`,
          }))
        : [{ node: commands }];
      const refusals: string[] = [];
      for (const { node, name } of targets) {
        const facts = await readRedisFacts(node, { probeWaitAof: redis.submitWaitAof > 0 });
        for (const { level, line } of judgeRedis(facts, redis)) {
          const said = name === undefined ? line : `${name}: ${line}`;
          if (level === "refuse") refusals.push(said);
          else logger[level](said);
        }
      }
      if (refusals.length > 0) throw new Error(refusals.join("; "));
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
