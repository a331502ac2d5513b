/**
 * An attempt's SUCCEEDED transition applied inside BullMQ's completion of its
 * job (scripts/complete-with-transition.lua): apply-transition.lua and
 * BullMQ's moveToFinished run in one script, so the record, the event log and
 * BullMQ's job change together, and the job's end costs one script call and
 * one round trip instead of two (the SUCCEEDED write, then moveToFinished,
 * which also fetches the worker's next job).
 */
import type { Cluster } from "ioredis";
import { bullmqScript } from "./bullmq-scripts.js";
import type { RedisClient } from "./connections.js";
import { createLuaScript } from "./lua-script.js";
import type { RespArg } from "./resp-command.js";
import { composeScript, loadScriptSource } from "./scripts/load.js";
import type { PreparedTransition, TransitionResult } from "./transition-applier.js";

const finish = bullmqScript("moveToFinished");
const script = createLuaScript(
  composeScript("complete-with-transition", {
    "apply-transition": loadScriptSource("apply-transition"),
    "bullmq-finish": finish.content,
  }),
);

/**
 * Loads the composed script into Redis's script cache (of every master of a
 * cluster). Its first EVALSHA otherwise answers NOSCRIPT and is sent again
 * as EVAL: a first completion whose call is sent into a frozen Redis would
 * then not run when Redis thaws, where the SUCCEEDED write on its own would
 * (apply-transition.lua is loaded by the attempt's STARTED write). After a
 * Redis restart the first completion runs as EVAL again, as every script does.
 */
export async function loadCompletionScript(redis: RedisClient): Promise<void> {
  const nodes = redis.isCluster ? (redis as Cluster).nodes("master") : [redis];
  await Promise.all(nodes.map((node) => node.script("LOAD", script.source)));
}

/** How a completion went. */
export type CompletionReply =
  /** Both applied: `next` is moveToFinished's own reply (0, or the next job it fetched). */
  | { kind: "applied"; result: TransitionResult & { applied: true }; next: unknown }
  /** The transition was refused (`result` says why): nothing changed. */
  | { kind: "refused"; result: TransitionResult & { applied: false } }
  /** BullMQ's moveToFinished refused with its (negative) `code`: nothing of ours changed. */
  | { kind: "bullmq"; code: number };

/**
 * Applies `succeeded` (a prepared SUCCEEDED transition of an attempt, fenced
 * by its lock token) with BullMQ's moveToFinished of the job, called with
 * `bullmq`: the keys and arguments BullMQ's Scripts.moveToCompletedArgs
 * builds, as BullMQ would send them (its key count is moveToFinished's).
 * Emits the transition's metric and log line when applied, as the applier does.
 */
export async function completeWithTransition(
  redis: RedisClient,
  succeeded: PreparedTransition,
  bullmq: readonly unknown[],
): Promise<CompletionReply> {
  const bullKeys = bullmq.slice(0, finish.keys) as string[];
  // As ioredis sends them (utils.toArg): nothing for null and undefined.
  const bullArgs = bullmq
    .slice(finish.keys)
    .map((a) =>
      a === undefined || a === null
        ? ""
        : typeof a === "string" || typeof a === "number" || Buffer.isBuffer(a)
          ? (a as RespArg)
          : String(a),
    );
  const reply = (await script.run(
    redis,
    [...bullKeys, ...succeeded.keys],
    [bullKeys.length, bullArgs.length, ...bullArgs, ...succeeded.args],
  )) as [string, string | number, unknown];
  switch (reply[0]) {
    case "ok":
      return {
        kind: "applied",
        result: succeeded.settle([1, reply[1] as string]) as TransitionResult & { applied: true },
        next: reply[2],
      };
    case "refused":
      return {
        kind: "refused",
        result: succeeded.settle([reply[1] as number, reply[2] as string]) as TransitionResult & {
          applied: false;
        },
      };
    case "bullmq":
      return { kind: "bullmq", code: reply[1] as number };
    default:
      throw new Error(`complete-with-transition answered ${String(reply[0])}`);
  }
}
