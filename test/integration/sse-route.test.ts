/**
 * `GET /v1/jobs/{id}/events` (Server-Sent Events) with the real `curl -N`:
 * following a job to its end, resuming with Last-Event-ID or ?after=, errors,
 * keepalive comments, a client leaving (its subscription is freed), and the
 * server shutting down (a final `event: error` with `unavailable`).
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReportType } from "../../gen/reports/v1/job_pb.js";
import type { ReportGenerator } from "../../src/worker/generator.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput, type Deferred, deferred } from "../helpers/generators.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const run = promisify(execFile);

/** One parsed SSE message (comments are collected apart). */
interface SseMessage {
  id?: string;
  event?: string;
  data: string;
}

/** Parses an SSE body into its messages and comment lines. */
function parseSse(text: string): { messages: SseMessage[]; comments: string[] } {
  const messages: SseMessage[] = [];
  const comments: string[] = [];
  for (const block of text.split("\n\n")) {
    if (block.trim() === "") continue;
    const m: SseMessage = { data: "" };
    let fields = 0;
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) {
        comments.push(line.slice(1).trim());
        continue;
      }
      const i = line.indexOf(":");
      const name = line.slice(0, i);
      const value = line.slice(i + 1).replace(/^ /, "");
      if (name === "id") m.id = value;
      else if (name === "event") m.event = value;
      else if (name === "data") m.data += value;
      else continue;
      fields++;
    }
    if (fields > 0 && (m.id !== undefined || m.event !== undefined)) messages.push(m);
  }
  return { messages, comments };
}

/** `curl -sS -N <args>`, to its end: the HTTP status and the body. */
async function curlSse(args: string[]): Promise<{ status: number; body: string }> {
  const { stdout } = await run(
    "curl",
    ["-sS", "-N", "--max-time", "20", "--write-out", "\n%{http_code}", ...args],
    { maxBuffer: 16 * 1024 * 1024 },
  );
  const at = stdout.lastIndexOf("\n");
  return { status: Number(stdout.slice(at + 1)), body: stdout.slice(0, at) };
}

/** A curl left running: its output so far, and a way to stop it. */
interface LiveCurl {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

function startCurl(args: string[]): LiveCurl {
  const child = spawn("curl", ["-sS", "-N", "--max-time", "30", ...args]);
  let out = "";
  child.stdout?.setEncoding("utf8");
  child.stdout?.on("data", (c: string) => {
    out += c;
  });
  const exited = new Promise<number | null>((resolve) => child.once("close", resolve));
  return { child, output: () => out, exited };
}

/** A custom-report generator that reports fetch-data, then waits for its job's gate. */
function gatedGenerator(gates: Map<string, Deferred>): ReportGenerator {
  return {
    async generate(input, progress) {
      await progress(40, "fetch-data");
      let gate = gates.get(input.jobId);
      if (gate === undefined) {
        gate = deferred();
        gates.set(input.jobId, gate);
      }
      await gate.promise;
      await progress(80, "render");
      return csvOutput;
    },
  };
}

describe("GET /v1/jobs/{id}/events", () => {
  let t: TestApp;
  const gates = new Map<string, Deferred>();
  const release = (jobId: string) => {
    let gate = gates.get(jobId);
    if (gate === undefined) {
      gate = deferred();
      gates.set(jobId, gate);
    }
    gate.resolve();
  };

  beforeAll(async () => {
    t = await startTestApp(
      { WATCH_KEEPALIVE_MS: "150" },
      { generators: { custom: gatedGenerator(gates) } },
    );
  });
  afterAll(async () => {
    for (const g of gates.values()) g.resolve();
    await t?.close();
  });

  const submit = async (userId: string, reportType = ReportType.WEEKLY) =>
    (await reportClient("connect-binary", t.url).submitReport({ userId, reportType })).jobId;

  /** Every event id of a job, as WatchJob (the RPC) sees them. */
  const rpcEventIds = async (jobId: string) => {
    const ids: string[] = [];
    for await (const res of reportClient("connect-binary", t.url).watchJob({ jobId })) {
      if (res.event) ids.push(res.event.id);
    }
    return ids;
  };

  it("follows a job to its terminal event with curl -N, then ends", async () => {
    const jobId = await submit("sse-1");
    const res = await curlSse([`${t.url}/v1/jobs/${jobId}/events`]);
    expect(res.status).toBe(200);
    const { messages } = parseSse(res.body);
    expect(messages.map((m) => m.event)).toEqual([
      "queued",
      "started",
      "progress",
      "progress",
      "succeeded",
    ]);
    const data = messages.map((m) => JSON.parse(m.data) as Record<string, unknown>);
    expect(data.map((d) => d.type)).toEqual([
      "JOB_EVENT_TYPE_QUEUED",
      "JOB_EVENT_TYPE_STARTED",
      "JOB_EVENT_TYPE_PROGRESS",
      "JOB_EVENT_TYPE_PROGRESS",
      "JOB_EVENT_TYPE_SUCCEEDED",
    ]);
    // id: is the stream cursor, the same as the event's own id and WatchJob's.
    expect(messages.map((m) => m.id)).toEqual(data.map((d) => d.id));
    expect(messages.map((m) => m.id)).toEqual(await rpcEventIds(jobId));
    expect(data.at(-1)).toMatchObject({
      progress: 100,
      result: { downloadUrl: expect.stringContaining(`/v1/artifacts/${jobId}/`) },
    });
  });

  it("streams over HTTP/2 (prior knowledge) on the same port", async () => {
    const jobId = await submit("sse-h2");
    const res = await curlSse(["--http2-prior-knowledge", `${t.url}/v1/jobs/${jobId}/events`]);
    expect(res.status).toBe(200);
    expect(parseSse(res.body).messages.map((m) => m.id)).toEqual(await rpcEventIds(jobId));
  });

  it("sends text/event-stream with no-cache headers", async () => {
    const jobId = await submit("sse-headers");
    const { stdout } = await run("curl", [
      "-sS",
      "-N",
      "--max-time",
      "20",
      "-o",
      "/dev/null",
      "-D",
      "-",
      `${t.url}/v1/jobs/${jobId}/events`,
    ]);
    expect(stdout).toMatch(/^HTTP\/1\.1 200/);
    expect(stdout.toLowerCase()).toContain("content-type: text/event-stream");
    expect(stdout.toLowerCase()).toContain("cache-control: no-cache");
  });

  it("resumes after Last-Event-ID (or ?after=) with exactly the remaining events", async () => {
    const jobId = await submit("sse-resume");
    const all = await rpcEventIds(jobId);
    expect(all).toHaveLength(5);
    const url = `${t.url}/v1/jobs/${jobId}/events`;
    const byHeader = await curlSse(["-H", `Last-Event-ID: ${all[1]}`, url]);
    expect(parseSse(byHeader.body).messages.map((m) => m.id)).toEqual(all.slice(2));
    const byQuery = await curlSse([`${url}?after=${encodeURIComponent(all[2] ?? "")}`]);
    expect(parseSse(byQuery.body).messages.map((m) => m.id)).toEqual(all.slice(3));
    // The header wins over the query (EventSource reconnects keep the URL).
    const both = await curlSse([
      "-H",
      `Last-Event-ID: ${all[3]}`,
      `${url}?after=${encodeURIComponent(all[0] ?? "")}`,
    ]);
    expect(parseSse(both.body).messages.map((m) => m.id)).toEqual(all.slice(4));
    // From the terminal event nothing more will come: 204 stops EventSource reconnecting.
    const done = await curlSse(["-H", `Last-Event-ID: ${all[4]}`, url]);
    expect(done.status).toBe(204);
    expect(done.body).toBe("");
  });

  it("answers errors found before the stream starts as JSON with their HTTP status", async () => {
    const missing = await curlSse([`${t.url}/v1/jobs/noSuchJob42/events`]);
    expect(missing.status).toBe(404);
    expect(JSON.parse(missing.body)).toMatchObject({ code: "not_found" });
    const badId = await curlSse([`${t.url}/v1/jobs/bad%20id/events`]);
    expect(badId.status).toBe(400);
    const jobId = await submit("sse-bad-cursor");
    const badCursor = await curlSse([
      "-H",
      "Last-Event-ID: nope",
      `${t.url}/v1/jobs/${jobId}/events`,
    ]);
    expect(badCursor.status).toBe(400);
    expect(JSON.parse(badCursor.body)).toMatchObject({ code: "invalid_argument" });
    const ahead = await curlSse([
      "-H",
      `Last-Event-ID: ${Date.now() + 3600_000}-0`,
      `${t.url}/v1/jobs/${jobId}/events`,
    ]);
    expect(ahead.status).toBe(400);
    expect(JSON.parse(ahead.body)).toMatchObject({ code: "out_of_range" });
  });

  it("streams live events as they happen, with keepalive comments while quiet", async () => {
    const jobId = await submit("sse-live", ReportType.CUSTOM);
    const curl = startCurl([`${t.url}/v1/jobs/${jobId}/events`]);
    try {
      // The job holds after fetch-data: that event arrives before the job goes on (no buffering).
      await waitFor(() => curl.output().includes('"phase":"fetch-data"'), {
        what: "the fetch-data event",
      });
      await waitFor(() => parseSse(curl.output()).comments.includes("keepalive"), {
        what: "a keepalive comment",
      });
      expect(curl.output()).not.toContain("succeeded");
      release(jobId);
      expect(await curl.exited).toBe(0);
      expect(parseSse(curl.output()).messages.at(-1)?.event).toBe("succeeded");
    } finally {
      curl.child.kill("SIGKILL");
    }
  });

  it("frees the watch's subscription when the client disconnects", async () => {
    const jobId = await submit("sse-leave", ReportType.CUSTOM);
    const before = t.app.hub?.listenerCount ?? 0;
    const curl = startCurl([`${t.url}/v1/jobs/${jobId}/events`]);
    try {
      await waitFor(() => curl.output().includes('"phase":"fetch-data"'), {
        what: "the fetch-data event",
      });
      expect(t.app.hub?.listenerCount).toBe(before + 1);
      curl.child.kill("SIGKILL");
      await curl.exited;
      await waitFor(() => t.app.hub?.listenerCount === before, {
        what: "the subscription to be released",
      });
    } finally {
      curl.child.kill("SIGKILL");
      release(jobId);
    }
  });
});

describe("GET /v1/jobs/{id}/events when the server shuts down", () => {
  it("ends the stream with an unavailable error event", async () => {
    const gates = new Map<string, Deferred>();
    const t = await startTestApp({}, { generators: { custom: gatedGenerator(gates) } });
    let curl: LiveCurl | undefined;
    try {
      const { jobId } = await reportClient("connect-binary", t.url).submitReport({
        userId: "sse-stop",
        reportType: ReportType.CUSTOM,
      });
      const live = startCurl([`${t.url}/v1/jobs/${jobId}/events`]);
      curl = live;
      await waitFor(() => live.output().includes('"phase":"fetch-data"'), {
        what: "the fetch-data event",
      });
      const closing = t.close();
      for (const g of gates.values()) g.resolve();
      expect(await live.exited).toBe(0);
      const last = parseSse(live.output()).messages.at(-1);
      expect(last?.event).toBe("error");
      expect(JSON.parse(last?.data ?? "{}")).toMatchObject({ code: "unavailable" });
      await closing;
    } finally {
      curl?.child.kill("SIGKILL");
      for (const g of gates.values()) g.resolve();
      await t.close();
    }
  });
});
