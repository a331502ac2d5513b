/**
 * reportctl's commands. Each prints for people by default and one JSON
 * document (JSON lines for watch) with --json, and resolves with an exit code.
 */
import { type JsonObject, type JsonValue, toJson } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type Job,
  type JobEvent,
  JobEventType,
  JobPrioritySchema,
  JobSchema,
  JobState,
  JobStateSchema,
  type ReportType,
  ReportTypeSchema,
} from "../../gen/reports/v1/job_pb.js";
import { shortName, shortNameList, valuesByShortName } from "../client/job-enums.js";
import type { CliContext } from "./cli-context.js";
import { ExitCode, UsageError } from "./exit-codes.js";
import { createProgressView } from "./progress-view.js";

type Command = (ctx: CliContext) => Promise<number>;

/** The enums by the names people type: "weekly", "high", "queued". */
const reportTypes = valuesByShortName(ReportTypeSchema);
const priorities = valuesByShortName(JobPrioritySchema);
const states = valuesByShortName(JobStateSchema);

/** The commands, by name. */
export const commands: Record<string, Command> = {
  async submit(ctx) {
    const { values, args } = ctx;
    const user = str(values.user) ?? args[0];
    const typeName = str(values.type) ?? args[1];
    if (args.length > 2)
      throw new UsageError(`submit takes no argument after the type (got "${args[2]}")`);
    if (user === undefined || user === "") throw new UsageError("submit needs --user USER");
    if (typeName === undefined) {
      throw new UsageError(`submit needs --type ${[...reportTypes.keys()].join("|")}`);
    }
    const reportType = reportTypes.get(typeName.toLowerCase());
    if (reportType === undefined) {
      throw new UsageError(`--type must be ${shortNameList(ReportTypeSchema)} (got "${typeName}")`);
    }
    const priorityName = str(values.priority) ?? "normal";
    const priority = priorities.get(priorityName.toLowerCase());
    if (priority === undefined) {
      throw new UsageError(
        `--priority must be ${shortNameList(JobPrioritySchema)} (got "${priorityName}")`,
      );
    }
    const res = await ctx.client.submitReport(
      {
        userId: user,
        reportType,
        idempotencyKey: str(values["idempotency-key"]) ?? str(values.key) ?? "",
        filters: parseFilters(str(values.filters), (values.filter as string[] | undefined) ?? []),
        priority,
        runAt: parseTime("--run-at", str(values["run-at"])),
        deadline: parseTime("--deadline", str(values.deadline)),
      },
      { signal: ctx.io.signal },
    );
    const out = ctx.io.stdout;
    if (ctx.json) {
      const doc = {
        jobId: res.jobId,
        statusUrl: res.statusUrl,
        deduplicated: res.deduplicated,
        job: res.job ? toJson(JobSchema, res.job) : null,
      };
      // With --watch, JSON lines: this document, then one per event.
      out.write(`${JSON.stringify(doc)}\n`);
    } else {
      out.write(
        `job ${res.jobId} submitted${res.deduplicated ? " before (same idempotency key)" : ""}\nstatus: ${res.statusUrl}\n`,
      );
    }
    if (values.watch === true) return follow(ctx, res.jobId, "");
    return ExitCode.ok;
  },

  async get(ctx) {
    const jobId = oneJobId(ctx, "get");
    const { job } = await ctx.client.getJob({ jobId }, { signal: ctx.io.signal });
    if (job === undefined) throw new ConnectError("GetJob answered without a job", Code.Internal);
    ctx.io.stdout.write(
      ctx.json ? `${JSON.stringify(toJson(JobSchema, job))}\n` : describeJob(job),
    );
    return ExitCode.ok;
  },

  async watch(ctx) {
    const jobId = oneJobId(ctx, "watch");
    return follow(ctx, jobId, str(ctx.values.after) ?? "");
  },

  async cancel(ctx) {
    const jobId = oneJobId(ctx, "cancel");
    const { job } = await ctx.client.cancelJob(
      { jobId, reason: str(ctx.values.reason) ?? "" },
      { signal: ctx.io.signal },
    );
    if (job === undefined)
      throw new ConnectError("CancelJob answered without a job", Code.Internal);
    ctx.io.stdout.write(
      ctx.json
        ? `${JSON.stringify(toJson(JobSchema, job))}\n`
        : `job ${job.id} ${stateName(job.state)}\n`,
    );
    return ExitCode.ok;
  },

  async retry(ctx) {
    const jobId = oneJobId(ctx, "retry");
    const { job } = await ctx.client.retryJob({ jobId }, { signal: ctx.io.signal });
    if (job === undefined) throw new ConnectError("RetryJob answered without a job", Code.Internal);
    ctx.io.stdout.write(
      ctx.json
        ? `${JSON.stringify(toJson(JobSchema, job))}\n`
        : `job ${job.id} ${stateName(job.state)} again\n`,
    );
    return ExitCode.ok;
  },

  async list(ctx) {
    const { values } = ctx;
    if (ctx.args.length > 0) throw new UsageError(`list takes no arguments (got "${ctx.args[0]}")`);
    const wanted = (str(values.state) ?? "")
      .split(",")
      .map((s) => s.trim().toLowerCase())
      .filter((s) => s !== "")
      .map((s) => {
        const v = states.get(s);
        if (v === undefined) {
          throw new UsageError(`--state must list ${[...states.keys()].join(", ")} (got "${s}")`);
        }
        return v;
      });
    const sizeText = str(values["page-size"]);
    const pageSize = sizeText === undefined ? 0 : Number(sizeText);
    if (!Number.isInteger(pageSize) || pageSize < 0) {
      throw new UsageError(`--page-size must be a whole number (got "${sizeText}")`);
    }
    const jobs: Job[] = [];
    let pageToken = str(values["page-token"]) ?? "";
    for (;;) {
      const page = await ctx.client.listJobs(
        { userId: str(values.user) ?? "", states: wanted, pageSize, pageToken },
        { signal: ctx.io.signal },
      );
      jobs.push(...page.jobs);
      pageToken = page.nextPageToken;
      if (values.all !== true || pageToken === "") break;
    }
    if (ctx.json) {
      const doc = { jobs: jobs.map((j) => toJson(JobSchema, j)), nextPageToken: pageToken };
      ctx.io.stdout.write(`${JSON.stringify(doc)}\n`);
    } else {
      const lines = jobs.map((j) =>
        [
          j.id.padEnd(24),
          stateName(j.state).padEnd(10),
          `${String(j.progress).padStart(3)}%`,
          typeName(j.reportType).padEnd(8),
          j.userId,
          j.createdAt ? timestampDate(j.createdAt).toISOString() : "",
        ].join("  "),
      );
      if (lines.length === 0) lines.push("no jobs");
      if (pageToken !== "") lines.push(`more: --page-token ${pageToken}`);
      ctx.io.stdout.write(`${lines.join("\n")}\n`);
    }
    return ExitCode.ok;
  },
};

/** Follows a job to its end with the resumable watch; the exit code says how it ended. */
async function follow(ctx: CliContext, jobId: string, afterEventId: string): Promise<number> {
  const view = createProgressView(ctx.io.stdout, { json: ctx.json });
  let last: JobEvent | undefined;
  try {
    for await (const event of ctx.client.watchJob(jobId, {
      afterEventId,
      signal: ctx.io.signal,
    })) {
      last = event;
      view.event(event);
    }
  } finally {
    view.end();
  }
  if (last === undefined) {
    // Resumed from the end: say how the job ended.
    const { job } = await ctx.client.getJob({ jobId }, { signal: ctx.io.signal });
    if (!ctx.json && job) ctx.io.stdout.write(describeJob(job));
    return exitForState(job?.state);
  }
  if (!ctx.json) {
    if (last.type === JobEventType.SUCCEEDED && last.result) {
      ctx.io.stdout.write(`download: ${last.result.downloadUrl}\n`);
    } else if (last.type === JobEventType.FAILED) {
      ctx.io.stdout.write(`job ${jobId} FAILED: ${last.error}\n`);
    } else if (last.type === JobEventType.CANCELLED) {
      ctx.io.stdout.write(`job ${jobId} CANCELLED${last.error ? `: ${last.error}` : ""}\n`);
    }
  }
  switch (last.type) {
    case JobEventType.SUCCEEDED:
      return ExitCode.ok;
    case JobEventType.FAILED:
      return ExitCode.jobFailed;
    case JobEventType.CANCELLED:
      return ExitCode.jobCancelled;
    default:
      return ExitCode.error;
  }
}

function exitForState(state: JobState | undefined): number {
  if (state === JobState.FAILED) return ExitCode.jobFailed;
  if (state === JobState.CANCELLED) return ExitCode.jobCancelled;
  return ExitCode.ok;
}

function oneJobId(ctx: CliContext, command: string): string {
  const [jobId, extra] = ctx.args;
  if (jobId === undefined || jobId === "") throw new UsageError(`${command} needs a JOB_ID`);
  if (extra !== undefined) throw new UsageError(`${command} takes one JOB_ID (got "${extra}" too)`);
  return jobId;
}

function str(v: string | boolean | string[] | undefined): string | undefined {
  return typeof v === "string" ? v : undefined;
}

/** --filters JSON, then each --filter key=value on top (a value that parses as JSON is JSON). */
export function parseFilters(json: string | undefined, pairs: string[]): JsonObject | undefined {
  let filters: JsonObject | undefined;
  if (json !== undefined) {
    let parsed: JsonValue;
    try {
      parsed = JSON.parse(json) as JsonValue;
    } catch {
      throw new UsageError(`--filters must be a JSON object (got ${json})`);
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new UsageError(`--filters must be a JSON object (got ${json})`);
    }
    filters = parsed;
  }
  for (const pair of pairs) {
    const at = pair.indexOf("=");
    if (at < 1) throw new UsageError(`--filter must be KEY=VALUE (got "${pair}")`);
    const raw = pair.slice(at + 1);
    let value: JsonValue = raw;
    try {
      value = JSON.parse(raw) as JsonValue;
    } catch {
      // A bare string.
    }
    filters = { ...filters, [pair.slice(0, at)]: value };
  }
  return filters;
}

/** ISO 8601, or `+N` with s, m, h or d from now. */
export function parseTime(
  flag: string,
  text: string | undefined,
  now = Date.now(),
): Timestamp | undefined {
  if (text === undefined) return undefined;
  const relative = /^\+(\d+)(s|m|h|d)$/.exec(text);
  if (relative) {
    const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[relative[2] as "s"];
    return timestampFromMs(now + Number(relative[1]) * unit);
  }
  const ms = Date.parse(text);
  if (Number.isNaN(ms) || !/^\d{4}-\d{2}-\d{2}/.test(text)) {
    throw new UsageError(`${flag} must be an ISO 8601 time or +N[s|m|h|d] (got "${text}")`);
  }
  return timestampFromMs(ms);
}

function stateName(s: JobState): string {
  return JobState[s] ?? "UNKNOWN";
}

function typeName(t: ReportType): string {
  return shortName(ReportTypeSchema, t) ?? "unknown";
}

/** A job for people, one field a line. */
function describeJob(job: Job): string {
  const time = (t: Timestamp | undefined) => (t ? timestampDate(t).toISOString() : "-");
  const lines = [
    `job       ${job.id}`,
    `user      ${job.userId}`,
    `type      ${typeName(job.reportType)}`,
    `state     ${stateName(job.state)}`,
    `progress  ${job.progress}%${job.phase ? ` (${job.phase})` : ""}`,
    `attempts  ${job.attemptsMade}/${job.maxAttempts}`,
    `created   ${time(job.createdAt)}`,
  ];
  if (job.startedAt) lines.push(`started   ${time(job.startedAt)}`);
  if (job.finishedAt) lines.push(`finished  ${time(job.finishedAt)}`);
  if (job.failureReason) lines.push(`reason    ${job.failureReason}`);
  if (job.result) lines.push(`download  ${job.result.downloadUrl}`);
  return `${lines.join("\n")}\n`;
}
