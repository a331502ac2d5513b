/**
 * Redis connections by purpose, configured as BullMQ's production guide says:
 * commands fail fast (no offline queue, one retry) so a caller gets
 * UNAVAILABLE within seconds; BullMQ workers retry forever
 * (maxRetriesPerRequest: null); blocking readers get their own connection.
 */
import { type Command, Redis, type RedisOptions } from "ioredis";
import type { Logger } from "pino";

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
 * Opens a connection for one purpose, with an `error` listener that logs
 * (rate-limited) instead of crashing the process.
 */
export function createRedisConnection(
  url: string,
  purpose: ConnectionPurpose,
  logger: Logger,
  name = "reports",
  timeoutMs = commandTimeoutMs,
): Redis {
  const redis = new Redis(url, {
    ...base,
    ...byPurpose[purpose],
    connectionName: `${name}:${purpose}`,
  });
  wrapSend(redis, purpose === "command" ? timeoutMs : undefined);
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
 * Batched writes. The commands issued in one turn of the event loop go out
 * in one socket write: the first command of a turn corks the socket, and a
 * process.nextTick uncorks it once the turn's synchronous code (and the
 * promise jobs queued before it) has run. Commands still go out in order,
 * each with its own reply; only the write syscalls are shared. A worker
 * running 50 jobs issues many commands per turn (the replies to a batch of
 * earlier ones arrive together): this about halves its CPU time per command.
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
function wrapSend(redis: Redis, timeoutMs: number | undefined): void {
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
    for (const command of batch) startDeadline(command, timeoutMs);
  };
  redis.sendCommand = ((command: Command, ...rest: unknown[]) => {
    if (corked === undefined && redis.status === "ready") {
      const stream = (redis as unknown as { stream?: { cork(): void; uncork(): void } }).stream;
      if (stream !== undefined) {
        stream.cork();
        corked = stream;
        process.nextTick(flush);
      }
    }
    if (timeoutMs !== undefined) {
      if (corked !== undefined) waiting.push(command);
      else startDeadline(command, timeoutMs);
    }
    return send(command, ...rest);
  }) as Redis["sendCommand"];
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
