/**
 * Redis connections by purpose, configured as BullMQ's production guide says:
 * commands fail fast (no offline queue, one retry) so a caller gets
 * UNAVAILABLE within seconds; BullMQ workers retry forever
 * (maxRetriesPerRequest: null); blocking readers get their own connection.
 */
import { Cluster, type ClusterOptions, type Command, Redis, type RedisOptions } from "ioredis";
import type { Logger } from "pino";

/** A connection: to one Redis, or to a Redis Cluster (REDIS_CLUSTER_NODES). */
export type RedisClient = Redis | Cluster;

/** Where the connections go: one Redis (its URL), or a cluster's seeds with REDIS_URL's credentials. */
export interface RedisTarget {
  url: string;
  /** Seeds of a Redis Cluster; empty or absent: the one Redis at `url`. */
  clusterNodes?: ReadonlyArray<{ host: string; port: number }>;
}

/** Which role a connection plays (also its CLIENT SETNAME suffix). */
export type ConnectionPurpose = "command" | "worker" | "subscriber";

const base: RedisOptions = {
  lazyConnect: false,
  connectTimeout: 2000,
  // Reconnect forever with a capped backoff; command connections still fail
  // fast because they have no offline queue.
  retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
};

/** How long a command of a fail-fast connection may wait for its reply (a hung Redis). */
export const commandTimeoutMs = 3000;

const byPurpose: Record<ConnectionPurpose, RedisOptions> = {
  // Their timeout is wrapSend's, not ioredis' commandTimeout.
  command: { enableOfflineQueue: false, maxRetriesPerRequest: 1 },
  worker: { enableOfflineQueue: true, maxRetriesPerRequest: null },
  subscriber: { enableOfflineQueue: true, maxRetriesPerRequest: null },
};

/**
 * Cluster options by purpose (BullMQ's guide for clusters, ioredis 5.11.1;
 * docs/cluster-notes.md): the node connections inside carry the purpose's
 * per-command options; commands fail fast (no offline queue) while workers
 * and subscribers queue through a failover; subscribers use sharded pub/sub,
 * one connection per master that serves a subscribed channel.
 */
const clusterByPurpose: Record<ConnectionPurpose, ClusterOptions> = {
  command: { enableOfflineQueue: false },
  // 16 redirections x 500 ms outlast a failover of a few seconds.
  worker: { enableOfflineQueue: true, retryDelayOnFailover: 500, retryDelayOnClusterDown: 500 },
  subscriber: {
    enableOfflineQueue: true,
    shardedSubscribers: true,
    retryDelayOnFailover: 500,
    retryDelayOnClusterDown: 500,
  },
};

/** REDIS_URL's credentials, database and TLS, as options for the node connections of a cluster. */
function urlOptions(url: string): RedisOptions {
  try {
    const u = new URL(url);
    return {
      ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
      ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
      ...(u.protocol === "rediss:" ? { tls: {} } : {}),
    };
  } catch {
    return {};
  }
}

/**
 * Opens a connection for one purpose, with an `error` listener that logs
 * (rate-limited) instead of crashing the process. `target` is REDIS_URL, or
 * with cluster seeds, an ioredis Cluster.
 */
export function createRedisConnection(
  target: string,
  purpose: ConnectionPurpose,
  logger: Logger,
  name?: string,
  timeoutMs?: number,
): Redis;
export function createRedisConnection(
  target: string | RedisTarget,
  purpose: ConnectionPurpose,
  logger: Logger,
  name?: string,
  timeoutMs?: number,
): RedisClient;
export function createRedisConnection(
  target: string | RedisTarget,
  purpose: ConnectionPurpose,
  logger: Logger,
  name = "reports",
  timeoutMs = commandTimeoutMs,
): RedisClient {
  const { url, clusterNodes = [] } = typeof target === "string" ? { url: target } : target;
  const redis: RedisClient =
    clusterNodes.length > 0
      ? new Cluster([...clusterNodes], {
          enableReadyCheck: true,
          // A lost seed set is looked for again, capped like a single connection's retries.
          clusterRetryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
          ...clusterByPurpose[purpose],
          redisOptions: {
            ...urlOptions(url),
            connectTimeout: base.connectTimeout,
            maxRetriesPerRequest: byPurpose[purpose].maxRetriesPerRequest,
            connectionName: `${name}:${purpose}`,
          },
        })
      : new Redis(url, {
          ...base,
          ...byPurpose[purpose],
          connectionName: `${name}:${purpose}`,
        });
  wrapSend(redis, purpose === "command" ? timeoutMs : undefined);
  if (!redis.isCluster) holdSubscribesUntilReady(redis as Redis);
  let lastLog = 0;
  redis.on("error", (err: unknown) => {
    const now = Date.now();
    if (now - lastLog < 5000) return;
    lastLog = now;
    logger.warn({ purpose, err: errorText(err) }, "redis connection error");
  });
  return redis;
}

/**
 * Wraps the connection's sendCommand: batched writes, and for command
 * connections a stall-tolerant reply deadline.
 *
 * Batched writes. The commands issued in one iteration of the event loop go
 * out in one socket write: the first command corks the socket, and a
 * setImmediate uncorks it once the iteration's I/O callbacks (and the promise
 * jobs each queued) have run. Commands still go out in order, each with its
 * own reply; only the write syscalls are shared. A worker running 50 jobs
 * issues many commands per turn (the replies to a batch of earlier ones
 * arrive together): this about halves its CPU time per command. An API under
 * load reads many requests in one iteration, one socket callback each: with
 * a process.nextTick (per callback) every request paid a write of its own;
 * per iteration, a submit's API CPU fell by about a fifth and Redis's by a
 * quarter (one write and one read for the batch instead of one per request).
 * A write waits at most for the rest of the iteration's callbacks; pending
 * immediates keep the loop from blocking in its poll for I/O.
 *
 * Deadline (`timeoutMs`). A command whose reply has not come within it fails
 * (Redis hung or unreachable without a reset), like ioredis' `commandTimeout`,
 * but never because this process was busy. After a long synchronous stretch
 * (a burst of thousands of new WatchJob streams, say) Node runs expired
 * timers before the I/O callbacks that deliver replies already waiting in the
 * socket, so `commandTimeout` fails commands Redis answered in time. Here the
 * expired timer gives I/O one more turn of the loop (setImmediate runs after
 * it) before failing the command; and the clock of a batched command starts
 * when its batch is written, not during the synchronous stretch before.
 */
function wrapSend(redis: RedisClient, timeoutMs: number | undefined): void {
  // Cluster.sendCommand(command, stream, node) has more arguments than
  // Redis'; they pass through untouched.
  const send = redis.sendCommand.bind(redis) as (c: Command, ...r: unknown[]) => unknown;
  const startDeadline = (command: Command, ms: number) => {
    const timer = stallTolerantTimeout(ms, () => {
      if (!command.isResolved) command.reject(new Error("Command timed out"));
    });
    command.promise.then(
      () => clearTimeout(timer),
      () => clearTimeout(timer),
    );
  };
  /**
   * One deadline for a written batch, instead of a timer and a reaction per
   * command: a connection's replies come in the order of its commands, so
   * the batch's last command is answered last, and once it is (every command
   * of the batch resolved) the timer goes. On expiry every command of the
   * batch still unanswered fails, as its own timer would have failed it. A
   * batch with a failed command (an error reply) keeps its timer until it
   * expires, which then changes nothing.
   */
  const startBatchDeadline = (batch: Command[], ms: number) => {
    if (batch.length === 1) {
      startDeadline(batch[0] as Command, ms);
      return;
    }
    const timer = stallTolerantTimeout(ms, () => {
      for (const command of batch) {
        if (!command.isResolved) command.reject(new Error("Command timed out"));
      }
    });
    const answered = () => {
      if (batch.every((command) => command.isResolved)) clearTimeout(timer);
    };
    (batch[batch.length - 1] as Command).promise.then(answered, answered);
  };
  let corked: { uncork(): void } | undefined;
  // Commands of the corked batch whose deadline starts once it is written.
  let waiting: Command[] = [];
  const flush = () => {
    const stream = corked;
    corked = undefined;
    stream?.uncork();
    if (timeoutMs === undefined || waiting.length === 0) return;
    const batch = waiting;
    waiting = [];
    startBatchDeadline(batch, timeoutMs);
  };
  (redis as { sendCommand: unknown }).sendCommand = (command: Command, ...rest: unknown[]) => {
    if (corked === undefined && redis.status === "ready") {
      // A Cluster has no stream of its own (one per node): not batched.
      const stream = (redis as unknown as { stream?: { cork(): void; uncork(): void } }).stream;
      if (stream !== undefined) {
        stream.cork();
        corked = stream;
        setImmediate(flush);
      }
    }
    if (timeoutMs !== undefined) {
      if (corked !== undefined) waiting.push(command);
      else startDeadline(command, timeoutMs);
    }
    return send(command, ...rest);
  };
}

/** Commands that put a connection in subscriber mode, and those that take it out (held too, to keep their order). */
const subscriberModeCommands = new Set([
  "subscribe",
  "psubscribe",
  "ssubscribe",
  "unsubscribe",
  "punsubscribe",
  "sunsubscribe",
]);

/**
 * Holds a SUBSCRIBE, PSUBSCRIBE or SSUBSCRIBE sent while the connection is
 * connected but not yet ready, until it is. ioredis 5.11.1 writes these at
 * once in that state (Redis allows them while loading), and the reply puts
 * the connection in subscriber mode before its ready check's INFO is sent:
 * ioredis then refuses its own INFO ("Connection in subscriber mode"),
 * drops the connection and reconnects, and what was published to the
 * channel in between is lost. A worker subscribing to its control channels
 * as it starts did exactly that. An unsubscribe sent meanwhile is held
 * behind them, so it still comes after its subscribe.
 */
function holdSubscribesUntilReady(redis: Redis): void {
  const send = redis.sendCommand.bind(redis) as (c: Command, ...r: unknown[]) => unknown;
  // The subscribes held, sent in their order once the connection is ready
  // (or, closed for good first, sent then for ioredis to reject them).
  let held: Array<() => void> | undefined;
  const release = () => {
    redis.off("ready", release);
    redis.off("end", release);
    const sends = held ?? [];
    held = undefined;
    for (const sendHeld of sends) sendHeld();
  };
  (redis as { sendCommand: unknown }).sendCommand = (command: Command, ...rest: unknown[]) => {
    if (redis.status !== "connect" || !subscriberModeCommands.has(command.name.toLowerCase())) {
      return send(command, ...rest);
    }
    if (held === undefined) {
      held = [];
      redis.once("ready", release);
      redis.once("end", release);
    }
    held.push(() => send(command, ...rest));
    return command.promise;
  };
}

/**
 * setTimeout for a deadline on a Redis reply: when it expires, `onExpiry`
 * runs only after pending I/O callbacks have had their turn (see
 * wrapSend), so a reply that arrived during a stall wins.
 */
export function stallTolerantTimeout(ms: number, onExpiry: () => void): NodeJS.Timeout {
  return setTimeout(() => setImmediate(onExpiry), ms);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Waits until `redis` is ready, or rejects after `timeoutMs`.
 */
export async function waitForReady(redis: RedisClient, timeoutMs: number): Promise<void> {
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
export async function closeRedis(redis: RedisClient): Promise<void> {
  try {
    if (redis.status === "ready") {
      await Promise.race([redis.quit(), new Promise((r) => setTimeout(r, 1000).unref())]);
    }
  } catch {
    // Closing anyway below.
  }
  redis.disconnect(false);
}
