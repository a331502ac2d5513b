/**
 * Applies job state transitions (domain/job-transitions.ts) to Redis: one
 * script run per transition checks the job's state (and for an attempt's
 * write, BullMQ's lock on the job and the attempt's fencing token), writes
 * the record fields, appends and publishes the event, keeps
 * the finished indexes and sets the retention, all or nothing. It is the only
 * writer of job events besides the submit script, and where each applied
 * transition's metric and log line are emitted, so they cannot be forgotten
 * at a call site.
 *
 * Every transition can run through apply-transition.lua, which takes the
 * transition's states, retention policy and field names as arguments; the
 * writes every successful attempt makes (STARTED, PROGRESS, SUCCEEDED) run
 * through apply-attempt.lua, which knows them: fewer arguments and commands
 * per call, the same effects (test/integration/lean-transitions.test.ts).
 * Progress reports the processor held (PROGRESS_LINGER_MS) go several to one
 * PROGRESS call, or with the SUCCEEDED call (`ApplyOptions.before`): one
 * script call, the checks done once, each report its own event.
 * Redis's CPU per script call goes mostly to its arguments (each becomes a
 * Lua string in a growing table) and to each redis.call; see
 * docs/performance.md, "Ninth pass".
 */

import type { Logger } from "pino";
import type { RetentionConfig } from "../config/config.js";
import type { JobState, JobView } from "../domain/job.js";
import {
  type AppliedTransitionName,
  jobTransitions,
  type RecordUpdate,
  type Transition,
  type TransitionEvent,
  type TransitionInputs,
  type TransitionSubject,
  type TtlPolicy,
} from "../domain/job-transitions.js";
import { encodeEvent, encodeEventJson, scriptTraceIdOf } from "../events/event-codec.js";
import { inJobTrace } from "../telemetry/job-traces.js";
import { type JobOutcome, reportMetrics } from "../telemetry/metrics.js";
import type { RedisClient } from "./connections.js";
import { decodeRecord, encodeRecordUpdate, pushRecordUpdate } from "./job-record.js";
import type { Keys } from "./keys.js";
import type { LuaScript } from "./lua-script.js";
import { encodedCommand, joined } from "./resp-command.js";
import { loadLuaScript } from "./scripts/load.js";

const applyScript = loadLuaScript("apply-transition");
const attemptScript = loadLuaScript("apply-attempt");

/** The outcome of a transition. */
export type TransitionResult =
  /** `record`: the job as written, when asked for (`withRecord`). */
  | { applied: true; eventId: string; record?: JobView }
  /**
   * Refused, and nothing changed: `state` is the job's (undefined when it has
   * no record). `fenced` says why a write of an attempt was refused although
   * the state allowed it: "lock" when BullMQ's lock on the job no longer
   * holds the attempt's lock token (it expired, or another fetch holds it),
   * "token" when the record holds another attempt's token; false otherwise.
   */
  | { applied: false; state?: JobState; fenced: false | "lock" | "token" };

/** Applies transitions. */
export interface TransitionApplier {
  /**
   * Applies transition `name` to `job` if its state (and fencing token) allow
   * it. `options.withRecord`: an applied result carries the record as written
   * (no read before, no round trip after: read by the script itself, or for
   * STARTED by an HGETALL sent right behind it on the same connection, which
   * sees any write another client made in between, as any later read would); `job`
   * then needs only the fields that name the keys, and `createdAt` and
   * `requeuedAt` are taken from the record for the log line and metric.
   *
   * `options.before` (PROGRESS and SUCCEEDED only): progress reports of the
   * same attempt, in order, applied first in the same script call, all or
   * nothing with it, each its own event: a refusal refuses them all. Before
   * SUCCEEDED their record writes are left out (SUCCEEDED overwrites them).
   * The result names the last event.
   *
   * `options.started` (SUCCEEDED only): the attempt's STARTED, not written
   * yet (the processor held it): written first in the same call, all or
   * nothing with the rest; refused as STARTED alone would be (the job left
   * the live states, or the lock is not the attempt's), and then `fenced`
   * says which. Its log line comes with SUCCEEDED's.
   */
  apply<N extends AppliedTransitionName>(
    job: TransitionSubject,
    name: N,
    input: TransitionInputs[N],
    options?: ApplyOptions,
  ): Promise<TransitionResult>;
  /**
   * The script call that applies transition `name` to `job`, for a script
   * that runs apply-transition.lua inside itself (with BullMQ's side of a
   * change: queue/queue-transitions.ts). `settle` reads that call's reply and
   * emits the metric and log line, as `apply` does.
   */
  prepare<N extends AppliedTransitionName>(
    job: TransitionSubject,
    name: N,
    input: TransitionInputs[N],
    options?: { withRecord?: boolean },
  ): PreparedTransition;
}

/** Options of `TransitionApplier.apply`. */
export interface ApplyOptions {
  /** Return the record as written. */
  withRecord?: boolean;
  /** Progress reports of the same attempt applied first, in the same call (PROGRESS, SUCCEEDED). */
  before?: readonly TransitionInputs["progress"][];
  /** The attempt's STARTED, applied first of all in the same call (SUCCEEDED). */
  started?: TransitionInputs["started"];
}

/** One transition, ready to run: apply-transition.lua's KEYS and ARGV. */
export interface PreparedTransition {
  readonly keys: string[];
  readonly args: (string | number)[];
  /** The states the job must be in (the transition's `from`). */
  readonly from: readonly JobState[];
  /** Reads apply-transition.lua's reply; emits the metric and log line when applied. */
  settle(reply: [number, string, (string[] | Record<string, string>)?]): TransitionResult;
}

/** Creates the applier over a command connection. */
export function createTransitionApplier(deps: {
  redis: RedisClient;
  keys: Keys;
  /** Stream cap and the ages stamped on finished jobs. */
  settings: Pick<RetentionConfig, "eventStreamMaxLen" | "succeededMs" | "failedMs">;
  logger: Logger;
}): TransitionApplier {
  const { redis, keys: shardKeys, settings } = deps;
  // Its lines hold only scalar fields built here (ids, state, attempt, the
  // transition's logFields: times, sizes, phase, reason), never filters or a
  // report, so the root logger's redaction (a safety net that costs about
  // 7 µs a line, more than the rest of it) is left out, as for the request
  // log lines. Two lines per job (running, succeeded).
  const logger = deps.logger.child({}, { redact: [] });
  const ttlMs: Record<TtlPolicy, number> = {
    leave: 0,
    "expire-succeeded": settings.succeededMs,
    "expire-failed": settings.failedMs,
    persist: -1,
  };

  /** Whether apply-attempt.lua applies `name` (with `options`), and so can carry progress reports. */
  const carriesReports = (name: AppliedTransitionName, options: ApplyOptions | undefined) =>
    name === "progress" ||
    (name === "succeeded" && options?.withRecord !== true && ttlMs["expire-succeeded"] > 0);

  /**
   * The call of transition `name`: apply-transition.lua's, or with `lean`
   * the transition's own script when it has one (PROGRESS: apply-progress.lua).
   */
  const build = <N extends AppliedTransitionName>(
    subject: TransitionSubject,
    name: N,
    input: TransitionInputs[N],
    options: ApplyOptions | undefined,
    lean: boolean,
  ): TransitionCall<N> => {
    const job = subject;
    const transition = jobTransitions[name];
    const { event, record } = transition.derive(input);
    const own = transition.fence === "none" ? undefined : attemptTokens(input);
    const fields = encodeEvent(event);
    // The job's own shard: every key below shares its slot.
    const keys = shardKeys.of(job.id);
    const call = new TransitionCall(logger, job, name, input, transition, event);
    const before = options?.before ?? noReports;
    if (before.length > 0 && !(lean && own !== undefined && carriesReports(name, options))) {
      throw new Error(`progress reports travel only with an attempt's own lean ${name} write`);
    }
    const started = options?.started;
    if (
      started !== undefined &&
      !(lean && own !== undefined && name === "succeeded" && carriesReports(name, options))
    ) {
      throw new Error(`a STARTED travels only with an attempt's own lean succeeded write`);
    }
    if (lean && name === "progress" && own !== undefined) {
      const args: (string | number)[] = [
        "progress",
        keys.eventChannel(job.id),
        settings.eventStreamMaxLen,
        own.lockToken,
        own.token,
        job.id,
        event.attempt,
      ];
      pushReports(args, before, own, event.attempt);
      args.push(event.time, event.progress, event.phase, encodeEventJson(fields));
      return call.ready(attemptScript, attemptKeys(keys, job, 0), args);
    }
    if (lean && name === "started" && own !== undefined) {
      const args: (string | number)[] = [
        "started",
        keys.eventChannel(job.id),
        settings.eventStreamMaxLen,
        own.lockToken,
        job.id,
        event.time,
        event.attempt,
        event.progress,
        event.phase,
        encodeEventJson(fields),
      ];
      pushRecordUpdate(args, record);
      call.followWithRecord = options?.withRecord === true;
      return call.ready(attemptScript, attemptKeys(keys, job, 0), args);
    }
    if (
      lean &&
      name === "succeeded" &&
      own !== undefined &&
      event.result !== undefined &&
      event.progress === 100 &&
      event.phase === "completed" &&
      options?.withRecord !== true &&
      ttlMs[transition.ttl] > 0
    ) {
      const ttl = ttlMs[transition.ttl];
      const args: (string | number)[] = [
        started !== undefined
          ? before.length > 0
            ? "started+progress+succeeded"
            : "started+succeeded"
          : before.length > 0
            ? "progress+succeeded"
            : "succeeded",
        keys.eventChannel(job.id),
        settings.eventStreamMaxLen,
        own.lockToken,
        own.token,
        job.id,
        event.time,
        event.attempt,
        ttl,
        event.result.downloadPath,
        event.result.contentType,
        event.result.sizeBytes,
        encodeEventJson(fields),
      ];
      if (started !== undefined) {
        args.push(before.length);
        pushReports(args, before, own, event.attempt);
        // STARTED's event, then its record fields under SUCCEEDED's (which win).
        const first = pushStarted(args, started, own, event.attempt);
        pushRecordUpdate(args, { ...first, ...record });
        call.started = started;
      } else {
        if (before.length > 0) {
          args.push(before.length);
          pushReports(args, before, own, event.attempt);
        }
        pushRecordUpdate(args, record);
      }
      const idempotent = job.idempotencyKeyDigest !== undefined;
      const callKeys = attemptKeys(keys, job, idempotent ? 2 : 1);
      callKeys[5] = keys.finished("succeeded");
      if (idempotent) {
        callKeys[6] = keys.idempotency(job.tenant, job.idempotencyKeyDigest as string);
      }
      return call.ready(attemptScript, callKeys, args);
    }
    const updates = encodeRecordUpdate(record);
    const token = transition.fence === "checks" ? (own?.token ?? "") : "";
    const lockToken = own?.lockToken ?? "";
    const idempotency =
      job.idempotencyKeyDigest === undefined
        ? []
        : [keys.idempotency(job.tenant, job.idempotencyKeyDigest)];
    return call.ready(
      applyScript,
      [
        keys.job(job.id),
        keys.events(job.id),
        keys.finished("succeeded"),
        keys.finished("failed"),
        keys.bullJobLock(job.reportType, job.id),
        keys.live,
        keys.tenantBacklog(job.tenant),
        ...idempotency,
      ],
      joined<string | number>(
        [
          keys.eventChannel(job.id),
          settings.eventStreamMaxLen,
          transition.from.join(","),
          token,
          ttlMs[transition.ttl],
          job.id,
          transition.to,
          event.time,
          updates.length / 2,
          lockToken,
          options?.withRecord === true ? "1" : "",
          // The script reads the record's traceparent anyway (with its
          // checks), unless this transition writes a new one.
          record.traceparent === undefined ? "*" : scriptTraceIdOf(record.traceparent),
          encodeEventJson(fields),
        ],
        updates,
        fields,
      ),
    );
  };

  const prepare: TransitionApplier["prepare"] = (job, name, input, options) =>
    build(job, name, input, options, false);

  const apply: TransitionApplier["apply"] = async (job, name, input, options) => {
    const started = options?.started;
    if (started !== undefined && (name !== "succeeded" || !carriesReports(name, options))) {
      // A SUCCEEDED that apply-attempt.lua does not apply: STARTED goes first, on its own.
      const first = await apply(job, "started", started);
      if (!first.applied) return first;
      return apply(job, name, input, { ...options, started: undefined });
    }
    const before = options?.before;
    if (before !== undefined && before.length > 0 && !carriesReports(name, options)) {
      // A SUCCEEDED that apply-attempt.lua does not apply: the reports go first, on their own.
      const last = before.length - 1;
      const reports = await apply(job, "progress", before[last] as TransitionInputs["progress"], {
        before: before.slice(0, last),
      });
      if (!reports.applied) return reports;
      return apply(job, name, input, { ...options, before: noReports });
    }
    const call = build(job, name, input, options, true);
    if (call.followWithRecord === true) {
      // The record read by an HGETALL sent right behind the script on the
      // same connection (no round trip more): returned by the script, it
      // would cross Lua twice (about 8 % of an attempt's Redis work).
      const [reply, record] = (await call.script.runFollowedBy(
        redis,
        call.keys,
        call.args,
        () =>
          // Our encoding, as the script's (a Buffer, not ioredis's string).
          redis.sendCommand(
            encodedCommand("hgetall", [call.keys[0] as string], undefined),
          ) as Promise<Record<string, string> | string[]>,
      )) as [[number, string], Record<string, string> | string[]];
      return call.settle(reply[0] === 1 ? [reply[0], reply[1], record] : reply);
    }
    const reply = (await call.script.run(redis, call.keys, call.args)) as [
      number,
      string,
      string[]?,
    ];
    return call.settle(reply);
  };

  return { prepare, apply };
}

/**
 * One transition's script call, and the reading of its reply (`settle`). A
 * class, not an object of closures: a transition is made twice per job, and
 * each closure made per call was an object (and a `__name` under tsx) more.
 */
class TransitionCall<N extends AppliedTransitionName> implements PreparedTransition {
  script!: LuaScript;
  keys!: string[];
  args!: (string | number)[];
  /** An HGETALL of the record follows the script on its connection (STARTED's `withRecord`). */
  followWithRecord = false;
  /** The attempt's STARTED, carried by this SUCCEEDED call: its log line comes first. */
  started: TransitionInputs["started"] | undefined;

  constructor(
    private readonly logger: Logger,
    /** The job as the caller knows it; the record as written once a reply carries it. */
    private job: TransitionSubject,
    private readonly name: N,
    private readonly input: TransitionInputs[N],
    private readonly transition: Transition<TransitionInputs[N]>,
    private readonly event: TransitionEvent,
  ) {}

  /** The states the job must be in (the transition's `from`). */
  get from(): readonly JobState[] {
    return this.transition.from;
  }

  /** Sets what the call sends; returns the call. */
  ready(script: LuaScript, keys: string[], args: (string | number)[]): this {
    this.script = script;
    this.keys = keys;
    this.args = args;
    return this;
  }

  settle(reply: [number, string, (string[] | Record<string, string>)?]): TransitionResult {
    const { name, transition, event } = this;
    if (reply[0] !== 1) {
      const state = reply[1] === "" ? undefined : (reply[1] as JobState);
      const fenced = reply[0] === -2 ? "lock" : reply[0] === -1 ? "token" : false;
      const id = this.job.id;
      // In the trace of the job's attempt running here, if any (job-traces.ts).
      inJobTrace(id, () =>
        this.logger.debug(
          { job_id: id, transition: name, state, fenced },
          "job transition refused",
        ),
      );
      return { applied: false, state, fenced };
    }
    const record = reply[2] === undefined ? undefined : decodeRecord(reply[2]);
    if (record !== undefined) this.job = record;
    const job = this.job;
    const started = this.started;
    if (started !== undefined) {
      const line = {
        job_id: job.id,
        tenant: job.tenant,
        report_type: job.reportType,
        state: "running",
        attempt: started.attempt,
        ...jobTransitions.started.logFields?.(started, job),
      };
      inJobTrace(job.id, () => this.logger.info(line, "job running"));
    }
    if (transition.finishes) {
      const queuedAt = job.requeuedAt ?? job.createdAt;
      reportMetrics().jobFinished(
        job.reportType,
        transition.to as JobOutcome,
        (event.time - queuedAt) / 1000,
      );
    }
    // One line per transition: never the filters or the report.
    const fields = transition.logFields?.(this.input, job);
    if (fields !== undefined) {
      const line = {
        job_id: job.id,
        tenant: job.tenant,
        report_type: job.reportType,
        state: transition.to,
        attempt: event.attempt,
        ...fields,
      };
      // In the trace of the job's attempt running here, if any (job-traces.ts).
      inJobTrace(job.id, () => this.logger.info(line, `job ${transition.to}`));
    }
    return record === undefined
      ? { applied: true, eventId: reply[1] }
      : { applied: true, eventId: reply[1], record };
  }
}

/**
 * apply-attempt.lua's keys for every transition it applies, in its order,
 * in an array with `extra` places more at the end (for the caller to fill).
 */
function attemptKeys(keys: Keys, job: TransitionSubject, extra: number): string[] {
  const all = new Array<string>(5 + extra);
  all[0] = keys.job(job.id);
  all[1] = keys.events(job.id);
  all[2] = keys.bullJobLock(job.reportType, job.id);
  all[3] = keys.live;
  all[4] = keys.tenantBacklog(job.tenant);
  return all;
}

/** No progress reports before a transition. */
const noReports: readonly TransitionInputs["progress"][] = [];

/**
 * Appends each progress report's values for apply-attempt.lua (its time,
 * progress, phase and event JSON) to `args`. Every report must be of the
 * attempt `own` names: the script checks that attempt's tokens once for all.
 */
function pushReports(
  args: (string | number)[],
  reports: readonly TransitionInputs["progress"][],
  own: { token: string; lockToken: string },
  attempt: number,
): void {
  for (const report of reports) {
    if (
      report.token !== own.token ||
      report.lockToken !== own.lockToken ||
      report.attempt !== attempt
    ) {
      throw new Error("progress reports travel only with a write of their own attempt");
    }
    const { event } = jobTransitions.progress.derive(report);
    args.push(event.time, event.progress, event.phase, encodeEventJson(encodeEvent(event)));
  }
}

/**
 * Appends the attempt's STARTED for apply-attempt.lua (its time, progress,
 * phase and event JSON) to `args`; returns its record fields. It must be of
 * the attempt `own` names: the call writes that attempt's token.
 */
function pushStarted(
  args: (string | number)[],
  started: TransitionInputs["started"],
  own: { token: string; lockToken: string },
  attempt: number,
): RecordUpdate {
  if (
    started.token !== own.token ||
    started.lockToken !== own.lockToken ||
    started.attempt !== attempt
  ) {
    throw new Error("a STARTED travels only with a write of its own attempt");
  }
  const { event, record } = jobTransitions.started.derive(started);
  args.push(event.time, event.progress, event.phase, encodeEventJson(encodeEvent(event)));
  return record;
}

/** The tokens a write of an attempt carries (AttemptWrite.token and .lockToken). */
function attemptTokens(input: object): { token: string; lockToken: string } {
  const token = "token" in input && typeof input.token === "string" ? input.token : "";
  const lockToken =
    "lockToken" in input && typeof input.lockToken === "string" ? input.lockToken : "";
  if (token === "" || lockToken === "") {
    throw new Error("a write of an attempt needs the attempt's fencing token and lock token");
  }
  return { token, lockToken };
}
