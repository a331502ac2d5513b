/**
 * The callers of the benchmarks: one task of one kind of call, with its own
 * clients (lean protocol clients, see lean-clients.ts and watch-clients.ts),
 * built and closed here. Runs in the load process (see load-process.ts) or
 * inline, so the same code drives every measurement. Tasks are plain data,
 * so they cross to the load process over IPC.
 */
import { performance } from "node:perf_hooks";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { queueNameFor } from "../src/queue/keys.js";
import {
  baselineStatus,
  baselineSubmit,
  connectGetJob,
  connectJsonSubmit,
  grpcSubmit,
  type LeanClient,
} from "./lean-clients.js";
import {
  type CountResult,
  type Measurement,
  type MeasureOptions,
  measure,
  measureCount,
  type OpenLoopResult,
  openLoop,
  percentile,
} from "./measure.js";
import { grpcWatches, sseWatches, type Watches } from "./watch-clients.js";

/** The JSON filters every submitted job (and every raw job) carries. */
export const benchFilters = { region: "eu", format: "csv" };

/**
 * How a submit is sent: SubmitReport as Connect JSON (HTTP/1.1) or gRPC
 * (HTTP/2), or the naive baseline's JSON POST (HTTP/1.1).
 */
export type SubmitProtocol = "connect-json" | "grpc" | "baseline-json";

/** How a job is read: GetJob as a Connect GET, or the baseline's status route. */
export type StatusProtocol = "connect-get" | "baseline-get";

/** How jobs are watched: WatchJob over gRPC, or the baseline's SSE route. */
export type WatchProtocol = "grpc-watch" | "baseline-sse";

/** SubmitReport with a unique idempotency key per call (every call creates a job), for a time. */
export interface SubmitTask extends MeasureOptions {
  kind: "submit";
  protocol: SubmitProtocol;
  baseUrl: string;
  /** Makes the keys unique across runs and measurements. */
  keyPrefix: string;
}

/** GetJob (or the baseline's status route) of one job, for a time. */
export interface GetJobTask extends MeasureOptions {
  kind: "get-job";
  protocol?: StatusProtocol;
  baseUrl: string;
  jobId: string;
}

/** BullMQ `queue.add` on its own Queue, straight to Redis, for a time. */
export interface RawAddTask extends MeasureOptions {
  kind: "raw-add";
  redisUrl: string;
  bullPrefix: string;
}

/** Exactly `count` submits, unique keys; answers the job ids. */
export interface SubmitCountTask {
  kind: "submit-count";
  protocol: Exclude<SubmitProtocol, "grpc">;
  baseUrl: string;
  keyPrefix: string;
  count: number;
  concurrency: number;
}

/** Submits at a steady rate (open loop); answers each counted job's id and send time. */
export interface SubmitRateTask {
  kind: "submit-rate";
  protocol: Exclude<SubmitProtocol, "grpc">;
  baseUrl: string;
  keyPrefix: string;
  ratePerSec: number;
  warmupMs: number;
  durationMs: number;
}

/**
 * Opens `watchers` watches spread over `jobIds` and keeps them open; answers
 * once every one is open (or failed). A later watch-collect gathers what they see.
 */
export interface WatchOpenTask {
  kind: "watch-open";
  protocol: WatchProtocol;
  baseUrl: string;
  jobIds: string[];
  watchers: number;
  /** HTTP/2 connections the gRPC watches share (ignored by SSE: one each). */
  sessions: number;
  timeoutMs: number;
}

/** Waits until every open watch has ended (or `timeoutMs`), closes the rest, answers the deliveries. */
export interface WatchCollectTask {
  kind: "watch-collect";
  timeoutMs: number;
}

/** One task to run. */
export type LoadTask =
  | SubmitTask
  | GetJobTask
  | RawAddTask
  | SubmitCountTask
  | SubmitRateTask
  | WatchOpenTask
  | WatchCollectTask;

/** What watch-open found. */
export interface WatchOpenResult {
  /** From the first watch started to the last one open. */
  openMs: number;
  opened: number;
  errors: number;
  firstError?: string;
}

/** What watch-collect found: events that reached watchers after they were open. */
export interface WatchCollectResult {
  /** Events received after open, over all watchers. */
  deliveries: number;
  /** From the event's stream id (its time in Redis) to its arrival, in ms (1 ms resolution). */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Watches that ended after their terminal event. */
  completed: number;
  errors: number;
  firstError?: string;
}

/** The result of each kind of task. */
export interface LoadResults {
  submit: Measurement;
  "get-job": Measurement;
  "raw-add": Measurement;
  "submit-count": CountResult<string>;
  "submit-rate": OpenLoopResult<string>;
  "watch-open": WatchOpenResult;
  "watch-collect": WatchCollectResult;
}

/** The result type of task `T`. */
export type ResultOf<T extends LoadTask> = LoadResults[T["kind"]];

/** Runs `task` and returns what it measured. */
export async function runLoad<T extends LoadTask>(task: T): Promise<ResultOf<T>> {
  return (await run(task)) as ResultOf<T>;
}

async function run(task: LoadTask): Promise<LoadResults[LoadTask["kind"]]> {
  switch (task.kind) {
    case "submit": {
      const client =
        task.protocol === "grpc"
          ? grpcSubmit(task.baseUrl, benchFilters)
          : submitClient(task.protocol, task.baseUrl, task.concurrency);
      return withClient(client, (c) => measure((seq) => c.call(`${task.keyPrefix}-${seq}`), task));
    }
    case "get-job": {
      const client =
        task.protocol === "baseline-get"
          ? baselineStatus(task.baseUrl, task.concurrency, task.jobId)
          : connectGetJob(task.baseUrl, task.concurrency, task.jobId);
      return withClient(client, (c) => measure(() => c.call(), task));
    }
    case "submit-count":
      return withClient(submitClient(task.protocol, task.baseUrl, task.concurrency), (c) =>
        measureCount((seq) => c.call(`${task.keyPrefix}-${seq}`), task),
      );
    case "submit-rate":
      return withClient(submitClient(task.protocol, task.baseUrl, 256), (c) =>
        openLoop((seq) => c.call(`${task.keyPrefix}-${seq}`), task),
      );
    case "raw-add": {
      const redis = new Redis(task.redisUrl, { maxRetriesPerRequest: null });
      const queue = new Queue(queueNameFor("weekly"), {
        connection: redis,
        prefix: task.bullPrefix,
      });
      try {
        return await measure(
          (seq) =>
            queue.add(
              "weekly",
              {
                tenant: "default",
                userId: "bench-user",
                reportType: "weekly",
                filters: benchFilters,
                seq,
              },
              {
                attempts: 5,
                backoff: { type: "exponential", delay: 1000 },
                removeOnComplete: { age: 24 * 3600 },
                removeOnFail: { age: 7 * 24 * 3600 },
              },
            ),
          task,
        );
      } finally {
        await queue.close();
        redis.disconnect();
      }
    }
    case "watch-open":
      return openWatches(task);
    case "watch-collect":
      return collectWatches(task);
  }
}

function submitClient(
  protocol: "connect-json" | "baseline-json",
  baseUrl: string,
  concurrency: number,
): LeanClient<string, string> {
  return protocol === "baseline-json"
    ? baselineSubmit(baseUrl, concurrency, benchFilters)
    : connectJsonSubmit(baseUrl, concurrency, benchFilters);
}

async function withClient<C extends { close(): void }, R>(
  client: C,
  use: (c: C) => Promise<R>,
): Promise<R> {
  try {
    return await use(client);
  } finally {
    client.close();
  }
}

/** The watches of the current watch-open, until watch-collect ends them. */
interface OpenWatches {
  watches: Watches;
  live: boolean;
  latencies: number[];
  running: number;
  completed: number;
  errors: number;
  firstError?: string;
  /** Called whenever a watch ends. */
  onEnded?: () => void;
}

let current: OpenWatches | undefined;

async function openWatches(task: WatchOpenTask): Promise<WatchOpenResult> {
  if (current !== undefined) throw new Error("watch-open: watches are already open");
  if (task.jobIds.length === 0) throw new Error("watch-open: no job ids");
  const watches =
    task.protocol === "grpc-watch"
      ? grpcWatches(task.baseUrl, task.sessions)
      : sseWatches(task.baseUrl);
  const state: OpenWatches = {
    watches,
    live: false,
    latencies: [],
    running: task.watchers,
    completed: 0,
    errors: 0,
  };
  current = state;
  const began = performance.now();
  let opened = 0;
  let lastOpen = began;
  let openErrors = 0;
  let firstOpenError: string | undefined;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, task.timeoutMs);
    const settle = () => {
      if (opened + openErrors >= task.watchers) {
        clearTimeout(timer);
        resolve();
      }
    };
    for (let i = 0; i < task.watchers; i++) {
      let isOpen = false;
      watches.watch(task.jobIds[i % task.jobIds.length] as string, {
        onOpen() {
          isOpen = true;
          opened++;
          lastOpen = performance.now();
          settle();
        },
        onEvent(id) {
          if (!state.live) return;
          const ms = Number(id.slice(0, id.indexOf("-")));
          state.latencies.push(performance.timeOrigin + performance.now() - ms);
        },
        onEnd(err) {
          state.running--;
          if (err === undefined) state.completed++;
          else {
            state.errors++;
            state.firstError ??= err.message;
            if (!isOpen) {
              openErrors++;
              firstOpenError ??= err.message;
              settle();
            }
          }
          state.onEnded?.();
        },
      });
    }
  });
  state.live = true;
  return {
    openMs: lastOpen - began,
    opened,
    errors: task.watchers - opened,
    ...(firstOpenError === undefined ? {} : { firstError: firstOpenError }),
  };
}

async function collectWatches(task: WatchCollectTask): Promise<WatchCollectResult> {
  const state = current;
  if (state === undefined) throw new Error("watch-collect: no watches are open");
  try {
    await new Promise<void>((resolve) => {
      if (state.running <= 0) return resolve();
      const timer = setTimeout(resolve, task.timeoutMs);
      state.onEnded = () => {
        if (state.running <= 0) {
          clearTimeout(timer);
          resolve();
        }
      };
    });
  } finally {
    state.onEnded = undefined;
    state.watches.close();
    current = undefined;
  }
  const sorted = Float64Array.from(state.latencies).sort();
  return {
    deliveries: sorted.length,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    maxMs: sorted.length > 0 ? (sorted[sorted.length - 1] as number) : 0,
    completed: state.completed,
    errors: state.errors,
    ...(state.firstError === undefined ? {} : { firstError: state.firstError }),
  };
}
