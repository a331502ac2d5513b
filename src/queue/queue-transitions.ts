/**
 * A job transition together with BullMQ's side of it, in one script
 * (scripts/transition-with-queue.lua): apply-transition.lua, BullMQ's
 * removeJob and BullMQ's add script run inside it, so our record and log and
 * BullMQ's job change together or not at all. CancelJob, RetryJob and the
 * reconciler's repairs go through it; no acknowledged call can leave a job
 * whose record and BullMQ disagree in a way nothing repairs.
 */
import { Job, type Queue } from "bullmq";
import type { JobState, JobView, ReportType } from "../domain/job.js";
import type { AppliedTransitionName, TransitionInputs } from "../domain/job-transitions.js";
import { bullmqScript, captureAdd, removeJobCall, type ScriptCall } from "./bullmq-scripts.js";
import type { RedisClient } from "./connections.js";
import type { Keys } from "./keys.js";
import { createLuaScript, type LuaScript } from "./lua-script.js";
import type { QueuesOf } from "./report-queues.js";
import { composeScript, loadScriptSource } from "./scripts/load.js";
import type { BullJobSpec } from "./submitter.js";
import type { TransitionApplier } from "./transition-applier.js";

/** What to do to BullMQ's job of a job whose record changes. */
export interface QueueChange<N extends AppliedTransitionName> {
  /** The job as read (its id, tenant, type and idempotency record name the keys). */
  job: JobView;
  /** The transition applied to the record and log. */
  name: N;
  input: TransitionInputs[N];
  /**
   * BullMQ's job: "no" leaves it; "unlocked" removes it unless a worker holds
   * it (that worker then finds the new state and lets it go); "required"
   * removes it, refusing (`busy`) while a worker holds it.
   */
  remove: "no" | "unlocked" | "required";
  /** Adds BullMQ's job anew under the job's id, after the removal. */
  add?: { spec: BullJobSpec; at: number; metadata?: string };
  /** Refuses (`moved`) unless the job's score in the live index is still this. */
  score?: string;
  /** Refuses (`moved`) unless BullMQ's job is still absent, or still finished at `finishedOn` (ms). */
  bull?: "absent" | { finishedOn: string };
}

/** How a change went; only `applied` changed anything. */
export type QueueChangeResult =
  | { kind: "applied"; eventId: string }
  /** The job is not in a state the transition leaves (`undefined`: no record). */
  | { kind: "state"; state?: JobState }
  /** The job or BullMQ's job changed since it was looked at (`score`, `bull`). */
  | { kind: "moved" }
  /** A worker holds BullMQ's job (remove "required"). */
  | { kind: "busy" };

/** Applies transitions with BullMQ's side. */
export interface QueueTransitions {
  change<N extends AppliedTransitionName>(change: QueueChange<N>): Promise<QueueChangeResult>;
}

/** The composed script of each BullMQ add script ("" for none). */
const composed = new Map<string, LuaScript>();
function scriptFor(addScript: string): LuaScript {
  let script = composed.get(addScript);
  if (script === undefined) {
    script = createLuaScript(
      composeScript("transition-with-queue", {
        "apply-transition": loadScriptSource("apply-transition"),
        "bullmq-remove": bullmqScript("removeJob").content,
        "bullmq-add": addScript === "" ? "return nil" : bullmqScript(addScript).content,
      }),
    );
    composed.set(addScript, script);
  }
  return script;
}

/** Creates the transitions-with-queue over a command connection. */
export function createQueueTransitions(deps: {
  redis: RedisClient;
  queues: Record<ReportType, Queue>;
  keys: Keys;
  /** The queues of other shards than `queues`' (keys.of(id) names a job's shard). */
  queuesOf?: QueuesOf;
  transitions: TransitionApplier;
}): QueueTransitions {
  const { redis, queues, keys: anyKeys, transitions } = deps;
  return {
    async change(c) {
      // The job's own shard: every key of the script shares its slot.
      const keys = anyKeys.of(c.job.id);
      const queue = (deps.queuesOf?.(keys) ?? queues)[c.job.reportType];
      const transition = transitions.prepare(c.job, c.name, c.input);
      const remove = removeJobCall(queue, c.job.id);
      let add: (ScriptCall & { script: string }) | undefined;
      if (c.add !== undefined) {
        const { spec, at, metadata } = c.add;
        const opts = {
          ...spec.opts,
          timestamp: at,
          ...(metadata ? { telemetry: { metadata } } : {}),
        };
        add = await captureAdd(new Job(queue, spec.name, spec.data, opts, c.job.id));
      }
      const params = {
        jobId: c.job.id,
        from: transition.from.join(","),
        score: c.score,
        bull: c.bull === undefined || c.bull === "absent" ? c.bull : c.bull.finishedOn,
        remove: c.remove,
        add: add !== undefined,
        tk: transition.keys.length,
        ta: transition.args.length,
        rk: remove.keys.length,
        ra: remove.args.length,
        ak: add?.keys.length ?? 0,
        aa: add?.args.length ?? 0,
      };
      const reply = (await scriptFor(add?.script ?? "").run(
        redis,
        [
          queue.toKey(c.job.id),
          `${queue.toKey(c.job.id)}:lock`,
          keys.live,
          ...transition.keys,
          ...remove.keys,
          ...(add?.keys ?? []),
        ],
        [JSON.stringify(params), ...transition.args, ...remove.args, ...(add?.args ?? [])],
      )) as [string, string];
      switch (reply[0]) {
        case "ok": {
          transition.settle([1, reply[1]]);
          return { kind: "applied", eventId: reply[1] };
        }
        case "not-from":
          return { kind: "state", state: reply[1] === "" ? undefined : (reply[1] as JobState) };
        case "moved":
          return { kind: "moved" };
        case "busy":
          return { kind: "busy" };
        default:
          throw new Error(`BullMQ's add refused job ${c.job.id} (code ${reply[1]})`);
      }
    },
  };
}
