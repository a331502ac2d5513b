/**
 * BullMQ's own Lua scripts, for our scripts to run inside themselves, so a
 * change of our job record and of BullMQ's job is one atomic step (submit,
 * CancelJob, RetryJob, the reconciler's repairs). A BullMQ script's body is
 * spliced into ours as the body of a Lua function taking (KEYS, ARGV); the
 * calls it is given are exactly those BullMQ would send itself.
 */
import { createRequire } from "node:module";
import type { Job, JobsOptions, Queue } from "bullmq";

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

// BullMQ's own msgpack encoder (the copy BullMQ resolves, with its options:
// scripts.js), so the packed arguments below are byte for byte BullMQ's.
const bullmqRequire = createRequire(require.resolve("bullmq"));
const { Packr } = bullmqRequire("msgpackr") as typeof import("msgpackr");
const pack = new Packr({ useRecords: false, encodeUndefinedAsNil: true }).pack;

/** A BullMQ job to add: what `new Job(queue, name, data, opts, id)` is given. */
export interface AddJobSpec {
  readonly id: string;
  readonly name: string;
  readonly data: unknown;
  /** Plain options only (no parent, repeat, deduplication or debounce). */
  readonly opts: JobsOptions & { timestamp: number; telemetry?: { metadata?: string } };
}

/** BullMQ's optsEncodeMap: the options stored under a shorter name. */
const encodedName: Record<string, string> = {
  deduplication: "de",
  debounce: "de",
  failParentOnFailure: "fpof",
  continueParentOnFailure: "cpof",
  ignoreDependencyOnFailure: "idof",
  keepLogs: "kl",
  removeDependencyOnFailure: "rdof",
};

type AddScript = "addStandardJob" | "addPrioritizedJob" | "addDelayedJob";
const addKeysOf = new WeakMap<Queue, Record<AddScript, string[]>>();

/**
 * The call captureAdd(new Job(queue, ...)) captures, built directly: without a
 * Job, its validation and a recorder. The same as BullMQ's Job constructor,
 * Job.asJSON/optsAsJSON and Scripts.addJob for the options we use (plain
 * ones, a numeric or object backoff, telemetry metadata); the unit test
 * bullmq-add-call.test.ts compares the two byte for byte for every kind of
 * job we add, so a BullMQ upgrade that changes the format fails it.
 */
export function buildAddCall(queue: Queue, job: AddJobSpec): ScriptCall & { script: AddScript } {
  const { opts } = job;
  const script: AddScript =
    typeof opts.delay === "number" && opts.delay > 0
      ? "addDelayedJob"
      : opts.priority
        ? "addPrioritizedJob"
        : "addStandardJob";
  let keys = addKeysOf.get(queue);
  if (keys === undefined) {
    const k = queue.keys;
    keys = {
      addStandardJob: [
        k.wait,
        k.paused,
        k.meta,
        k.id,
        k.completed,
        k.delayed,
        k.active,
        k.events,
        k.marker,
      ],
      addPrioritizedJob: [
        k.marker,
        k.meta,
        k.id,
        k.prioritized,
        k.delayed,
        k.completed,
        k.active,
        k.events,
        k.pc,
      ],
      addDelayedJob: [k.marker, k.meta, k.id, k.delayed, k.completed, k.events],
    } as Record<AddScript, string[]>;
    addKeysOf.set(queue, keys);
  }
  // The Job constructor's options ({attempts: 0, ...opts}, the backoff
  // normalised), as Job.optsAsJSON encodes them: in that order, undefined
  // ones dropped, some names shortened, telemetry as tm/omc.
  const encoded: Record<string, unknown> = {};
  const attempts = "attempts" in opts ? opts.attempts : 0;
  if (attempts !== undefined) encoded.attempts = attempts;
  for (const name in opts) {
    if (name === "attempts" || name === "repeatJobKey") continue;
    let value = (opts as unknown as Record<string, unknown>)[name];
    if (name === "backoff") {
      value =
        typeof value === "number" && Number.isFinite(value)
          ? { type: "fixed", delay: value }
          : value || undefined;
    } else if (name === "telemetry") {
      const telemetry = value as { metadata?: string; omitContext?: boolean };
      if (telemetry.metadata !== undefined) encoded.tm = telemetry.metadata;
      if (telemetry.omitContext !== undefined) encoded.omc = telemetry.omitContext;
      continue;
    }
    if (value !== undefined) encoded[encodedName[name] ?? name] = value;
  }
  return {
    script,
    keys: keys[script],
    args: [
      pack([
        queue.keys[""],
        job.id,
        job.name,
        opts.timestamp,
        null,
        null,
        undefined,
        undefined,
        null,
      ]),
      JSON.stringify(job.data === undefined ? {} : job.data),
      pack(encoded),
    ],
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
