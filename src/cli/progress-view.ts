/**
 * How `watch` and `submit --watch` show a job: a progress bar redrawn in
 * place on a terminal, one plain line per event otherwise (a pipe, a file, a
 * CI log), or one JSON document per line with `--json`.
 */
import { toJson } from "@bufbuild/protobuf";
import { type JobEvent, JobEventSchema, JobEventType } from "../../gen/reports/v1/job_pb.js";

/** Where the view writes. */
export interface ViewOutput {
  write(text: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

/** Shows events; `end()` finishes the last line. */
export interface ProgressView {
  event(event: JobEvent): void;
  /** A line of its own (a reconnect notice, say), not breaking the bar. */
  note(text: string): void;
  end(): void;
}

/** The short name of an event type: JobEventType.PROGRESS is "PROGRESS". */
export function eventName(type: JobEventType): string {
  return JobEventType[type] ?? "UNKNOWN";
}

/** Picks the view for `out`: JSON lines, a bar on a TTY, or plain lines. */
export function createProgressView(out: ViewOutput, options: { json: boolean }): ProgressView {
  if (options.json) {
    return {
      event: (e) => out.write(`${JSON.stringify(toJson(JobEventSchema, e))}\n`),
      note: () => undefined,
      end: () => undefined,
    };
  }
  if (out.isTTY) return createBarView(out);
  return {
    event: (e) => out.write(`${plainLine(e)}\n`),
    note: (text) => out.write(`${text}\n`),
    end: () => undefined,
  };
}

/** One event as a plain line: `PROGRESS  40% fetch-data`. */
export function plainLine(e: JobEvent): string {
  const parts = [eventName(e.type).padEnd(9), `${String(e.progress).padStart(3)}%`];
  if (e.phase) parts.push(e.phase);
  if (e.type === JobEventType.RETRYING || e.type === JobEventType.FAILED) {
    if (e.error) parts.push(`(${e.error})`);
  }
  if (e.attempt > 1) parts.push(`attempt ${e.attempt}`);
  return parts.join(" ");
}

/** `[##########--------------------]  40%  fetch-data`, redrawn in place. */
export function barLine(progress: number, label: string, width = 30): string {
  const p = Math.max(0, Math.min(100, progress));
  const filled = Math.round((p / 100) * width);
  return `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${String(p).padStart(3)}%  ${label}`;
}

function createBarView(out: ViewOutput): ProgressView {
  let drawn = false;
  const draw = (line: string) => {
    const max = Math.max(20, (out.columns ?? 80) - 1);
    // \r + erase line: the bar replaces itself instead of scrolling.
    out.write(`\r\x1b[2K${line.slice(0, max)}`);
    drawn = true;
  };
  const breakLine = () => {
    if (drawn) out.write("\n");
    drawn = false;
  };
  return {
    event(e) {
      const label = [eventName(e.type), e.phase].filter((s) => s !== "").join(" ");
      draw(barLine(e.progress, label));
      if (e.type === JobEventType.RETRYING && e.error) {
        breakLine();
        out.write(`retrying: ${e.error}\n`);
      }
    },
    note(text) {
      breakLine();
      out.write(`${text}\n`);
    },
    end: breakLine,
  };
}
