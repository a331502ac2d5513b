/**
 * A Lua script run with EVALSHA (one round trip), falling back to EVAL once
 * when the server does not have it cached (after a restart or SCRIPT FLUSH).
 */
import { createHash } from "node:crypto";
import type { Redis } from "ioredis";

/** A loaded-on-demand Lua script. */
export interface LuaScript {
  readonly sha: string;
  /** Runs the script; `keys` and `args` are passed as KEYS and ARGV. */
  run(
    redis: Redis,
    keys: readonly string[],
    args: readonly (string | Buffer | number)[],
  ): Promise<unknown>;
  /**
   * Runs the script with the command `follow` sends right behind it on the
   * same connection, without waiting for the script's reply (no extra round
   * trip): for a command that must come after the script's writes, like
   * WAITAOF. After a NOSCRIPT, `follow` is sent again behind the EVAL, so its
   * answer is always the one that followed the script that ran.
   */
  runFollowedBy<T>(
    redis: Redis,
    keys: readonly string[],
    args: readonly (string | Buffer | number)[],
    follow: () => Promise<T>,
  ): Promise<[unknown, T]>;
}

/** Wraps `source` as a LuaScript. */
export function createLuaScript(source: string): LuaScript {
  const sha = createHash("sha1").update(source).digest("hex");
  return {
    sha,
    async run(redis, keys, args) {
      try {
        return await redis.evalsha(sha, keys.length, ...keys, ...args);
      } catch (err) {
        if (err instanceof Error && err.message.startsWith("NOSCRIPT")) {
          return await redis.eval(source, keys.length, ...keys, ...args);
        }
        throw err;
      }
    },
    async runFollowedBy(redis, keys, args, follow) {
      const ran = redis.evalsha(sha, keys.length, ...keys, ...args);
      const followed = follow();
      try {
        return [await ran, await followed];
      } catch (err) {
        followed.catch(() => undefined);
        if (!(err instanceof Error && err.message.startsWith("NOSCRIPT"))) throw err;
      }
      const evaluated = redis.eval(source, keys.length, ...keys, ...args);
      const again = follow();
      again.catch(() => undefined);
      return [await evaluated, await again];
    },
  };
}
