/**
 * The reports.v1 enums as people type and read them, derived from the
 * generated descriptors: ReportType.WEEKLY is "weekly", JobState.QUEUED is
 * "queued". These short names are the domain's names (src/domain/job.ts),
 * so which states are live and which events are terminal come from the
 * domain's own tables. No Node-only imports: the browser app uses it too.
 */
import type { GenEnum } from "@bufbuild/protobuf/codegenv2";
import {
  type JobEventType,
  JobEventTypeSchema,
  type JobState,
  JobStateSchema,
} from "../../gen/reports/v1/job_pb.js";
import { jobEventTypes, jobStates, liveStates, terminalEventTypes } from "../domain/job.js";

/** The short name of an enum value ("weekly"); undefined for a number this build does not know. */
export function shortName<T extends number>(schema: GenEnum<T>, value: T): string | undefined {
  return schema.values.find((v) => v.number === value)?.localName.toLowerCase();
}

/** Every value but the zero (UNSPECIFIED) one, by short name, in proto order: weekly → ReportType.WEEKLY. */
export function valuesByShortName<T extends number>(schema: GenEnum<T>): ReadonlyMap<string, T> {
  const out = new Map<string, T>();
  for (const v of schema.values) {
    const n = v.number;
    if (n !== 0 && isValueOf(schema, n)) out.set(v.localName.toLowerCase(), n);
  }
  return out;
}

/** "weekly, monthly or custom": the short names of an enum (zero value aside), for sentences. */
export function shortNameList<T extends number>(schema: GenEnum<T>): string {
  const names = [...valuesByShortName(schema).keys()];
  return names.length < 2 ? names.join("") : `${names.slice(0, -1).join(", ")} or ${names.at(-1)}`;
}

/** Whether a job in this state can still change (queued, running, retrying). */
export function isLiveState(state: JobState): boolean {
  const name = jobStates.find((s) => s === shortName(JobStateSchema, state));
  return name !== undefined && liveStates.includes(name);
}

/** Whether this event ends the job's events (succeeded, failed, cancelled). */
export function isTerminalEvent(type: JobEventType): boolean {
  const name = jobEventTypes.find((t) => t === shortName(JobEventTypeSchema, type));
  return name !== undefined && terminalEventTypes.has(name);
}

function isValueOf<T extends number>(schema: GenEnum<T>, n: number): n is T {
  return schema.values.some((v) => v.number === n);
}
