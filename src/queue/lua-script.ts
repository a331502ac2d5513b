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
  };
}
