/**
 * How a job event is stored as a Redis stream entry (and published to the
 * job's channel). Field names are short; this module is their only reader.
 */
import {
  type JobEventType,
  type JobEventView,
  type JobState,
  jobEventTypes,
  jobStates,
  type ReportArtifact,
} from "../domain/job.js";

/** An event before it has a stream id. */
export type NewJobEvent = Omit<JobEventView, "id">;

const eventTypes: readonly JobEventType[] = jobEventTypes;
const states: readonly JobState[] = jobStates;

/** Flattens an event into XADD field/value arguments. */
export function encodeEvent(e: NewJobEvent): string[] {
  const out = [
    "t",
    e.type,
    "s",
    e.state,
    "p",
    String(e.progress),
    "ph",
    e.phase,
    "a",
    String(e.attempt),
    "tm",
    String(e.time),
  ];
  if (e.result)
    out.push(
      "rp",
      e.result.downloadPath,
      "rt",
      e.result.contentType,
      "rs",
      String(e.result.sizeBytes),
    );
  if (e.error) out.push("e", e.error);
  if (e.nextAttemptAt !== undefined) out.push("na", String(e.nextAttemptAt));
  if (e.traceId) out.push("tr", e.traceId);
  return out;
}

/** Decodes a stream entry's flat field list. Unknown fields are ignored. */
export function decodeEvent(id: string, fields: readonly string[]): JobEventView {
  const h: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) h[fields[i] as string] = fields[i + 1] as string;
  const type = h.t as JobEventType;
  const state = h.s as JobState;
  const ev: JobEventView = {
    id,
    type: eventTypes.includes(type) ? type : "progress",
    state: states.includes(state) ? state : "queued",
    progress: Number(h.p ?? 0) || 0,
    phase: h.ph ?? "",
    attempt: Number(h.a ?? 0) || 0,
    time: Number(h.tm ?? 0) || 0,
  };
  if (h.rp) {
    const result: ReportArtifact = {
      downloadPath: h.rp,
      contentType: h.rt ?? "application/octet-stream",
      sizeBytes: Number(h.rs ?? 0) || 0,
    };
    ev.result = result;
  }
  if (h.e) ev.error = h.e;
  if (h.na) ev.nextAttemptAt = Number(h.na);
  if (h.tr) ev.traceId = h.tr;
  return ev;
}

/** A parsed stream id: milliseconds and sequence. */
export type StreamId = readonly [ms: bigint, seq: bigint];

/** Parses "ms-seq" (or "ms"); undefined when malformed. */
export function parseStreamId(s: string): StreamId | undefined {
  const m = /^(\d{1,20})(?:-(\d{1,20}))?$/.exec(s);
  if (!m) return undefined;
  return [BigInt(m[1] as string), BigInt(m[2] ?? "0")];
}

/** Compares two stream ids: negative, zero or positive. */
export function compareStreamIds(a: string, b: string): number {
  const pa = parseStreamId(a) ?? [0n, 0n];
  const pb = parseStreamId(b) ?? [0n, 0n];
  if (pa[0] !== pb[0]) return pa[0] < pb[0] ? -1 : 1;
  if (pa[1] !== pb[1]) return pa[1] < pb[1] ? -1 : 1;
  return 0;
}
