/**
 * BullMQ's own Lua scripts, for our scripts to run inside themselves, so a
 * change of our job record and of BullMQ's job is one atomic step (submit,
 * CancelJob, RetryJob, the reconciler's repairs). A BullMQ script's body is
 * spliced into ours as the body of a Lua function taking (KEYS, ARGV); the
 * calls it is given are exactly those BullMQ would send itself.
 */
import { createRequire } from "node:module";
import type { Job, Queue } from "bullmq";

/** A BullMQ script: its Lua source and how many of its arguments are KEYS. */
export interface BullmqScript {
  readonly content: string;
  readonly keys: number;
}

/** A script call: the command's keys and arguments. */
export interface ScriptCall {
  readonly keys: string[];
  readonly args: (string | Buffer)[];
}

// BullMQ's scripts, by name. They ship as CommonJS modules with no `exports`
// map, so a deep require is the stable way to reach them; the version is
// pinned exactly in package.json and the integration tests run every script
// used against a real Redis.
const require = createRequire(import.meta.url);
const scripts = require("bullmq/dist/cjs/scripts/index.js") as Record<
  string,
  { name: string; content: string; keys: number }
>;

/** BullMQ's script `name` ("addStandardJob", "removeJob"; a ":<version>" suffix is ignored). */
export function bullmqScript(name: string): BullmqScript {
  const script = scripts[name.split(":")[0] ?? name];
  if (script === undefined) throw new Error(`BullMQ script ${name} not found`);
  return { content: script.content, keys: script.keys };
}

/** The script BullMQ would run to add `job` (its kind decides which), captured instead of sent. */
export async function captureAdd(job: Job): Promise<ScriptCall & { script: string }> {
  let captured: { name: string; args: unknown[] } | undefined;
  const recorder = {
    runCommand(name: string, args: unknown[]) {
      captured = { name, args };
      return Promise.resolve(job.id ?? "");
    },
  };
  await job.addJob(recorder as unknown as Parameters<Job["addJob"]>[0]);
  if (captured === undefined) throw new Error("BullMQ did not produce an add command");
  const script = captured.name.split(":")[0] ?? captured.name;
  const keyCount = bullmqScript(script).keys;
  return {
    script,
    keys: captured.args.slice(0, keyCount) as string[],
    args: captured.args.slice(keyCount) as (string | Buffer)[],
  };
}

/**
 * BullMQ's removeJob call for job `jobId` of `queue`, children included, as
 * Queue.remove() sends it (the header of BullMQ's removeJob-2.lua: KEYS job
 * key and repeat key; ARGV job id, remove children, queue key prefix).
 */
export function removeJobCall(queue: Queue, jobId: string): ScriptCall {
  return {
    keys: [queue.toKey(jobId), queue.toKey("repeat")],
    args: [jobId, "1", queue.toKey("")],
  };
}
