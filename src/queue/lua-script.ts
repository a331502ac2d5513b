/**
 * A Lua script run with EVALSHA (one round trip), falling back to EVAL once
 * when the server does not have it cached (after a restart or SCRIPT FLUSH).
 */
import { createHash } from "node:crypto";
import type { Cluster } from "ioredis";
import type { RedisClient } from "./connections.js";
import { encodedCommand, type RespArg } from "./resp-command.js";

/** A loaded-on-demand Lua script. */
export interface LuaScript {
  readonly sha: string;
  /** The script's text (for EVAL after a NOSCRIPT). */
  readonly source: string;
  /** Runs the script; `keys` and `args` are passed as KEYS and ARGV. */
  run(
    redis: RedisClient,
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
    redis: RedisClient,
    keys: readonly string[],
    args: readonly (string | Buffer | number)[],
    follow: () => Promise<T>,
  ): Promise<[unknown, T]>;
}

/** A command sent behind a script in the same pipeline: name and arguments. */
export type FollowingCommand = [name: string, ...args: (string | number)[]];

/**
 * Errors after which a cluster pipeline is sent again: the slot moved, the
 * cluster is failing over, or the connection went. ioredis does not resend a
 * pipeline whose commands failed differently (docs/cluster-notes.md).
 */
const resendable =
  /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN)|Connection is closed|Too many Cluster redirections/;

/** Resends of a pipeline: with beforeResend's pauses, about 4 s, a failover's length. */
const maxResends = 8;

/**
 * Waits before a resend (100 ms more each time, up to 500 ms); on a cluster
 * also refreshes the slot map, which ioredis does not do for a pipeline whose
 * commands failed differently, so the resend goes to the slot's new master.
 */
async function beforeResend(redis: RedisClient, attempt: number): Promise<void> {
  if (redis.isCluster) (redis as Cluster).refreshSlotsCache();
  await new Promise((r) => setTimeout(r, Math.min(500, 100 * (attempt + 1))));
}

/**
 * Runs `script` and `follow` in one pipeline (one write, one round trip; on
 * a cluster all to the master of keys[0]'s slot, the following commands
 * included), with EVAL after a NOSCRIPT. Resolves with every reply; rejects
 * with the first error. Resent, for up to about 4 s, after a redirection or
 * a lost connection: the script must tolerate running twice (submit.lua does).
 */
export async function runInPipeline(
  redis: RedisClient,
  script: { sha: string; source: string },
  keys: readonly string[],
  args: readonly (string | Buffer | number)[],
  follow: readonly FollowingCommand[],
): Promise<unknown[]> {
  let useEval = false;
  for (let attempt = 0; ; attempt++) {
    const pipeline = redis.pipeline();
    if (useEval) pipeline.eval(script.source, keys.length, ...keys, ...args);
    else pipeline.evalsha(script.sha, keys.length, ...keys, ...args);
    for (const [name, ...rest] of follow) pipeline.call(name, ...rest);
    let replies: [Error | null, unknown][];
    try {
      replies = (await pipeline.exec()) ?? [];
    } catch (err) {
      if (attempt < maxResends && err instanceof Error && resendable.test(err.message)) {
        await beforeResend(redis, attempt);
        continue;
      }
      throw err;
    }
    const failed = replies.find(([err]) => err !== null)?.[0];
    if (failed == null) return replies.map(([, value]) => value);
    if (!useEval && failed.message.startsWith("NOSCRIPT")) {
      useEval = true;
      continue;
    }
    if (attempt < maxResends && resendable.test(failed.message)) {
      await beforeResend(redis, attempt);
      continue;
    }
    throw failed;
  }
}

/** The client options LuaScript.run looks at (of a Redis or a Cluster). */
interface Options {
  keyPrefix?: string;
  enableAutoPipelining?: boolean;
  showFriendlyErrorStack?: boolean;
  /** A Cluster's options for its node connections (where its key prefix may be set). */
  redisOptions?: { keyPrefix?: string };
}

/**
 * EVALSHA's arguments (sha, key count, keys, args) in one array of its final
 * length, filled by index: no arrays in between (two script calls per job).
 */
function evalshaArgs(
  sha: string,
  keys: readonly string[],
  args: readonly (string | Buffer | number)[],
): RespArg[] {
  const all = new Array<RespArg>(2 + keys.length + args.length);
  all[0] = sha;
  all[1] = keys.length;
  let at = 2;
  for (let i = 0; i < keys.length; i++) all[at++] = keys[i] as string;
  for (let i = 0; i < args.length; i++) all[at++] = args[i] as RespArg;
  return all;
}

/** Wraps `source` as a LuaScript. */
export function createLuaScript(source: string): LuaScript {
  const sha = createHash("sha1").update(source).digest("hex");
  /** EVALSHA of the script, sent at once (before any command issued after this call). */
  const evalsha = (
    redis: RedisClient,
    keys: readonly string[],
    args: readonly (string | Buffer | number)[],
  ): Promise<unknown> => {
    const options = redis.options as Options;
    // Our own encoding (resp-command.ts), unless ioredis would change the
    // command (key prefix) or send it another way (auto-pipelining).
    const prefixed = Boolean(options.keyPrefix || options.redisOptions?.keyPrefix);
    if (!prefixed && options.enableAutoPipelining !== true) {
      const command = encodedCommand(
        "evalsha",
        evalshaArgs(sha, keys, args),
        options.showFriendlyErrorStack === true ? new Error() : undefined,
      );
      return redis.sendCommand(command) as Promise<unknown>;
    }
    return redis.evalsha(sha, keys.length, ...keys, ...args);
  };
  return {
    sha,
    source,
    async run(redis, keys, args) {
      try {
        return await evalsha(redis, keys, args);
      } catch (err) {
        if (err instanceof Error && err.message.startsWith("NOSCRIPT")) {
          return await redis.eval(source, keys.length, ...keys, ...args);
        }
        throw err;
      }
    },
    async runFollowedBy(redis, keys, args, follow) {
      const ran = evalsha(redis, keys, args);
      const followed = follow();
      // Handled now: it may fail while `ran` is still awaited (an unhandled
      // rejection otherwise); its error still reaches `await followed` below.
      followed.catch(() => undefined);
      try {
        return [await ran, await followed];
      } catch (err) {
        if (!(err instanceof Error && err.message.startsWith("NOSCRIPT"))) throw err;
      }
      const evaluated = redis.eval(source, keys.length, ...keys, ...args);
      const again = follow();
      again.catch(() => undefined);
      return [await evaluated, await again];
    },
  };
}
