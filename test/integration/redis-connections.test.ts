/**
 * Command connections fail fast when Redis hangs, but never because this
 * process was too busy to read a reply Redis sent in time; every connection
 * writes the commands of one iteration of the event loop in one write.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRedisConnection, waitForReady } from "../../src/queue/connections.js";
import { createLogger } from "../../src/telemetry/logger.js";
import { type RedisServerHandle, startRedisServer } from "../helpers/redis-server.js";
import { waitFor } from "../helpers/wait-for.js";

const logger = createLogger("silent");

/** Keeps the event loop busy for `ms`, as a burst of synchronous work does. */
function blockEventLoop(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // busy: no timer, no I/O callback can run
  }
}

describe("createRedisConnection()", () => {
  let redis: RedisServerHandle;
  beforeAll(async () => {
    redis = await startRedisServer();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it.each(["command", "worker"] as const)(
    "writes the commands of one iteration of the event loop together (%s)",
    async (purpose) => {
      const conn = createRedisConnection(redis.url, purpose, logger, "test");
      try {
        await waitForReady(conn, 5000);
        const stream = (conn as unknown as { stream: { writableCorked: number } }).stream;
        const replies = [conn.set("k", "1"), conn.incr("k"), conn.get("k")];
        // Held until the iteration's callbacks have run, then written at once.
        expect(stream.writableCorked).toBe(1);
        await expect(Promise.all(replies)).resolves.toEqual(["OK", 2, "2"]);
        expect(stream.writableCorked).toBe(0);
      } finally {
        conn.disconnect();
      }
    },
  );
});

describe("createRedisConnection() for subscribers", () => {
  let redis: RedisServerHandle;
  beforeAll(async () => {
    redis = await startRedisServer();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it("keeps a subscription made before the connection is ready, with no reconnect and no lost message", async () => {
    const conn = createRedisConnection(redis.url, "subscriber", logger, "test");
    const publisher = createRedisConnection(redis.url, "command", logger, "test");
    const seen: string[] = [];
    const reconnects: string[] = [];
    conn.on("reconnecting", () => reconnects.push("reconnecting"));
    conn.on("smessage", (_channel: string, message: string) => seen.push(message));
    try {
      // Connected, its ready check not yet answered: where ioredis wrote the
      // SSUBSCRIBE at once and then refused its own INFO.
      await new Promise((resolve) => conn.once("connect", resolve));
      expect(conn.status).toBe("connect");
      const listeners = [conn.listenerCount("ready"), conn.listenerCount("end")];
      const channels = Array.from({ length: 12 }, (_, i) => `ch${i}`);
      const subscribed = channels.map((c) => conn.ssubscribe(c));
      // Held behind its subscribe: "gone" ends unsubscribed, not subscribed.
      subscribed.push(conn.ssubscribe("gone"), conn.sunsubscribe("gone"));
      // One pair of listeners for all the subscribes held (no MaxListenersExceeded).
      expect([conn.listenerCount("ready"), conn.listenerCount("end")]).toEqual(
        listeners.map((n) => n + 1),
      );
      await Promise.all(subscribed);
      expect(conn.status).toBe("ready");
      // Released: gone from "end" too.
      expect(conn.listenerCount("end")).toBe(listeners[1]);
      await waitForReady(publisher, 5000);
      for (const m of ["a", "b", "c"]) {
        for (const c of [...channels, "gone"]) await publisher.spublish(c, `${c}:${m}`);
      }
      // Published last, so delivered last: once it is here, so is everything before it.
      await publisher.spublish("ch0", "end");
      await waitFor(() => seen.includes("end"), { what: "the last message" });
      expect(seen).toEqual([
        ...["a", "b", "c"].flatMap((m) => channels.map((c) => `${c}:${m}`)),
        "end",
      ]);
      expect(reconnects).toEqual([]);
    } finally {
      conn.disconnect();
      publisher.disconnect();
    }
  });

  it("rejects a subscribe held before the connection was ready when it is closed for good", async () => {
    const conn = createRedisConnection(redis.url, "subscriber", logger, "test");
    await new Promise((resolve) => conn.once("connect", resolve));
    expect(conn.status).toBe("connect");
    const ends = conn.listenerCount("end");
    const subscribed = conn.ssubscribe("gone");
    conn.disconnect();
    await expect(subscribed).rejects.toThrow(/Connection is closed/);
    expect(conn.listenerCount("end")).toBe(ends);
  });
});

describe("createRedisConnection() for commands", () => {
  let redis: RedisServerHandle;
  beforeAll(async () => {
    redis = await startRedisServer();
  });
  afterAll(async () => {
    redis?.resume();
    await redis?.stop();
  });

  it("does not time out a command answered while the event loop was blocked", async () => {
    const conn = createRedisConnection(redis.url, "command", logger, "test", 200);
    try {
      await waitForReady(conn, 5000);
      const reply = conn.ping();
      // Written (at the end of the turn), then answered while the loop is blocked.
      await new Promise((r) => setImmediate(r));
      blockEventLoop(600);
      await expect(reply).resolves.toBe("PONG");
      // And the connection is still good afterwards.
      await expect(conn.ping()).resolves.toBe("PONG");
    } finally {
      conn.disconnect();
    }
  });

  it("fails a command within its timeout when Redis hangs, and recovers after", async () => {
    const conn = createRedisConnection(redis.url, "command", logger, "test", 300);
    try {
      await waitForReady(conn, 5000);
      redis.pause();
      const began = performance.now();
      await expect(conn.ping()).rejects.toThrow(/timed out/);
      expect(performance.now() - began).toBeLessThan(2000);
      // A batch (one write, one deadline): every command of it fails.
      const batch = [conn.ping(), conn.get("k"), conn.ping()];
      for (const reply of batch) await expect(reply).rejects.toThrow(/timed out/);
      redis.resume();
      await expect(conn.ping()).resolves.toBe("PONG");
    } finally {
      redis.resume();
      conn.disconnect();
    }
  });
});
