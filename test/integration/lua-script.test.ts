/**
 * createLuaScript() on a real Redis: runFollowedBy sends its follow-up
 * command behind the script on the same connection without waiting for the
 * script's reply, and after a NOSCRIPT sends it again behind the EVAL, so
 * the follow-up's answer always comes after the script that ran.
 */
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLuaScript } from "../../src/queue/lua-script.js";
import { openMonitor } from "../helpers/redis-monitor.js";
import { type RedisServerHandle, startRedisServer } from "../helpers/redis-server.js";
import { testPrefix } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

describe("createLuaScript().runFollowedBy()", () => {
  // A server of its own: SCRIPT FLUSH would disturb other files' round-trip counts.
  let server: RedisServerHandle;
  let redis: Redis;
  let monitor: Redis;
  const seen: string[][] = [];
  const prefix = testPrefix();
  beforeAll(async () => {
    server = await startRedisServer();
    redis = new Redis(server.url);
    monitor = await openMonitor(server.url);
    monitor.on("monitor", (_time: string, args: string[], source: string) => {
      if (source !== "lua" && args.some((a) => String(a).startsWith(prefix))) seen.push(args);
    });
  });
  afterAll(async () => {
    monitor?.disconnect();
    redis?.disconnect();
    await server?.stop();
  });

  /** The commands MONITOR saw for keys of this test, up to a marker sent last. */
  async function commandsSeen(): Promise<string[]> {
    const marker = `${prefix}:marker:${seen.length}`;
    await redis.exists(marker);
    await waitFor(() => seen.some((c) => c.includes(marker)), { what: "the marker" });
    const names = seen.filter((c) => !c.includes(marker)).map((c) => String(c[0]).toLowerCase());
    seen.length = 0;
    return names;
  }

  it("sends the follow-up before the script's reply, and answers both", async () => {
    const key = `${prefix}:n`;
    const script = createLuaScript(`return redis.call('INCR', KEYS[1]) -- ${prefix}`);
    await redis.script("LOAD", `return redis.call('INCR', KEYS[1]) -- ${prefix}`);
    await commandsSeen();
    let replied = false;
    let followedBeforeReply: boolean | undefined;
    const [n, after] = await script.runFollowedBy(redis, [key], [], () => {
      followedBeforeReply = !replied;
      return redis.get(key);
    });
    replied = true;
    expect(followedBeforeReply).toBe(true);
    expect(n).toBe(1);
    // The follow-up ran after the script: it sees the script's write.
    expect(after).toBe("1");
    expect(await commandsSeen()).toEqual(["evalsha", "get"]);
  });

  it("follows the EVAL again after a NOSCRIPT, and answers the second follow-up", async () => {
    const key = `${prefix}:m`;
    const script = createLuaScript(`return redis.call('INCR', KEYS[1]) -- ${prefix} again`);
    await redis.script("FLUSH");
    await commandsSeen();
    let follows = 0;
    const [n, after] = await script.runFollowedBy(redis, [key], [], () => {
      follows++;
      return redis.get(key);
    });
    expect(n).toBe(1);
    expect(follows).toBe(2);
    expect(after).toBe("1");
    expect(await commandsSeen()).toEqual(["evalsha", "get", "eval", "get"]);
  });
});

describe("createLuaScript().run()", () => {
  let server: RedisServerHandle;
  let redis: Redis;
  const prefix = testPrefix();
  beforeAll(async () => {
    server = await startRedisServer();
    redis = new Redis(server.url);
  });
  afterAll(async () => {
    redis?.disconnect();
    await server?.stop();
  });

  const echo = createLuaScript(
    `return {KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4]} -- ${prefix}`,
  );

  it("passes strings, numbers and Buffers to the script as sent, and answers as ioredis does", async () => {
    const binary = Buffer.from([0, 1, 0xc3, 0xa9, 255]);
    const keys = [`${prefix}:a`, `${prefix}:é`];
    const args = ["text ü 😀", 42, binary, ""];
    const reply = await echo.run(redis, keys, args);
    expect(reply).toEqual(await redis.eval(echo.source, 2, ...keys, ...args));
    // The bytes the script got, one by one.
    const got = await createLuaScript(`return {string.byte(ARGV[1], 1, -1)} -- ${prefix}`).run(
      redis,
      [],
      [binary],
    );
    expect(got).toEqual([...binary]);
  });

  it("runs the script with EVAL after a NOSCRIPT", async () => {
    await redis.script("FLUSH");
    expect(await echo.run(redis, [`${prefix}:x`, `${prefix}:y`], ["1", 2, "3", "4"])).toEqual([
      `${prefix}:x`,
      `${prefix}:y`,
      "1",
      "2",
      "3",
      "4",
    ]);
    expect(await echo.run(redis, [`${prefix}:x`, `${prefix}:y`], ["5", 6, "7", "8"])).toEqual([
      `${prefix}:x`,
      `${prefix}:y`,
      "5",
      "6",
      "7",
      "8",
    ]);
  });

  it("rejects with Redis's error", async () => {
    const failing = createLuaScript(`return redis.error_reply('ERR nope ${prefix}')`);
    await expect(failing.run(redis, [], [])).rejects.toThrow(`nope ${prefix}`);
  });
});
