/**
 * SubmitReport's hot path: one Redis round trip. A single Lua script checks
 * the idempotency record, checks the backlog bound, adds the BullMQ job (by
 * running BullMQ's own add script inside ours), writes the job record, appends
 * and publishes the QUEUED event (the same append body as every other event:
 * scripts/includes/append-event.lua), indexes the job for its tenant and
 * stores the idempotency record, all atomically. Concurrent duplicates therefore
 * cannot create two jobs, and a caller is acknowledged only for a job that is
 * really queued. With SUBMIT_WAITAOF, a WAITAOF follows the script on the
 * same connection, in the same write, and the caller is acknowledged only
 * once Redis has fsynced the job to its AOF.
 */
import * as crypto from "node:crypto";
import { randomBytes } from "node:crypto";
import type { Span } from "@opentelemetry/api";
import type { JobsOptions, Queue } from "bullmq";
import type { LimitsConfig, RedisConfig, RetentionConfig, WorkerConfig } from "../config/config.js";
import {
  BackpressureError,
  IdempotencyConflictError,
  StorageUnavailableError,
} from "../domain/errors.js";
import type {
  JobPriority,
  JobView,
  ReportType,
  SubmitInput,
  SubmitOutcome,
} from "../domain/job.js";
import { scriptTraceIdOf } from "../events/event-codec.js";
import {
  attrDeduplicated,
  attrJobId,
  attrReportType,
  attrTenant,
  bullmqAttr,
} from "../telemetry/attributes.js";
import { traceEnqueue } from "../telemetry/bullmq-telemetry.js";
import { reportMetrics } from "../telemetry/metrics.js";
import { buildAddCall, bullmqScript } from "./bullmq-scripts.js";
import { type CallerSignal, throwIfAborted } from "./caller-signal.js";
import { fingerprintJson } from "./canonical-json.js";
import type { RedisClient } from "./connections.js";
import { decodeRecord, encodeNewRecord, recordField } from "./job-record.js";
import { type Keys, queueNameFor } from "./keys.js";
import {
  createLuaScript,
  type FollowingCommand,
  type LuaScript,
  runInPipeline,
} from "./lua-script.js";
import type { QueueShards } from "./queue-shards.js";
import type { QueuesOf } from "./report-queues.js";
import { composeScript } from "./scripts/load.js";

/** The data a BullMQ job carries to the worker. */
export interface ReportJobData {
  tenant: string;
  userId: string;
  reportType: ReportType;
  filters: SubmitInput["filters"];
  deadline?: number;
  /**
   * The record's idempotency key digest ("" without a key) and when this run
   * was queued (the record's requeuedAt, else createdAt): with these the
   * worker knows all its attempt writes need without reading the record, and
   * can hold STARTED to send it with the attempt's next write. Absent in jobs
   * queued by an earlier version: their worker writes STARTED first.
   */
  idempotencyKeyDigest?: string;
  queuedAt?: number;
}

/** Settings the submitter needs: slices of the configuration. */
export interface SubmitterSettings {
  /** Each type's attempts (stamped on the job) and the retry backoff. */
  worker: Pick<WorkerConfig, "reportTypes" | "retryBackoffMs">;
  retention: Pick<
    RetentionConfig,
    "succeededMs" | "failedMs" | "idempotencyTtlMs" | "eventStreamMaxLen"
  >;
  limits: Pick<
    LimitsConfig,
    | "maxBacklog"
    | "tenantMaxBacklog"
    | "backlogRetryAfterMs"
    | "tenantSubmitRate"
    | "tenantSubmitBurst"
  >;
  /**
   * SUBMIT_WAITAOF: 1 waits for the AOF fsync before acknowledging;
   * SUBMIT_WAIT_REPLICAS: n waits for n replicas of the job's master.
   */
  redis: Pick<RedisConfig, "submitWaitAof"> &
    Partial<Pick<RedisConfig, "submitWaitReplicas" | "submitWaitReplicasTimeoutMs">>;
}

/**
 * How long a submit waits for the AOF fsync with SUBMIT_WAITAOF, in ms: an
 * everysec fsync comes within about a second; below the command timeout, so
 * the answer is Redis's, not a timeout's.
 */
export const waitAofTimeoutMs = 2000;

/** Accepts jobs. */
export interface Submitter {
  /**
   * Enqueues a job, or returns the one already created for the same
   * (tenant, idempotency key).
   * `signal`: the caller's (caller-signal.ts); once it has aborted, nothing is sent.
   * @throws IdempotencyConflictError, BackpressureError
   */
  submit(input: SubmitInput, signal?: CallerSignal): Promise<SubmitOutcome>;
}

/**
 * A Lua string literal of `text`: every byte but letters, digits and
 * `:_-.{}` as a three-digit decimal escape, so any key prefix is taken as
 * written.
 */
function luaString(text: string): string {
  let out = "'";
  for (const byte of Buffer.from(text, "utf8")) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9:_\-.{}]/.test(c) ? c : `\\${String(byte).padStart(3, "0")}`;
  }
  return `${out}'`;
}

/** What every submit of one queue of one shard passes alike: submit.lua's constants. */
interface SubmitConstants {
  tenants: string;
  add: readonly string[];
  live: string;
  maxBacklog: number;
  tenantMaxBacklog: number;
  jobPrefix: string;
  rate: number;
  burst: number;
  /** A new job's record values that every job of the queue shares, by field (submit.lua's `new<Field>`). */
  record: Readonly<Record<NewRecordConstant, string>>;
}

/** A new job as SubmitReport makes it: QUEUED, no progress, no attempt yet. */
function newJobView(
  input: SubmitInput,
  made: {
    id: string;
    maxAttempts: number;
    createdAt: number;
    traceparent: string;
    idempotencyKeyDigest?: string;
  },
): JobView {
  return {
    id: made.id,
    tenant: input.tenant,
    userId: input.userId,
    reportType: input.reportType,
    state: "queued",
    progress: 0,
    phase: "",
    attemptsMade: 0,
    maxAttempts: made.maxAttempts,
    failureReason: "",
    createdAt: made.createdAt,
    filters: input.filters,
    priority: input.priority,
    runAt: input.runAt,
    deadline: input.deadline,
    traceparent: made.traceparent,
    idempotencyKeyDigest: made.idempotencyKeyDigest,
  };
}

/** The record fields whose values at submit are the same for every job of a queue. */
const newRecordConstants = ["reportType", "state", "maxAttempts"] as const;
type NewRecordConstant = (typeof newRecordConstants)[number];

/** encodeNewRecord's pairs for an empty new job of `reportType` with `maxAttempts` (no optional pairs). */
function newRecordPairs(reportType: ReportType, maxAttempts: number): string[] {
  const input = { tenant: "", userId: "", reportType, filters: {}, priority: "normal" } as const;
  return encodeNewRecord(
    newJobView(input, { id: "", maxAttempts, createdAt: 0, traceparent: "" }),
    "",
  );
}

/**
 * What encodeNewRecord writes for the newRecordConstants fields of a new job of `reportType`
 * with `maxAttempts`: the record of a job is these, whatever its caller.
 */
function newRecordConstantsOf(
  reportType: ReportType,
  maxAttempts: number,
): Record<NewRecordConstant, string> {
  const pairs = newRecordPairs(reportType, maxAttempts);
  const out = {} as Record<NewRecordConstant, string>;
  for (const field of newRecordConstants) {
    out[field] = pairs[pairs.indexOf(recordField[field]) + 1] as string;
  }
  return out;
}

/**
 * Where encodeNewRecord puts the values the submit script takes as
 * arguments (of its ten fixed pairs, those neither above nor the queue's
 * constants), and where its optional pairs start.
 */
const newRecordAt = (() => {
  const pairs = newRecordPairs("weekly", 1);
  const valueAt = (field: keyof typeof recordField) => pairs.indexOf(recordField[field]) + 1;
  return {
    userId: valueAt("userId"),
    filters: valueAt("filters"),
    priority: valueAt("priority"),
    optional: pairs.length,
  };
})();

/** A Lua number literal for `n`: exact (the shortest text that reads back as `n`). */
function luaNumber(n: number): string {
  if (Number.isNaN(n)) throw new Error("submit.lua constants: NaN");
  if (!Number.isFinite(n)) return n > 0 ? "math.huge" : "-math.huge";
  return String(n);
}

/**
 * The `constants` slot of submit.lua: one local per constant, each a literal
 * of the script's text (a constant of its compiled function: nothing per
 * call); BullMQ's add keys as a table, which its add script indexes.
 */
function submitConstantsLua(c: SubmitConstants): string {
  const record = newRecordConstants.map(
    (f) => `local new${f[0]?.toUpperCase()}${f.slice(1)} = ${luaString(c.record[f])}`,
  );
  return [
    `local tenantsKey = ${luaString(c.tenants)}`,
    `local addKeys = {${c.add.map(luaString).join(", ")}}`,
    `local liveKey = ${luaString(c.live)}`,
    `local maxBacklog = ${luaNumber(c.maxBacklog)}`,
    `local tenantMaxBacklog = ${luaNumber(c.tenantMaxBacklog)}`,
    `local jobPrefix = ${luaString(c.jobPrefix)}`,
    `local rate = ${luaNumber(c.rate)}`,
    `local burst = ${luaNumber(c.burst)}`,
    ...record,
  ].join("\n");
}

/**
 * The `backlog-count` slot of submit.lua: sets `backlog` to the number of
 * jobs in the backlog's keys (sorted sets first, then lists), unrolled over
 * the keys as literals. An empty list or sorted set does not exist: one
 * EXISTS says how many of the keys hold jobs, and only those are counted,
 * the likeliest first (every job has a priority, so it waits in a
 * prioritized set), until that many are found.
 */
function backlogCountLua(zsets: readonly string[], lists: readonly string[]): string {
  const count = (command: "ZCARD" | "LLEN", key: string) =>
    `if left > 0 then n = redis.call('${command}', ${luaString(key)}) if n > 0 then backlog = backlog + n left = left - 1 end end`;
  return [
    "do",
    `  local left = redis.call('EXISTS', ${[...zsets, ...lists].map(luaString).join(", ")})`,
    "  local n",
    ...zsets.map((key) => `  ${count("ZCARD", key)}`),
    ...lists.map((key) => `  ${count("LLEN", key)}`),
    "end",
  ].join("\n");
}

/** The custom BullMQ backoff type the worker implements. */
export const retryBackoffType = "report-retry";

/** BullMQ priorities: lower runs first; every job gets one so the order is total. */
const bullPriority: Record<JobPriority, number> = { high: 1, normal: 2, low: 3 };

/**
 * Creates a submitter over a command connection and the BullMQ queues. With
 * `shards` (QUEUE_SHARDS), each job goes to the shard `shards.pick` names,
 * into that shard's queues (`queuesOf`); without, to `keys` and `queues`.
 */
export function createSubmitter(deps: {
  redis: RedisClient;
  queues: Record<ReportType, Queue>;
  keys: Keys;
  shards?: QueueShards;
  queuesOf?: QueuesOf;
  settings: SubmitterSettings;
}): Submitter {
  const { redis, settings } = deps;
  const shardCount = deps.shards?.all.length ?? 1;
  // Waiting, prioritized, delayed and paused jobs of every type make up the
  // backlog, per shard: each shard's script sees its own queues only.
  // Grouped by kind, sorted sets first: see backlogCountLua. Read once per
  // composed script (scriptFor), so not cached.
  const backlogCount = (queues: Record<ReportType, Queue>) => {
    const all = Object.values(queues).map((queue) => queue.keys);
    const of = (kinds: readonly ("prioritized" | "delayed" | "wait" | "paused")[]) =>
      kinds.flatMap((kind) => all.map((q) => q[kind] as string));
    return backlogCountLua(of(["prioritized", "delayed"]), of(["wait", "paused"]));
  };
  // A shard's share of a bound (at least 1): the bounds hold per shard, so
  // across shards they are exact for one shard and approximate for more
  // (README "Scaling out": the backlog, tenant backlog and tenant rate).
  const share = (limit: number) =>
    shardCount === 1 ? limit : Math.max(1, Math.ceil(limit / shardCount));
  // One composed script per kind of add, queue and shard: what its calls
  // pass alike is in its text (submit.lua's constants).
  const scripts = new Map<string, LuaScript>();
  const scriptFor = (
    add: { script: string; keys: readonly string[] },
    reportType: ReportType,
    queues: Record<ReportType, Queue>,
    shard: Keys,
  ): LuaScript => {
    const key = `${shard.bullPrefix}\0${reportType}\0${add.script}`;
    let script = scripts.get(key);
    if (script === undefined) {
      const constants = submitConstantsLua({
        tenants: shard.tenants,
        add: add.keys,
        live: shard.live,
        maxBacklog: share(settings.limits.maxBacklog),
        tenantMaxBacklog: share(settings.limits.tenantMaxBacklog),
        jobPrefix: shard.jobPrefix,
        rate:
          shardCount === 1
            ? settings.limits.tenantSubmitRate
            : settings.limits.tenantSubmitRate / shardCount,
        burst: share(settings.limits.tenantSubmitBurst),
        record: newRecordConstantsOf(reportType, settings.worker.reportTypes[reportType].attempts),
      });
      script = createLuaScript(
        composeScript("submit", {
          "bullmq-add": bullmqScript(add.script).content,
          constants,
          "backlog-count": backlogCount(queues),
        }),
      );
      scripts.set(key, script);
    }
    return script;
  };
  const waitAof = settings.redis.submitWaitAof;
  const waitReplicas = settings.redis.submitWaitReplicas ?? 0;
  const waitReplicasMs = settings.redis.submitWaitReplicasTimeoutMs ?? 1000;

  /**
   * Runs the submit script with WAIT (and WAITAOF, if asked) behind it in one
   * pipeline, which on a cluster goes whole to the job's master: the reply
   * comes once `waitReplicas` replicas have the job. Fewer in time:
   * UNAVAILABLE, as the job may not survive a failover; a retry with the same
   * idempotency key answers with the same job.
   */
  async function runThenWaitReplicas(
    script: LuaScript,
    scriptKeys: string[],
    scriptArgs: (string | Buffer | number)[],
  ): Promise<unknown> {
    const follow: FollowingCommand[] = [["WAIT", waitReplicas, waitReplicasMs]];
    if (waitAof > 0) follow.push(["WAITAOF", waitAof, 0, waitAofTimeoutMs]);
    // WAIT 0 answers at once: the pipeline then only carries WAITAOF to the job's node.
    let replies: unknown[];
    try {
      replies = await runInPipeline(redis, script, scriptKeys, scriptArgs, follow);
    } catch (err) {
      if (err instanceof Error && /WAIT/.test(err.message)) {
        throw new StorageUnavailableError({ cause: err });
      }
      throw err;
    }
    const [reply, replicas, synced] = replies as [unknown, number, number[]?];
    if (replicas < waitReplicas) {
      throw new StorageUnavailableError({
        cause: new Error(
          `WAIT: ${replicas} of ${waitReplicas} replicas had the job within ${waitReplicasMs} ms`,
        ),
      });
    }
    if (waitAof > 0 && (synced?.[0] ?? 0) < waitAof) {
      throw new StorageUnavailableError({
        cause: new Error(`WAITAOF: the AOF was not fsynced within ${waitAofTimeoutMs} ms`),
      });
    }
    return reply;
  }

  /**
   * Runs the submit script with WAITAOF right behind it: the reply comes once
   * the script's writes are fsynced to the AOF. Not fsynced in time (or AOF
   * turned off since start): UNAVAILABLE, as the job may not survive a Redis
   * crash; a retry with the same idempotency key answers with the same job.
   */
  async function runThenWaitAof(
    script: LuaScript,
    scriptKeys: string[],
    scriptArgs: (string | Buffer | number)[],
  ): Promise<unknown> {
    const waited = () =>
      redis.call("WAITAOF", String(waitAof), "0", String(waitAofTimeoutMs)) as Promise<number[]>;
    let reply: unknown;
    let synced: number[];
    try {
      [reply, synced] = await script.runFollowedBy(redis, scriptKeys, scriptArgs, waited);
    } catch (err) {
      if (err instanceof Error && /WAITAOF/.test(err.message)) {
        throw new StorageUnavailableError({ cause: err });
      }
      throw err;
    }
    if ((synced[0] ?? 0) < waitAof) {
      throw new StorageUnavailableError({
        cause: new Error(`WAITAOF: the AOF was not fsynced within ${waitAofTimeoutMs} ms`),
      });
    }
    return reply;
  }

  return {
    async submit(input, signal) {
      const started = performance.now();
      const seconds = () => (performance.now() - started) / 1000;
      try {
        // The producer span BullMQ's Queue.add would make, made here because the
        // add runs inside our script; its context travels in the job's options.
        const outcome = await traceEnqueue(
          queueNameFor(input.reportType),
          input.reportType,
          [],
          (t) => submitTraced(input, t, signal),
        );
        reportMetrics().submitted(
          input.reportType,
          outcome.deduplicated ? "deduplicated" : "accepted",
          seconds(),
        );
        return outcome;
      } catch (err) {
        reportMetrics().submitted(input.reportType, "rejected", seconds());
        throw err;
      }
    },
  };

  async function submitTraced(
    input: SubmitInput,
    t: { metadata: string; traceparent: string; span: Span },
    signal: CallerSignal | undefined,
  ): Promise<SubmitOutcome> {
    const now = Date.now();
    const keyDigest = input.idempotencyKey ? digest(input.idempotencyKey) : undefined;
    // Every key below is of this shard (one slot on a cluster), the id names it.
    const shard = deps.shards?.pick(input.tenant, keyDigest) ?? deps.keys;
    const queues = deps.queuesOf?.(shard) ?? deps.queues;
    const id = deps.shards?.jobId(shard, newJobId()) ?? newJobId();
    const fingerprint = sha256(
      fingerprintJson({
        userId: input.userId,
        reportType: input.reportType,
        filters: input.filters,
        priority: input.priority,
        runAt: input.runAt ?? null,
        deadline: input.deadline ?? null,
      }),
    );
    const view = newJobView(input, {
      id,
      maxAttempts: settings.worker.reportTypes[input.reportType].attempts,
      createdAt: now,
      traceparent: t.traceparent,
      idempotencyKeyDigest: keyDigest,
    });
    if (t.span.isRecording()) {
      t.span.setAttributes({
        [bullmqAttr.jobId]: id,
        [attrJobId]: id,
        [attrReportType]: input.reportType,
        [attrTenant]: input.tenant,
      });
    }
    const spec = bullJobSpec(view, settings, now);
    // What captureAdd(new Job(...)) would capture, built directly (bullmq-scripts.ts).
    const add = buildAddCall(queues[input.reportType], {
      id,
      name: spec.name,
      data: spec.data,
      opts: { ...spec.opts, timestamp: now, telemetry: { metadata: t.metadata } },
    });
    const script = scriptFor(add, input.reportType, queues, shard);

    const keys = shard;
    const idemKey =
      keyDigest !== undefined ? keys.idempotency(input.tenant, keyDigest) : keys.job(id);
    const record = encodeNewRecord(view, fingerprint);
    // Positional, in submit.lua's order: each a Lua string, none decoded from JSON.
    const params: (string | number)[] = [
      id,
      fingerprint,
      now + settings.retention.idempotencyTtlMs,
      input.tenant,
      now,
      scriptTraceIdOf(t.traceparent),
    ];
    const scriptKeys = [
      idemKey,
      keys.job(id),
      keys.events(id),
      keys.tenantIndex(input.tenant),
      keys.userIndex(input.tenant, digest(input.userId)),
      keys.submitRate(input.tenant),
      keys.tenantBacklog(input.tenant),
    ];
    const scriptArgs: (string | number | Buffer)[] = params;
    // Of the record's ten fixed pairs (named by the script) only the user,
    // filters and priority are not above or the queue's constants; then the
    // optional pairs.
    scriptArgs.push(
      ...add.args,
      record[newRecordAt.userId] as string,
      record[newRecordAt.filters] as string,
      record[newRecordAt.priority] as string,
    );
    for (let i = newRecordAt.optional; i < record.length; i++) scriptArgs.push(record[i] as string);
    throwIfAborted(signal);
    const reply =
      // On a cluster a command sent apart goes to any node: WAITAOF rides the pipeline too.
      (
        waitReplicas > 0 || (waitAof > 0 && redis.isCluster)
          ? await runThenWaitReplicas(script, scriptKeys, scriptArgs)
          : waitAof > 0
            ? await runThenWaitAof(script, scriptKeys, scriptArgs)
            : await script.run(redis, scriptKeys, scriptArgs)
      ) as [string, string, string[]?];

    switch (reply[0]) {
      case "new":
        return { job: view, deduplicated: false };
      case "own":
        // This call's script ran twice (ioredis resent it after a lost
        // reply): the job is this call's own, as the first run left it.
        return { job: decodeRecord(reply[2]) ?? view, deduplicated: false };
      case "dup": {
        const existing = decodeRecord(reply[2]);
        // Nothing was enqueued: the span says so and names the existing job.
        t.span.setAttributes({ [attrDeduplicated]: true, [attrJobId]: reply[1] ?? "" });
        t.span.setAttribute(bullmqAttr.jobId, reply[1] ?? "");
        if (existing === undefined) {
          throw new IdempotencyConflictError({ reason: "job-expired", jobId: reply[1] ?? "" });
        }
        return { job: existing, deduplicated: true };
      }
      case "conflict":
        throw new IdempotencyConflictError();
      case "full":
        throw new BackpressureError(
          `backlog is full (${reply[1]} jobs waiting); retry later`,
          settings.limits.backlogRetryAfterMs,
        );
      case "tenant-full":
        throw new BackpressureError(
          `this tenant's backlog is full (${reply[1]} jobs waiting, at most ${settings.limits.tenantMaxBacklog}); retry later`,
          settings.limits.backlogRetryAfterMs,
        );
      case "rate":
        throw new BackpressureError(
          `this tenant is over its submit rate (${settings.limits.tenantSubmitRate} per second, bursts of ${settings.limits.tenantSubmitBurst}); retry later`,
          Number(reply[1]),
        );
      default:
        throw new Error(`enqueue failed: BullMQ add returned ${reply[1]}`);
    }
  }
}

/** What BullMQ is given for a job: name, data and options. */
export interface BullJobSpec {
  name: string;
  data: ReportJobData;
  opts: JobsOptions;
}

/** The BullMQ name, data and options of `job` (its id goes separately). */
export function bullJobSpec(
  job: JobView,
  settings: {
    worker: Pick<WorkerConfig, "retryBackoffMs">;
    retention: Pick<RetentionConfig, "succeededMs" | "failedMs">;
  },
  now = Date.now(),
): BullJobSpec {
  const delay = job.runAt !== undefined ? Math.max(0, job.runAt - now) : 0;
  return {
    name: job.reportType,
    data: {
      tenant: job.tenant,
      userId: job.userId,
      reportType: job.reportType,
      filters: job.filters,
      deadline: job.deadline,
      idempotencyKeyDigest: job.idempotencyKeyDigest ?? "",
      queuedAt: job.requeuedAt ?? job.createdAt,
    },
    opts: {
      attempts: job.maxAttempts,
      // The worker computes each delay (exponential with jitter) so the
      // RETRYING event can say when the next attempt is due.
      backoff: { type: retryBackoffType, delay: settings.worker.retryBackoffMs },
      // Finished BullMQ jobs go with the job record (the janitor also cleans).
      removeOnComplete: { age: Math.ceil(settings.retention.succeededMs / 1000) },
      removeOnFail: { age: Math.ceil(settings.retention.failedMs / 1000) },
      priority: bullPriority[job.priority],
      ...(delay > 0 ? { delay } : {}),
    },
  };
}

// Job ids are 128 random bits. Drawing them from a pooled buffer avoids a
// getrandom() call per submit on the hot path.
let idPool = Buffer.alloc(0);
let idOffset = 0;
function newJobId(): string {
  if (idOffset + 16 > idPool.length) {
    idPool = randomBytes(16 * 256);
    idOffset = 0;
  }
  const id = idPool.toString("base64url", idOffset, idOffset + 16);
  idOffset += 16;
  return id;
}

/** A short, key-safe digest of a caller-chosen string (idempotency keys, user ids). */
export function digest(value: string): string {
  return sha256(value).slice(0, 32);
}

/**
 * SHA-256 of `value`, base64url: crypto.hash (one-shot, without a Hash
 * object per digest) where Node has it (20.12 and later), else createHash.
 */
const sha256: (value: string) => string =
  typeof crypto.hash === "function"
    ? (value) => crypto.hash("sha256", value, "base64url")
    : (value) => crypto.createHash("sha256").update(value).digest("base64url");
