/**
 * The chaos run's callers: users that submit (with and without idempotency
 * keys, and in concurrent bursts of one key), cancel, retry and watch, over
 * every protocol and both API processes, each call with a deadline; a
 * follower per acknowledged job that polls it to its end and then checks it
 * (its log against the state machine, its download, its key); watchers that
 * disconnect on purpose and resume from their cursor. Everything they see is
 * kept for the invariants (invariants.ts).
 */
import { setMaxListeners } from "node:events";
import type { JsonObject } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { JobEventType, JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { ReportService } from "../../gen/reports/v1/report_service_pb.js";
import type { JobEventView, JobState as StoredState } from "../../src/domain/job.js";
import { checkEventLog, type LogCheck } from "./event-log-check.js";
import type { Inspector } from "./inspect.js";
import type { Rng } from "./rng.js";

type ReportClient = Client<typeof ReportService>;

/** The protocols the callers use. */
const protocols = ["connect-json", "connect-binary", "grpc", "grpc-web"] as const;

/** One SubmitReport request, as repeated under its idempotency key. */
interface SubmitRequest {
  idempotencyKey: string;
  userId: string;
  reportType: ReportType;
  filters?: JsonObject;
}

/** One acknowledged job and what was found about it. */
export interface TrackedJob {
  id: string;
  key?: string;
  request: SubmitRequest;
  /** Bumped by each acknowledged RetryJob: the run the follower waits for. */
  generation: number;
  /** The generation whose end was checked (-1: none yet). */
  checkedGeneration: number;
  /** The terminal state the last check found. */
  endState?: StoredState;
  /** When the last check's record says the job finished (ms). */
  finishedAt?: number;
  /** The log as the last check read it. */
  events: JobEventView[];
  logCheck?: LogCheck;
  /** Problems found, each "lost:", "download:" or "key:" and a sentence. */
  problems: string[];
  /** The record expired before its end could be checked (too long an outage). */
  expiredUnchecked: boolean;
  downloadChecked: boolean;
  /** The state CancelJob answered with, when it answered. */
  cancelAnswer?: string;
  retryAcks: number;
}

/** One watcher of a job. */
export interface Watcher {
  jobId: string;
  /** Event ids and types, in the order received, across reconnects. */
  seen: { id: string; type: string }[];
  /** Reconnects: on purpose, on an idle stream, on an error. */
  reconnects: number;
  /** The watch ended by itself (after a terminal event). */
  ended: boolean;
  /** The watch was answered NOT_FOUND (the job had expired, or was never found): it stopped. */
  notFound: boolean;
  /** Error codes the watch calls ended with (reconnects on purpose excluded). */
  errors: Record<string, number>;
}

/** What the callers did and saw. */
export interface LoadResults {
  jobs: Map<string, TrackedJob>;
  /** Idempotency key → job ids answered for it. */
  keyAnswers: Map<string, Set<string>>;
  watchers: Watcher[];
  /** Calls by RPC and outcome ("ok" or a Code name). */
  calls: Map<string, number>;
  /** Messages of the first INTERNAL errors the callers got. */
  internal: string[];
  /** Unkeyed submits that got no answer (not acknowledged: whatever they did is not checked by id). */
  unackedSubmits: number;
}

/** The load driver. */
export interface LoadDriver {
  /** Runs the users until `untilMs` (epoch ms). */
  run(untilMs: number): Promise<void>;
  /** Waits for every follower and watcher to finish, until `deadlineMs`; then stops them. */
  settle(deadlineMs: number): Promise<boolean>;
  readonly results: LoadResults;
}

/** Creates the callers against the API base URLs `apiUrls()` answers (the APIs alive or not). */
export function createLoad(options: {
  apiUrls: readonly string[];
  rng: Rng;
  inspector: Inspector;
  users: number;
  retentionMs: number;
  log: (line: string) => void;
}): LoadDriver {
  const { apiUrls, rng, inspector, retentionMs, log } = options;
  const clients: { url: string; protocol: string; client: ReportClient }[] = [];
  for (const url of apiUrls) {
    for (const protocol of protocols) {
      clients.push({
        url,
        protocol,
        client: createClient(ReportService, transportFor(protocol, url)),
      });
    }
  }
  const results: LoadResults = {
    jobs: new Map(),
    keyAnswers: new Map(),
    watchers: [],
    calls: new Map(),
    unackedSubmits: 0,
    internal: [],
  };
  const tasks = new Set<Promise<unknown>>();
  const hardStop = new AbortController();
  // Every sleeping task and open watch listens to it.
  setMaxListeners(0, hardStop.signal);
  let keyCount = 0;

  const spawnTask = (p: Promise<unknown>) => {
    const guarded = p.catch((err: unknown) => log(`task failed: ${String(err)}`));
    tasks.add(guarded);
    void guarded.finally(() => tasks.delete(guarded));
  };
  const count = (rpc: string, outcome: string) =>
    results.calls.set(`${rpc} ${outcome}`, (results.calls.get(`${rpc} ${outcome}`) ?? 0) + 1);
  const codeOf = (err: unknown) => Code[ConnectError.from(err).code] ?? "Unknown";
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(t);
        hardStop.signal.removeEventListener("abort", done);
        resolve();
      };
      const t = setTimeout(done, ms);
      hardStop.signal.addEventListener("abort", done);
    });

  /** One unary call on a random API and protocol, with a deadline; counted. */
  async function call<T>(
    r: Rng,
    rpc: string,
    fn: (c: ReportClient, opts: { timeoutMs: number }) => Promise<T>,
  ): Promise<T> {
    const { client } = r.pick(clients);
    try {
      const out = await fn(client, { timeoutMs: 5000 });
      count(rpc, "ok");
      return out;
    } catch (err) {
      const code = codeOf(err);
      count(rpc, code);
      if (code === "Internal" && results.internal.length < 20)
        results.internal.push(`${rpc}: ${ConnectError.from(err).rawMessage}`);
      throw err;
    }
  }

  const newRequest = (r: Rng, key: string): SubmitRequest => {
    const reportType = r.pick([ReportType.WEEKLY, ReportType.MONTHLY, ReportType.CUSTOM]);
    const filters: JsonObject | undefined = r.chance(0.5) ? { end_date: "2026-01-31" } : undefined;
    return {
      idempotencyKey: key,
      userId: `user-${r.int(1, 5)}`,
      reportType,
      ...(filters ? { filters } : {}),
    };
  };

  const track = (r: Rng, id: string, request: SubmitRequest, key?: string) => {
    if (results.jobs.has(id)) return;
    const job: TrackedJob = {
      id,
      request,
      generation: 0,
      checkedGeneration: -1,
      events: [],
      problems: [],
      expiredUnchecked: false,
      downloadChecked: false,
      retryAcks: 0,
      ...(key === undefined ? {} : { key }),
    };
    results.jobs.set(id, job);
    spawnTask(follow(r.fork(), job));
    if (r.chance(0.4)) spawnTask(watch(r.fork(), id));
  };

  /** Submits `request` until answered (its key makes that safe), up to 30 s; the answered job id. */
  async function submitKeyed(r: Rng, request: SubmitRequest): Promise<string | undefined> {
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && !hardStop.signal.aborted) {
      try {
        const res = await call(r, "SubmitReport", (c, o) => c.submitReport(request, o));
        let answers = results.keyAnswers.get(request.idempotencyKey);
        if (answers === undefined) {
          answers = new Set();
          results.keyAnswers.set(request.idempotencyKey, answers);
        }
        answers.add(res.jobId);
        return res.jobId;
      } catch (err) {
        const code = ConnectError.from(err).code;
        if (code === Code.AlreadyExists || code === Code.InvalidArgument) {
          log(
            `submit of key ${request.idempotencyKey} answered ${Code[code]}: ${ConnectError.from(err).rawMessage}`,
          );
          return undefined;
        }
        await sleep(r.int(100, 500));
      }
    }
    return undefined;
  }

  const actions = {
    async unkeyed(r: Rng) {
      const request = newRequest(r, "");
      try {
        const res = await call(r, "SubmitReport", (c, o) => c.submitReport(request, o));
        track(r, res.jobId, request);
      } catch {
        results.unackedSubmits += 1;
      }
    },
    async keyed(r: Rng) {
      const key = `chaos-${rng.seed}-${++keyCount}`;
      const request = newRequest(r, key);
      const id = await submitKeyed(r, request);
      if (id !== undefined) track(r, id, request, key);
    },
    async burst(r: Rng) {
      const key = `chaos-${rng.seed}-${++keyCount}`;
      const request = newRequest(r, key);
      const n = r.int(2, 5);
      const forks = Array.from({ length: n }, () => r.fork());
      const ids = await Promise.all(forks.map((f) => submitKeyed(f, request)));
      const id = ids.find((i) => i !== undefined);
      if (id !== undefined) track(r, id, request, key);
    },
    async cancel(r: Rng) {
      const live = [...results.jobs.values()].filter((j) => j.checkedGeneration < j.generation);
      if (live.length === 0) return;
      const job = r.pick(live.slice(-20));
      try {
        const res = await call(r, "CancelJob", (c, o) => c.cancelJob({ jobId: job.id }, o));
        job.cancelAnswer = JobState[res.job?.state ?? JobState.UNSPECIFIED];
      } catch {
        // FAILED_PRECONDITION (it ended meanwhile) or a fault: nothing acknowledged.
      }
    },
    async retry(r: Rng) {
      const failed = [...results.jobs.values()].filter(
        (j) => j.endState === "failed" && j.checkedGeneration === j.generation,
      );
      if (failed.length === 0) return;
      const job = r.pick(failed);
      try {
        await call(r, "RetryJob", (c, o) => c.retryJob({ jobId: job.id }, o));
        job.retryAcks += 1;
        job.generation += 1;
        spawnTask(follow(r.fork(), job));
        if (r.chance(0.5)) spawnTask(watch(r.fork(), job.id));
      } catch {
        // Not acknowledged.
      }
    },
    async watch(r: Rng) {
      const jobs = [...results.jobs.values()];
      if (jobs.length === 0) return;
      spawnTask(watch(r.fork(), r.pick(jobs.slice(-30)).id));
    },
  };
  const weights = { unkeyed: 4, keyed: 3, burst: 1, cancel: 1.5, retry: 2, watch: 1 } as const;

  /** Polls the job to the end of its current run, then checks it. */
  async function follow(r: Rng, job: TrackedJob): Promise<void> {
    const generation = job.generation;
    while (!hardStop.signal.aborted && job.generation === generation) {
      let state: JobState | undefined;
      try {
        const res = await call(r, "GetJob", (c, o) => c.getJob({ jobId: job.id }, o));
        state = res.job?.state;
      } catch (err) {
        if (ConnectError.from(err).code === Code.NotFound) {
          const stored = await inspector.job(job.id);
          if (stored.record === undefined) {
            job.problems.push("lost:acknowledged job not found before it ended (record lost)");
            return;
          }
        }
      }
      if (
        state === JobState.SUCCEEDED ||
        state === JobState.FAILED ||
        state === JobState.CANCELLED
      ) {
        await check(r, job, generation);
        return;
      }
      await sleep(r.int(250, 750));
    }
  }

  /** Checks a job that ended: its log, its download, its key. */
  async function check(r: Rng, job: TrackedJob, generation: number): Promise<void> {
    const stored = await inspector.job(job.id);
    if (stored.record === undefined) {
      job.expiredUnchecked = true;
      return;
    }
    if (job.generation !== generation) return;
    job.events = stored.events;
    job.endState = stored.record.state;
    job.finishedAt = stored.record.finishedAt;
    job.logCheck = checkEventLog(stored.events, stored.record.state);
    if (stored.record.state === "succeeded") await checkDownload(r, job);
    if (job.key !== undefined) {
      const again = await submitKeyed(r, job.request);
      const age = Date.now() - (job.finishedAt ?? Date.now());
      if (again !== undefined && again !== job.id && age < retentionMs - 2000) {
        job.problems.push(`key:key ${job.key} answered job ${again} after the job ended`);
      }
    }
    if (job.generation === generation) job.checkedGeneration = generation;
  }

  /** The job's download answers 200 with its recorded size (through any live API). */
  async function checkDownload(r: Rng, job: TrackedJob): Promise<void> {
    const deadline = Date.now() + 30_000;
    let last = "";
    while (Date.now() < deadline && !hardStop.signal.aborted) {
      try {
        const res = await call(r, "GetJob", (c, o) => c.getJob({ jobId: job.id }, o));
        const result = res.job?.result;
        if (result === undefined) {
          job.problems.push("download:SUCCEEDED without a result");
          return;
        }
        const signed = new URL(result.downloadUrl);
        const url = `${r.pick(apiUrls)}${signed.pathname}${signed.search}`;
        const answer = await fetch(url, { signal: AbortSignal.timeout(5000) });
        const body = await answer.arrayBuffer();
        count("download", String(answer.status));
        if (answer.status === 200 && body.byteLength === Number(result.sizeBytes)) {
          job.downloadChecked = true;
          return;
        }
        last = `download answered ${answer.status} with ${body.byteLength} bytes (recorded ${result.sizeBytes})`;
        if (answer.status < 500) break;
      } catch (err) {
        last = `download failed: ${String(err)}`;
      }
      await sleep(r.int(200, 600));
    }
    job.problems.push(`download:${last || "not checked before the end"}`);
  }

  /** Watches a job from its first event, disconnecting on purpose now and then, to its end. */
  async function watch(r: Rng, jobId: string): Promise<void> {
    const w: Watcher = {
      jobId,
      seen: [],
      reconnects: 0,
      ended: false,
      notFound: false,
      errors: {},
    };
    results.watchers.push(w);
    let cursor = "";
    while (!hardStop.signal.aborted) {
      const { client } = r.pick(clients);
      const ac = new AbortController();
      const onStop = () => ac.abort();
      hardStop.signal.addEventListener("abort", onStop);
      let purposely = false;
      const drop = r.chance(0.5)
        ? setTimeout(
            () => {
              purposely = true;
              ac.abort();
            },
            r.int(100, 3000),
          )
        : undefined;
      // Keepalives come every second (WATCH_KEEPALIVE_MS): silence means a dead or frozen API.
      let idle: NodeJS.Timeout | undefined;
      const resetIdle = () => {
        clearTimeout(idle);
        idle = setTimeout(() => ac.abort(), 5000);
      };
      resetIdle();
      try {
        for await (const res of client.watchJob(
          { jobId, afterEventId: cursor },
          { signal: ac.signal },
        )) {
          resetIdle();
          const e = res.event;
          if (e === undefined) continue;
          w.seen.push({ id: e.id, type: (JobEventType[e.type] ?? "?").toLowerCase() });
          cursor = e.id;
        }
        count("WatchJob", "ended");
        w.ended = true;
        return;
      } catch (err) {
        if (hardStop.signal.aborted) return;
        if (!purposely && ConnectError.from(err).code === Code.NotFound) {
          count("WatchJob", "NotFound");
          w.notFound = true;
          return;
        }
        w.reconnects += 1;
        if (!purposely) {
          const code = codeOf(err);
          w.errors[code] = (w.errors[code] ?? 0) + 1;
          count("WatchJob", code);
          if (code === "Internal" && results.internal.length < 20)
            results.internal.push(`WatchJob: ${ConnectError.from(err).rawMessage}`);
        }
      } finally {
        clearTimeout(drop);
        clearTimeout(idle);
        hardStop.signal.removeEventListener("abort", onStop);
      }
      await sleep(r.int(50, 500));
    }
  }

  return {
    results,
    async run(untilMs) {
      await Promise.all(
        Array.from({ length: options.users }, async () => {
          const r = rng.fork();
          while (Date.now() < untilMs) {
            const action = r.weighted(weights);
            // Long actions (a keyed submit through an outage) run beside the user's next ones.
            spawnTask(actions[action](r.fork()));
            await sleep(r.int(100, 600));
          }
        }),
      );
    },
    async settle(deadlineMs) {
      while (tasks.size > 0 && Date.now() < deadlineMs) {
        await new Promise((r) => setTimeout(r, 200));
      }
      const settled = tasks.size === 0;
      hardStop.abort();
      await Promise.all([...tasks]);
      return settled;
    },
  };
}

function transportFor(protocol: (typeof protocols)[number], baseUrl: string): Transport {
  switch (protocol) {
    case "connect-json":
      return createConnectTransport({ baseUrl, httpVersion: "1.1" });
    case "connect-binary":
      return createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true });
    case "grpc":
      return createGrpcTransport({ baseUrl });
    case "grpc-web":
      return createGrpcWebTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true });
  }
}
