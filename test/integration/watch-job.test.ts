/**
 * WatchJob against the real app and Redis: joined before, during and after a
 * job, resumed from a cursor, errors, keepalives, and 1,000 watchers over one
 * HTTP/2 connection sharing the hub's single subscriber connection.
 *
 * Timing is controlled with gated generators (a promise the test resolves),
 * never with sleeps.
 */

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type JobEvent, JobEventType, JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { ReportService, type WatchJobResponse } from "../../gen/reports/v1/report_service_pb.js";
import { compareStreamIds } from "../../src/events/event-codec.js";
import type { ReportGenerator } from "../../src/worker/generator.js";
import { protocols, reportClient } from "../helpers/clients.js";
import { type Deferred, deferred } from "../helpers/generators.js";
import { type RedisServerHandle, startRedisServer } from "../helpers/redis-server.js";
import { type ReportClient, waitForState } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

/** Resolves with `promise`, or rejects as soon as `signal` aborts. */
function untilReleased(promise: Promise<void>, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, reject);
  });
}

/** Per-job gates: `reached` once the generator is inside the job, `release` lets it go on. */
class JobGates {
  private readonly gates = new Map<string, { reached: Deferred; release: Deferred }>();

  of(jobId: string): { reached: Deferred; release: Deferred } {
    let g = this.gates.get(jobId);
    if (g === undefined) {
      g = { reached: deferred(), release: deferred() };
      this.gates.set(jobId, g);
    }
    return g;
  }

  /** Resolves once the job's generator has reported fetch-data (40) and is waiting. */
  reached(jobId: string): Promise<void> {
    return this.of(jobId).reached.promise;
  }

  release(jobId: string): void {
    this.of(jobId).release.resolve();
  }

  /** Lets every gated generator finish (so closing the app never waits out a grace period). */
  releaseAll(): void {
    for (const g of this.gates.values()) g.release.resolve();
  }
}

/** The same phases as the built-in generators (40 fetch-data, 80 render), held between them. */
function gatedGenerator(gates: JobGates): ReportGenerator {
  return {
    async generate(input, progress, signal) {
      const gate = gates.of(input.jobId);
      await progress(40, "fetch-data");
      gate.reached.resolve();
      await untilReleased(gate.release.promise, signal);
      await progress(80, "render");
      return { fileName: "gated.json", contentType: "application/json", content: "{}\n" };
    },
  };
}

/** Reports progress `steps` times after its gate opens, to overflow a short event stream. */
function chattyGenerator(gates: JobGates, steps: number): ReportGenerator {
  return {
    async generate(input, progress, signal) {
      const gate = gates.of(input.jobId);
      gate.reached.resolve();
      await untilReleased(gate.release.promise, signal);
      for (let i = 1; i <= steps; i++) await progress(i * 4, `step-${i}`);
      return { fileName: "chatty.json", contentType: "application/json", content: "{}\n" };
    },
  };
}

/** One open WatchJob call, consumed in the background. */
interface Watch {
  readonly responses: WatchJobResponse[];
  readonly events: JobEvent[];
  /** Resolves when the stream ends: undefined when it ended OK, else its error. */
  readonly done: Promise<ConnectError | undefined>;
  /** True once the stream has ended, either way. */
  readonly ended: boolean;
  /** Disconnects (cancels the call). */
  abort(): void;
}

/** Every watch a test opened, so afterEach can disconnect the ones a failed test left open. */
const openWatches = new Set<Watch>();

function startWatch(
  client: ReportClient,
  request: { jobId: string; afterEventId?: string },
): Watch {
  const controller = new AbortController();
  const responses: WatchJobResponse[] = [];
  const events: JobEvent[] = [];
  const done = (async () => {
    try {
      for await (const res of client.watchJob(request, { signal: controller.signal })) {
        responses.push(res);
        if (res.event) events.push(res.event);
      }
      return undefined;
    } catch (err) {
      return ConnectError.from(err);
    }
  })();
  let ended = false;
  const watch: Watch = {
    responses,
    events,
    done,
    get ended() {
      return ended;
    },
    abort: () => controller.abort(),
  };
  openWatches.add(watch);
  void done.then(() => {
    ended = true;
    openWatches.delete(watch);
  });
  return watch;
}

afterEach(async () => {
  const left = [...openWatches];
  for (const w of left) w.abort();
  await Promise.all(left.map((w) => w.done));
});

/** "3 events: 998, 2 events: 2; ended: 5 Canceled", for failure messages. */
function describeWatches(watches: readonly Watch[], outcomes: Map<Watch, string>): string {
  const byCount = new Map<number, number>();
  for (const w of watches) byCount.set(w.events.length, (byCount.get(w.events.length) ?? 0) + 1);
  const ends = new Map<string, number>();
  for (const o of outcomes.values()) ends.set(o, (ends.get(o) ?? 0) + 1);
  const counts = [...byCount].map(([n, c]) => `${n} events: ${c}`).join(", ");
  const endings = [...ends].map(([o, c]) => `${c} ${o}`).join(", ");
  return `${counts}; ended: ${endings || "none"}`;
}

/** Waits until `check` holds for every watch; the failure says where each one got to. */
async function waitForWatches(
  watches: readonly Watch[],
  check: (w: Watch) => boolean,
  what: string,
  timeoutMs = 45_000,
): Promise<void> {
  const outcomes = new Map<Watch, string>();
  for (const w of watches)
    void w.done.then((e) => outcomes.set(w, e === undefined ? "OK" : Code[e.code]));
  try {
    await waitFor(() => watches.every(check), { timeoutMs, what });
  } catch (err) {
    throw new Error(`${(err as Error).message} (${describeWatches(watches, outcomes)})`);
  }
}

/** How long a watch of a finished job may take to end before the test calls it a hang. */
const endDeadlineMs = 5000;

/** The outcome of `w`, or a failure if it has not ended within `ms`. */
async function ended(w: Watch, ms = endDeadlineMs): Promise<ConnectError | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      w.abort();
      reject(
        new Error(
          `watch did not end within ${ms} ms (got ${w.events.length} events: ${w.events
            .map((e) => JobEventType[e.type])
            .join(", ")})`,
        ),
      );
    }, ms);
  });
  try {
    return await Promise.race([w.done, hang]);
  } finally {
    clearTimeout(timer);
  }
}

/** Watches until the stream ends; fails the test if it does not end OK, promptly. */
async function watchToEnd(
  client: ReportClient,
  request: { jobId: string; afterEventId?: string },
): Promise<JobEvent[]> {
  const w = startWatch(client, request);
  const err = await ended(w);
  if (err !== undefined) throw err;
  return w.events;
}

/** The error a watch ends with (fails if it ends OK or hangs). */
async function watchError(
  client: ReportClient,
  request: { jobId: string; afterEventId?: string },
): Promise<ConnectError> {
  const err = await ended(startWatch(client, request));
  if (err === undefined) throw new Error("expected the watch to fail, but it ended OK");
  return err;
}

const fullHistory = [
  JobEventType.QUEUED,
  JobEventType.STARTED,
  JobEventType.PROGRESS,
  JobEventType.PROGRESS,
  JobEventType.SUCCEEDED,
];

/** Every event once, in order: the complete history of a successful job. */
function expectFullHistory(events: readonly JobEvent[]): void {
  expect(events.map((e) => e.type)).toEqual(fullHistory);
  expect(events.map((e) => e.progress)).toEqual([0, 5, 40, 80, 100]);
  expect(events.map((e) => e.phase)).toEqual(["", "started", "fetch-data", "render", "completed"]);
  expect(events.at(-1)?.state).toBe(JobState.SUCCEEDED);
  expectIncreasingIds(events);
}

function expectIncreasingIds(events: readonly JobEvent[]): void {
  for (let i = 1; i < events.length; i++) {
    const prev = events[i - 1]?.id ?? "";
    const cur = events[i]?.id ?? "";
    expect(compareStreamIds(prev, cur), `event ids ${prev} then ${cur}`).toBeLessThan(0);
  }
}

async function connectedClients(redis: Redis): Promise<number> {
  const info = await redis.info("clients");
  const m = /connected_clients:(\d+)/.exec(info);
  if (!m) throw new Error(`no connected_clients in INFO: ${info}`);
  return Number(m[1]);
}

describe("WatchJob", () => {
  const gates = new JobGates();
  let t: TestApp;
  let client: ReportClient;

  beforeAll(async () => {
    t = await startTestApp({}, { generators: { custom: gatedGenerator(gates) } });
    client = reportClient("grpc", t.url);
  });
  afterAll(async () => {
    gates.releaseAll();
    await t?.close();
  });

  /** Submits a gated job and waits until its generator holds it after fetch-data (40). */
  async function submitHeldJob(): Promise<string> {
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.CUSTOM });
    await gates.reached(jobId);
    return jobId;
  }

  it("gives a watcher joined before the job ran every event exactly once, then ends OK", async () => {
    // An API without a worker: the job cannot start until the watcher is in.
    const api = await startTestApp({}, { mode: "api" });
    let worker: TestApp | undefined;
    try {
      const apiClient = reportClient("connect-binary", api.url);
      const { jobId } = await apiClient.submitReport({
        userId: "u1",
        reportType: ReportType.WEEKLY,
      });
      const w = startWatch(apiClient, { jobId });
      await waitFor(() => w.events.length === 1, { what: "the QUEUED event" });
      expect(w.events[0]?.type).toBe(JobEventType.QUEUED);
      expect(api.app.hub?.listenerCount).toBe(1);

      worker = await startTestApp({ REDIS_PREFIX: api.config.redis.prefix }, { mode: "worker" });
      expect(await ended(w)).toBeUndefined();
      expectFullHistory(w.events);
      // What a late watcher replays is exactly what the early one saw live.
      const replayed = await watchToEnd(apiClient, { jobId });
      expect(replayed.map((e) => e.id)).toEqual(w.events.map((e) => e.id));
      await waitFor(() => api.app.hub?.listenerCount === 0, { what: "hub listeners released" });
    } finally {
      await worker?.close();
      await api.close();
    }
  });

  it("gives a watcher joined during the job the history from QUEUED, then the live rest", async () => {
    const jobId = await submitHeldJob();
    const w = startWatch(client, { jobId });
    // QUEUED, STARTED and fetch-data are history; the job cannot go on until released.
    await waitFor(() => w.events.length === 3, { what: "the history so far" });
    expect(w.events.map((e) => e.type)).toEqual(fullHistory.slice(0, 3));
    gates.release(jobId);
    expect(await ended(w)).toBeUndefined();
    expectFullHistory(w.events);
  });

  it("gives a watcher joined after the end the full history and the end", async () => {
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    await waitForState(client, jobId, JobState.SUCCEEDED, 10_000);
    const events = await watchToEnd(client, { jobId });
    expectFullHistory(events);
    expect(events.at(-1)?.result?.downloadUrl).toContain(
      `/v1/artifacts/${encodeURIComponent(jobId)}/`,
    );
    await waitFor(() => t.app.hub?.listenerCount === 0, { what: "hub listeners released" });
  });

  it("resumes after a disconnect from the last event id with no gap and no duplicate", async () => {
    const jobId = await submitHeldJob();
    const first = startWatch(client, { jobId });
    await waitFor(() => first.events.length === 3, { what: "the first session's events" });
    first.abort();
    expect((await first.done)?.code).toBe(Code.Canceled);
    await waitFor(() => t.app.hub?.listenerCount === 0, { what: "the first session released" });

    const last = first.events.at(-1)?.id ?? "";
    const second = startWatch(client, { jobId, afterEventId: last });
    await waitFor(() => t.app.hub?.listenerCount === 1, { what: "the second session subscribed" });
    gates.release(jobId);
    expect(await ended(second)).toBeUndefined();

    const union = [...first.events, ...second.events];
    expectFullHistory(union);
    const all = await watchToEnd(client, { jobId });
    expect(union.map((e) => e.id)).toEqual(all.map((e) => e.id));
  });

  it("resumes a finished job from every cursor with exactly the events after it", async () => {
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    await waitForState(client, jobId, JobState.SUCCEEDED, 10_000);
    const all = await watchToEnd(client, { jobId });
    expectFullHistory(all);
    for (let k = 1; k < all.length; k++) {
      const rest = await watchToEnd(client, { jobId, afterEventId: all[k - 1]?.id ?? "" });
      expect(rest.map((e) => e.id)).toEqual(all.slice(k).map((e) => e.id));
    }
  });

  it("ends at once, with no events, when resumed after the terminal event", async () => {
    // A client that lost its connection between the last event and the end of the stream.
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    await waitForState(client, jobId, JobState.SUCCEEDED, 10_000);
    const all = await watchToEnd(client, { jobId });
    expect(await watchToEnd(client, { jobId, afterEventId: all.at(-1)?.id ?? "" })).toEqual([]);
  });

  it("returns NOT_FOUND for an unknown job and releases its subscription", async () => {
    const err = await watchError(client, { jobId: "no-such-job" });
    expect(err.code).toBe(Code.NotFound);
    expect(err.rawMessage).toContain("no-such-job");
    await waitFor(() => t.app.hub?.listenerCount === 0, { what: "hub listeners released" });
  });

  it("returns INVALID_ARGUMENT for a malformed cursor", async () => {
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    const err = await watchError(client, { jobId, afterEventId: "not-a-cursor" });
    expect(err.code).toBe(Code.InvalidArgument);
    await waitForState(client, jobId, JobState.SUCCEEDED, 10_000);
  });

  for (const protocol of protocols) {
    it(`streams a job's events over ${protocol}`, async () => {
      const c = reportClient(protocol, t.url);
      const { jobId } = await c.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
      expectFullHistory(await watchToEnd(c, { jobId }));
    });
  }
});

describe("WatchJob with a short event stream", () => {
  const gates = new JobGates();
  let t: TestApp;
  let client: ReportClient;

  beforeAll(async () => {
    t = await startTestApp(
      { EVENT_STREAM_MAXLEN: "10" },
      { generators: { custom: chattyGenerator(gates, 20) } },
    );
    client = reportClient("grpc", t.url);
  });
  afterAll(async () => {
    gates.releaseAll();
    await t?.close();
  });

  it("returns OUT_OF_RANGE for a cursor into trimmed history", async () => {
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.CUSTOM });
    await gates.reached(jobId);
    const early = startWatch(client, { jobId });
    await waitFor(() => early.events.length === 2, { what: "QUEUED and STARTED" });
    early.abort();
    await early.done;
    const queued = early.events[0];
    expect(queued?.type).toBe(JobEventType.QUEUED);

    gates.release(jobId);
    await waitForState(client, jobId, JobState.SUCCEEDED, 10_000);

    const err = await watchError(client, { jobId, afterEventId: queued?.id ?? "" });
    expect(err.code).toBe(Code.OutOfRange);
    expect(err.rawMessage).toContain(queued?.id ?? "");

    // What is retained is still served: the last 10 events, ending in SUCCEEDED.
    const retained = await watchToEnd(client, { jobId });
    expect(retained).toHaveLength(10);
    expect(retained.at(-1)?.type).toBe(JobEventType.SUCCEEDED);
    expectIncreasingIds(retained);
    const rest = await watchToEnd(client, { jobId, afterEventId: retained[0]?.id ?? "" });
    expect(rest.map((e) => e.id)).toEqual(retained.slice(1).map((e) => e.id));
    await waitFor(() => t.app.hub?.listenerCount === 0, { what: "hub listeners released" });
  });
});

describe("WatchJob keepalive", () => {
  let t: TestApp;

  beforeAll(async () => {
    // API only: nothing processes the job, so the stream is idle after QUEUED.
    t = await startTestApp({ WATCH_KEEPALIVE_MS: "200" }, { mode: "api" });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("sends keepalive responses (keepalive_time, no event) on an idle stream", async () => {
    const client = reportClient("grpc-web", t.url);
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    const w = startWatch(client, { jobId });
    await waitFor(() => w.responses.length >= 3, { what: "an event and two keepalives" });
    w.abort();
    expect((await w.done)?.code).toBe(Code.Canceled);

    const [first, ...rest] = w.responses;
    expect(first?.event?.type).toBe(JobEventType.QUEUED);
    expect(first?.keepaliveTime).toBeUndefined();
    expect(rest.length).toBeGreaterThanOrEqual(2);
    for (const r of rest) {
      expect(r.event).toBeUndefined();
      expect(r.keepaliveTime).toBeDefined();
      expect(Math.abs(Number(r.keepaliveTime?.seconds) * 1000 - Date.now())).toBeLessThan(60_000);
    }
    await waitFor(() => t.app.hub?.listenerCount === 0, { what: "hub listeners released" });
  });
});

describe("WatchJob with a cursor ahead of the log", () => {
  let t: TestApp;

  beforeAll(async () => {
    // API only: nothing processes the job, so the watch would otherwise wait.
    t = await startTestApp({}, { mode: "api" });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("answers OUT_OF_RANGE at once and holds no watch, live job or finished", async () => {
    const client = reportClient("grpc", t.url);
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    const first = startWatch(client, { jobId });
    await waitFor(() => first.events.length === 1, { what: "the QUEUED event" });
    first.abort();
    await first.done;
    const queuedId = first.events[0]?.id ?? "";
    const [ms = "0"] = queuedId.split("-");
    const ahead = `${Number(ms) + 3600_000}-0`;

    for (const cursor of [ahead, `${ms}-99`]) {
      const err = await ended(startWatch(client, { jobId, afterEventId: cursor }), 2000);
      expect(err?.code, cursor).toBe(Code.OutOfRange);
      expect(err?.rawMessage).toContain(`cursor ${cursor} is ahead of the job's log`);
    }
    await waitFor(() => t.app.hub?.listenerCount === 0, { what: "hub listeners released" });

    // The job's last event is a fine cursor: the watch waits for what comes next.
    const atEnd = startWatch(client, { jobId, afterEventId: queuedId });
    const { job } = await client.cancelJob({ jobId });
    expect(job?.state).toBe(JobState.CANCELLED);
    expect((await ended(atEnd)) ?? "ok").toBe("ok");
    expect(atEnd.events.map((e) => e.type)).toEqual([JobEventType.CANCELLED]);

    // Finished job: still an error, not a silent end.
    const err = await ended(startWatch(client, { jobId, afterEventId: ahead }), 2000);
    expect(err?.code).toBe(Code.OutOfRange);
  });
});

describe("WatchJob with 1,000 concurrent watchers", () => {
  const gates = new JobGates();
  const watchers = 1000;
  let redisServer: RedisServerHandle;
  let probe: Redis;
  let t: TestApp;
  let sessions: Http2SessionManager;
  let client: ReportClient;

  beforeAll(async () => {
    // A private Redis, so other test files' connections never move the count.
    redisServer = await startRedisServer();
    t = await startTestApp(
      { REDIS_URL: redisServer.url },
      {
        generators: { custom: gatedGenerator(gates) },
        // Opening 2,000 streams keeps this process busy; a short job lock
        // could then lapse and BullMQ would run the held job a second time.
        lockDurationMs: 30_000,
        stalledIntervalMs: 30_000,
      },
    );
    probe = new Redis(redisServer.url, { maxRetriesPerRequest: 1 });
    sessions = new Http2SessionManager(t.url);
    client = grpcClient(sessions, t.url);
  });
  afterEach(() => {
    gates.releaseAll();
  });
  afterAll(async () => {
    gates.releaseAll();
    sessions?.abort();
    probe?.disconnect();
    await t?.close();
    await redisServer?.stop();
  });

  it("serves 1,000 watchers over one Redis connection and frees everything when they disconnect", {
    timeout: 120_000,
  }, async () => {
    const baseline = await connectedClients(probe);
    // Jobs that stay queued: scheduled an hour ahead.
    const runAt = { seconds: BigInt(Math.floor(Date.now() / 1000) + 3600), nanos: 0 };
    const held: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await client.submitReport({
        userId: `held-${i}`,
        reportType: ReportType.WEEKLY,
        runAt,
      });
      held.push(res.jobId);
    }

    const watches = Array.from({ length: watchers }, (_, i) =>
      startWatch(client, { jobId: held[i % held.length] as string }),
    );
    await waitForWatches(watches, (w) => w.events.length >= 1 || w.ended, "every QUEUED event");
    for (const w of watches) expect(w.events.map((e) => e.type)).toEqual([JobEventType.QUEUED]);
    expect(watches.some((w) => w.ended)).toBe(false);
    expect(t.app.hub?.listenerCount).toBe(watchers);
    // The hub's one subscriber connection was there before the watchers.
    expect(await connectedClients(probe)).toBeLessThanOrEqual(baseline + 2);

    for (const w of watches) w.abort();
    await waitForWatches(watches, (w) => w.ended, "every watch to end");
    const ends = await Promise.all(watches.map((w) => w.done));
    expect(ends.every((e) => e?.code === Code.Canceled)).toBe(true);
    await waitFor(() => t.app.hub?.listenerCount === 0, {
      timeoutMs: 30_000,
      what: "every hub listener released",
    });
    await waitFor(async () => (await connectedClients(probe)) === baseline, {
      what: `connected_clients back to ${baseline}`,
    });
    // The hub unsubscribed every job channel.
    const channels = (await probe.pubsub(
      "CHANNELS",
      `${t.app.keys.eventChannel("")}*`,
    )) as string[];
    expect(channels).toEqual([]);
  });

  it("delivers a job's completion to each of 1,000 open watchers exactly once", {
    timeout: 120_000,
  }, async () => {
    const baseline = await connectedClients(probe);
    const { jobId } = await client.submitReport({ userId: "live", reportType: ReportType.CUSTOM });
    await gates.reached(jobId);

    const watches = Array.from({ length: watchers }, () => startWatch(client, { jobId }));
    await waitForWatches(watches, (w) => w.events.length >= 3 || w.ended, "the history so far");
    for (const w of watches) expect(w.events.map((e) => e.type)).toEqual(fullHistory.slice(0, 3));
    expect(t.app.hub?.listenerCount).toBe(watchers);
    expect(await connectedClients(probe)).toBeLessThanOrEqual(baseline + 2);

    gates.release(jobId);
    await waitForWatches(watches, (w) => w.ended, "every watch to end after SUCCEEDED");
    const ends = await Promise.all(watches.map((w) => w.done));
    expect(ends.filter((e) => e !== undefined).map((e) => e?.message)).toEqual([]);
    for (const w of watches) expectFullHistory(w.events);
    await waitFor(() => t.app.hub?.listenerCount === 0, {
      timeoutMs: 30_000,
      what: "every hub listener released",
    });
    await waitFor(async () => (await connectedClients(probe)) === baseline, {
      what: `connected_clients back to ${baseline}`,
    });
  });
});

/** A gRPC client whose calls all share `sessionManager`'s one HTTP/2 connection. */
function grpcClient(sessionManager: Http2SessionManager, baseUrl: string): ReportClient {
  return createClient(ReportService, createGrpcTransport({ baseUrl, sessionManager }));
}
