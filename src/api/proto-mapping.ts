/** Converts between the domain model and the reports.v1 messages. */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  type Job,
  type JobEvent,
  JobEventSchema,
  JobEventType,
  JobPriority,
  JobPrioritySchema,
  JobSchema,
  JobState,
  type ReportResult,
  ReportResultSchema,
  ReportType,
  ReportTypeSchema,
} from "../../gen/reports/v1/job_pb.js";
import {
  type JobEventType as DomainEventType,
  type JobPriority as DomainPriority,
  type ReportType as DomainReportType,
  type JobState as DomainState,
  type JobEventView,
  type JobView,
  jobEventTypes,
  jobPriorities,
  jobStates,
  type ReportArtifact,
  reportTypes,
} from "../domain/job.js";
import { traceIdOf } from "../telemetry/trace-context.js";

/*
 * One table per enum: the domain name (src/domain/job.ts) of each proto enum
 * value. Records over the domain types, so a domain value without its proto
 * value does not compile; every other direction is derived from them.
 */
const stateToProto: Record<DomainState, JobState> = {
  queued: JobState.QUEUED,
  running: JobState.RUNNING,
  retrying: JobState.RETRYING,
  succeeded: JobState.SUCCEEDED,
  failed: JobState.FAILED,
  cancelled: JobState.CANCELLED,
};

const eventTypeToProto: Record<DomainEventType, JobEventType> = {
  queued: JobEventType.QUEUED,
  started: JobEventType.STARTED,
  progress: JobEventType.PROGRESS,
  retrying: JobEventType.RETRYING,
  succeeded: JobEventType.SUCCEEDED,
  failed: JobEventType.FAILED,
  cancelled: JobEventType.CANCELLED,
};

const reportTypeToProto: Record<DomainReportType, ReportType> = {
  weekly: ReportType.WEEKLY,
  monthly: ReportType.MONTHLY,
  custom: ReportType.CUSTOM,
};

const priorityToProto: Record<DomainPriority, JobPriority> = {
  low: JobPriority.LOW,
  normal: JobPriority.NORMAL,
  high: JobPriority.HIGH,
};

/** The domain name of a proto value in `table`; undefined for values it does not have. */
function fromProto<D extends string, P extends number>(
  table: Record<D, P>,
  names: readonly D[],
  value: P,
): D | undefined {
  return names.find((name) => table[name] === value);
}

/** The domain report type of a proto enum value; undefined for unset or unknown values. */
export function reportTypeFromProto(t: ReportType): DomainReportType | undefined {
  return fromProto(reportTypeToProto, reportTypes, t);
}

/** The proto enum name of a report type, as proto JSON spells it: "REPORT_TYPE_WEEKLY". */
export function reportTypeToProtoName(t: DomainReportType): string {
  return ReportTypeSchema.value[reportTypeToProto[t]].name;
}

/** The proto enum name of a priority: "JOB_PRIORITY_LOW". */
export function priorityToProtoName(p: DomainPriority): string {
  return JobPrioritySchema.value[priorityToProto[p]].name;
}

/** The domain priority of a proto enum value; "normal" for unset, undefined for unknown values. */
export function priorityFromProto(p: JobPriority): DomainPriority | undefined {
  if (p === JobPriority.UNSPECIFIED) return "normal";
  return fromProto(priorityToProto, jobPriorities, p);
}

/** The domain state of a proto enum value; undefined for unset or unknown values. */
export function stateFromProto(s: JobState): DomainState | undefined {
  return fromProto(stateToProto, jobStates, s);
}

/** The domain event type of a proto enum value; undefined for unset or unknown values. */
export function eventTypeFromProto(t: JobEventType): DomainEventType | undefined {
  return fromProto(eventTypeToProto, jobEventTypes, t);
}

/** Turns a download path into the path (and query) handed out: signs it, see download-signer.ts. */
export type LinkSigner = (downloadPath: string) => string;

function resultToProto(a: ReportArtifact, baseUrl: string, sign?: LinkSigner): ReportResult {
  return create(ReportResultSchema, {
    downloadUrl: `${baseUrl}${sign ? sign(a.downloadPath) : a.downloadPath}`,
    contentType: a.contentType,
    sizeBytes: BigInt(a.sizeBytes),
  });
}

/**
 * A Job message for `job`; download URLs are made absolute with `baseUrl`
 * and signed with `signer` for the job's tenant when given.
 */
export function jobToProto(
  job: JobView,
  baseUrl: string,
  signer?: { sign(tenant: string, downloadPath: string): string },
): Job {
  return create(JobSchema, {
    id: job.id,
    userId: job.userId,
    reportType: reportTypeToProto[job.reportType],
    state: stateToProto[job.state],
    progress: job.progress,
    attemptsMade: job.attemptsMade,
    maxAttempts: job.maxAttempts,
    result: job.result
      ? resultToProto(job.result, baseUrl, signer && ((p) => signer.sign(job.tenant, p)))
      : undefined,
    failureReason: job.failureReason,
    createdAt: timestampFromMs(job.createdAt),
    startedAt: job.startedAt !== undefined ? timestampFromMs(job.startedAt) : undefined,
    finishedAt: job.finishedAt !== undefined ? timestampFromMs(job.finishedAt) : undefined,
    filters: job.filters,
    priority: priorityToProto[job.priority],
    runAt: job.runAt !== undefined ? timestampFromMs(job.runAt) : undefined,
    deadline: job.deadline !== undefined ? timestampFromMs(job.deadline) : undefined,
    phase: job.phase,
    traceId: traceIdOf(job.traceparent),
  });
}

/** A JobEvent message for `event`; `sign` signs a result's download path. */
export function eventToProto(event: JobEventView, baseUrl: string, sign?: LinkSigner): JobEvent {
  return create(JobEventSchema, {
    id: event.id,
    type: eventTypeToProto[event.type],
    state: stateToProto[event.state],
    progress: event.progress,
    phase: event.phase,
    attempt: event.attempt,
    time: timestampFromMs(event.time),
    result: event.result ? resultToProto(event.result, baseUrl, sign) : undefined,
    error: event.error ?? "",
    nextAttemptAt:
      event.nextAttemptAt !== undefined ? timestampFromMs(event.nextAttemptAt) : undefined,
    traceId: event.traceId ?? "",
  });
}
