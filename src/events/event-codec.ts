/**
 * How a job event is stored as a Redis stream entry (and published to the
 * job's channel). Field names are short: `eventField` is their one table.
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

/** Stream entry field names of an event (Lua scripts name them as `EVENT.<key>`). */
export const eventField = {
  type: "t",
  state: "s",
  progress: "p",
  phase: "ph",
  attempt: "a",
  time: "tm",
  resultPath: "rp",
  resultType: "rt",
  resultSize: "rs",
  error: "e",
  nextAttemptAt: "na",
  traceId: "tr",
} as const;

/** Flattens an event into XADD field/value arguments. */
export function encodeEvent(e: NewJobEvent): string[] {
  const f = eventField;
  // Pushed in place (no helper closure: every transition encodes one event).
  const out: string[] = [
    f.type,
    e.type,
    f.state,
    e.state,
    f.progress,
    String(e.progress),
    f.phase,
    e.phase,
    f.attempt,
    String(e.attempt),
    f.time,
    String(e.time),
  ];
  if (e.result) {
    out.push(
      f.resultPath,
      e.result.downloadPath,
      f.resultType,
      e.result.contentType,
      f.resultSize,
      String(e.result.sizeBytes),
    );
  }
  if (e.error) out.push(f.error, e.error);
  if (e.nextAttemptAt !== undefined) out.push(f.nextAttemptAt, String(e.nextAttemptAt));
  if (e.traceId) out.push(f.traceId, e.traceId);
  return out;
}

/** A lone surrogate (half of a UTF-16 pair without its other half). */
const loneSurrogate = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/**
 * The JSON text of an event's flat field list (encodeEvent), without the
 * list's brackets: the transition script publishes it, in the message
 * `[entry id, [fields]]` that the event hub decodes, beside the stream entry
 * of the same fields, so Redis does not encode each message itself. A lone
 * surrogate becomes U+FFFD, as it does in the entry's UTF-8 bytes, so a live
 * event and its replay agree.
 */
export function encodeEventJson(fields: readonly string[]): string {
  const json = JSON.stringify(fields);
  // JSON.stringify escapes a lone surrogate as \udXXX: only then is there anything to replace.
  const text = json.includes("\\ud")
    ? JSON.stringify(fields.map((f) => f.replace(loneSurrogate, "\ufffd")))
    : json;
  return text.slice(1, -1);
}

/** Decodes a stream entry's flat field list. Unknown fields are ignored. */
export function decodeEvent(id: string, fields: readonly string[]): JobEventView {
  const f = eventField;
  const h: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) h[fields[i] as string] = fields[i + 1] as string;
  const type = h[f.type] as JobEventType;
  const state = h[f.state] as JobState;
  const ev: JobEventView = {
    id,
    type: eventTypes.includes(type) ? type : "progress",
    state: states.includes(state) ? state : "queued",
    progress: Number(h[f.progress] ?? 0) || 0,
    phase: h[f.phase] ?? "",
    attempt: Number(h[f.attempt] ?? 0) || 0,
    time: Number(h[f.time] ?? 0) || 0,
  };
  const path = h[f.resultPath];
  if (path) {
    const result: ReportArtifact = {
      downloadPath: path,
      contentType: h[f.resultType] ?? "application/octet-stream",
      sizeBytes: Number(h[f.resultSize] ?? 0) || 0,
    };
    ev.result = result;
  }
  const error = h[f.error];
  if (error) ev.error = error;
  const next = h[f.nextAttemptAt];
  if (next) ev.nextAttemptAt = Number(next);
  const traceId = h[f.traceId];
  if (traceId) ev.traceId = traceId;
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

/**
 * The trace id of a W3C traceparent as the scripts read it (append-event.lua's
 * `traceIdOf`: the hex digits between the first two dashes, after two hex
 * digits), "" when malformed or empty: what a caller passes for the event's
 * trace id field when it writes the traceparent in the same call.
 */
export function scriptTraceIdOf(traceparent: string): string {
  return /^[0-9a-fA-F]{2}-([0-9a-fA-F]+)-/.exec(traceparent)?.[1] ?? "";
}
