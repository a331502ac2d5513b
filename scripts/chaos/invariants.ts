/**
 * The chaos run's verdict: each invariant as one row (pass or fail, how much
 * was checked, how many violations, a few examples), from what the callers
 * saw (load.ts) and what Redis and the artifact folder hold at the end.
 */
import type { JobEventView } from "../../src/domain/job.js";
import { terminalEventTypes } from "../../src/domain/job.js";
import { isStorageUnavailable } from "../../src/queue/storage-errors.js";
import type { LoadResults, Watcher } from "./load.js";
import type { UnexpectedExit } from "./processes.js";

/** One row of the table. */
export interface InvariantRow {
  name: string;
  checked: number;
  violations: number;
  detail: string;
  /** A few violations, as sentences. */
  examples: string[];
}

/** What the end of the run found, beside the callers' results. */
export interface FinalState {
  /** Each tracked job's log as last read (at the end when still stored, else at its check). */
  logs: Map<string, JobEventView[]>;
  /** Tracked jobs whose record had expired by the end. */
  expired: ReadonlySet<string>;
  /** Tracked jobs not ended at the end, with where BullMQ holds them (undefined: nowhere). */
  live: Map<string, string | undefined>;
  /** Idempotency key (tenant/digest) → job ids whose records named it, over the run's snapshots. */
  serverKeys: Map<string, Set<string>>;
  unexpectedExits: UnexpectedExit[];
  /** The services' "unexpected error" log lines (what they answered INTERNAL), as messages. */
  unexpectedErrors: string[];
  /** What Redis still held of the jobs after their retention. */
  redisLeftovers: string[];
  /** Report folders left after retention. */
  fileLeftovers: string[];
  /** Seconds waited past the last job's end for retention to empty Redis. */
  retentionWaitS: number;
}

/** Computes the rows. */
export function evaluate(load: LoadResults, end: FinalState): InvariantRow[] {
  const jobs = [...load.jobs.values()];
  const row = (
    name: string,
    checked: number,
    problems: string[],
    detail: string,
  ): InvariantRow => ({
    name,
    checked,
    violations: problems.length,
    detail,
    examples: problems.slice(0, 5),
  });
  const rows: InvariantRow[] = [];

  // 1. Every acknowledged job ended, or is provably still live (held by BullMQ).
  {
    const problems: string[] = [];
    const byState = new Map<string, number>();
    let liveHeld = 0;
    for (const j of jobs) {
      for (const p of j.problems)
        if (p.startsWith("lost:")) problems.push(`${j.id}: ${p.slice(5)}`);
      if (j.expiredUnchecked) problems.push(`${j.id}: expired before its end could be checked`);
      if (end.live.has(j.id)) {
        const where = end.live.get(j.id);
        if (where === undefined) problems.push(`${j.id}: still live and not held by BullMQ`);
        else liveHeld += 1;
      } else if (j.endState !== undefined) {
        byState.set(j.endState, (byState.get(j.endState) ?? 0) + 1);
      }
    }
    const states = [...byState].map(([s, n]) => `${n} ${s}`).join(", ");
    rows.push(
      row(
        "acknowledged jobs ended (or are provably live)",
        jobs.length,
        problems,
        `${states}${liveHeld > 0 ? `, ${liveHeld} live in BullMQ` : ""}; ${load.unackedSubmits} unacknowledged submits`,
      ),
    );
  }

  // 2. No idempotency key made two jobs: by the callers' answers and by the records.
  {
    const problems: string[] = [];
    for (const [key, ids] of load.keyAnswers)
      if (ids.size > 1) problems.push(`key ${key} answered ${[...ids].join(", ")}`);
    for (const [key, ids] of end.serverKeys)
      if (ids.size > 1) problems.push(`records ${[...ids].join(", ")} share key ${key}`);
    for (const j of jobs)
      for (const p of j.problems) if (p.startsWith("key:")) problems.push(`${j.id}: ${p.slice(4)}`);
    const answers = [...load.keyAnswers.values()].reduce((s, ids) => s + ids.size, 0);
    rows.push(
      row(
        "no idempotency key made two jobs",
        load.keyAnswers.size,
        problems,
        `${load.keyAnswers.size} keys (${answers} distinct answers), ${end.serverKeys.size} keys in records`,
      ),
    );
  }

  // 3. Each job's log is a valid sequence with one terminal event per run.
  {
    const problems: string[] = [];
    let runs = 0;
    let checked = 0;
    for (const j of jobs) {
      if (j.logCheck === undefined) continue;
      checked += 1;
      runs += j.logCheck.runs;
      for (const p of j.logCheck.problems) problems.push(`${j.id}: ${p}`);
    }
    rows.push(
      row("each job's log is valid, one terminal event per run", checked, problems, `${runs} runs`),
    );
  }

  // 3b. Failure reasons (on the wire as events' errors and the job's failure_reason) are sentences.
  {
    const problems: string[] = [];
    let reasons = 0;
    for (const [id, events] of end.logs) {
      for (const e of events) {
        if (!e.error) continue;
        reasons += 1;
        if (
          isStorageUnavailable(new Error(e.error)) ||
          /\bERR\b|NOSCRIPT|WRONGTYPE|at .*\.js:\d+/.test(e.error)
        )
          problems.push(`${id}: ${e.type} event's error is ${JSON.stringify(e.error)}`);
      }
    }
    rows.push(row("failure reasons carry no Redis error text", reasons, problems, ""));
  }

  // 4. Every SUCCEEDED job's download answers 200 with its recorded size.
  {
    const problems: string[] = [];
    const succeeded = jobs.filter((j) => j.endState === "succeeded");
    for (const j of jobs)
      for (const p of j.problems)
        if (p.startsWith("download:")) problems.push(`${j.id}: ${p.slice(9)}`);
    const ok = succeeded.filter((j) => j.downloadChecked).length;
    rows.push(
      row(
        "SUCCEEDED downloads answer 200 with their size",
        succeeded.length,
        problems,
        `${ok} downloaded`,
      ),
    );
  }

  // 5. A cancel answered CANCELLED stays CANCELLED.
  {
    const answered = jobs.filter((j) => j.cancelAnswer === "CANCELLED");
    const problems = answered
      .filter((j) => j.endState !== undefined && j.endState !== "cancelled")
      .map((j) => `${j.id}: CancelJob answered CANCELLED, the job ended ${j.endState}`);
    const asked = jobs.filter((j) => j.cancelAnswer !== undefined).length;
    rows.push(
      row(
        "acknowledged cancels hold",
        answered.length,
        problems,
        `${asked} cancels answered, ${answered.length} CANCELLED at once`,
      ),
    );
  }

  // 6. An acknowledged RetryJob ran the job again.
  {
    const retried = jobs.filter((j) => j.retryAcks > 0);
    const problems = retried
      .filter((j) => j.logCheck !== undefined && j.logCheck.runs < 1 + j.retryAcks)
      .map((j) => `${j.id}: ${j.retryAcks} retries acknowledged, ${j.logCheck?.runs} runs logged`);
    const acks = retried.reduce((s, j) => s + j.retryAcks, 0);
    rows.push(row("acknowledged retries ran again", retried.length, problems, `${acks} retries`));
  }

  // 7. Every watcher saw each event once, in order, across its reconnects.
  {
    const problems: string[] = [];
    let events = 0;
    let reconnects = 0;
    for (const w of load.watchers) {
      events += w.seen.length;
      reconnects += w.reconnects;
      const p = watcherProblem(w, end.logs.get(w.jobId), {
        live: end.live.has(w.jobId),
        expired: end.expired.has(w.jobId),
      });
      if (p !== undefined) problems.push(`watcher of ${w.jobId}: ${p}`);
    }
    rows.push(
      row(
        "watchers saw every event once, in order",
        load.watchers.length,
        problems,
        `${events} events, ${reconnects} reconnects`,
      ),
    );
  }

  // 8. No service process died on its own.
  rows.push(
    row(
      "no process died but by a fault",
      1,
      end.unexpectedExits.map(
        (e) =>
          `${e.name} exited code=${e.code} signal=${e.signal}: ${e.stderrTail.trim().split("\n").slice(-3).join(" | ")}`,
      ),
      "",
    ),
  );

  // 9. No call was answered INTERNAL: faults are UNAVAILABLE (retry), never "internal error".
  rows.push(
    row(
      "no call answered INTERNAL",
      [...load.calls.values()].reduce((s, n) => s + n, 0),
      end.unexpectedErrors,
      load.internal.length > 0
        ? `clients saw: ${[...new Set(load.internal)].slice(0, 3).join("; ")}`
        : "",
    ),
  );

  // 10. After retention, Redis holds nothing of the jobs and no report is left.
  rows.push(
    row(
      "after retention Redis holds nothing of the jobs",
      jobs.length,
      end.redisLeftovers,
      `waited ${end.retentionWaitS} s past the last end`,
    ),
  );
  rows.push(row("after retention no report files are left", jobs.length, end.fileLeftovers, ""));
  return rows;
}

/** What is wrong with what a watcher saw, compared with the job's log; undefined when nothing. */
export function watcherProblem(
  w: Pick<Watcher, "seen" | "ended" | "notFound">,
  log: readonly Pick<JobEventView, "id" | "type">[] | undefined,
  job: { live: boolean; expired: boolean },
): string | undefined {
  if (log === undefined) return w.seen.length === 0 ? undefined : "no log to compare with";
  for (const [i, e] of w.seen.entries()) {
    const expected = log[i];
    if (expected === undefined) return `event ${i + 1} (${e.id}) is not in the log`;
    if (expected.id !== e.id) {
      const dup = w.seen.slice(0, i).some((s) => s.id === e.id);
      return `event ${i + 1} is ${e.id}${dup ? " again" : ""}, the log's is ${expected.id} (${expected.type})`;
    }
  }
  if (w.notFound) return job.expired ? undefined : "answered NOT_FOUND for a job still stored";
  const last = w.seen[w.seen.length - 1];
  if (w.ended && (last === undefined || !terminalEventTypes.has(last.type as JobEventView["type"])))
    return `ended after ${last?.type ?? "nothing"}, not a terminal event`;
  if (!w.ended && !job.live) return `did not end (saw ${w.seen.length} of ${log.length} events)`;
  return undefined;
}

/** The table, as text. */
export function formatTable(rows: readonly InvariantRow[]): string {
  const head = ["invariant", "result", "checked", "violations", "detail"];
  const body = rows.map((r) => [
    r.name,
    r.violations === 0 ? "pass" : "FAIL",
    String(r.checked),
    String(r.violations),
    r.detail,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? "").length)));
  const line = (cells: string[]) =>
    `| ${cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join(" | ")} |`;
  const sep = `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`;
  const out = [line(head), sep, ...body.map(line)];
  for (const r of rows) {
    if (r.violations === 0) continue;
    out.push("", `${r.name}: ${r.violations} violation(s), e.g.`);
    for (const e of r.examples) out.push(`  - ${e}`);
  }
  return out.join("\n");
}
