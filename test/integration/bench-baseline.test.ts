/**
 * The naive Express + BullMQ baseline that bench:compare measures against
 * (bench/baselines/express-bullmq) does what the README says such a design
 * does: a checked submit with an idempotency record, a status route through
 * BullMQ, a worker with the service's phases writing one event per phase and
 * the report file, and a watch that holds one Redis connection per watcher.
 * If it stopped working, the comparison would be against nothing.
 */

import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { type BaselineApi, createBaselineApi } from "../../bench/baselines/express-bullmq/api.js";
import {
  type BaselineConfig,
  readBaselineConfig,
} from "../../bench/baselines/express-bullmq/config.js";
import {
  type BaselineWorker,
  createBaselineWorker,
} from "../../bench/baselines/express-bullmq/worker.js";
import { tcpConnectionsTo } from "../../bench/proc-stats.js";
import { waitFor } from "../helpers/wait-for.js";

const redisUrl = inject("redisUrl");
const redisPort = Number(new URL(redisUrl).port);
let api: BaselineApi;
let worker: BaselineWorker;
let baseUrl: string;
let artifactDir: string;
let config: BaselineConfig;

beforeAll(async () => {
  artifactDir = mkdtempSync(path.join(tmpdir(), "report-jobs-baseline-"));
  config = readBaselineConfig({
    REDIS_URL: redisUrl,
    PORT: "0",
    BULL_PREFIX: `naive${randomBytes(4).toString("hex")}`,
    REPORT_PHASE_DELAY_MS: "20",
    ARTIFACT_DIR: artifactDir,
  });
  api = createBaselineApi(config);
  baseUrl = `http://127.0.0.1:${await api.listen()}`;
  worker = createBaselineWorker(config);
  await worker.ready();
});

afterAll(async () => {
  await api?.close();
  await worker?.close();
  rmSync(artifactDir, { recursive: true, force: true });
});

async function post(body: unknown, raw?: string) {
  const res = await fetch(`${baseUrl}/v1/reports`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: raw ?? JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** Reads a job's SSE watch until it closes; answers the events in order. */
function watch(jobId: string, url = baseUrl): Promise<Record<string, string>[]> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${url}/v1/jobs/${jobId}/events`, { agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        text += c;
      });
      res.on("close", () =>
        resolve(
          text
            .split("\n\n")
            .filter((b) => b.startsWith("id: "))
            .map((b) => JSON.parse(b.split("\ndata: ")[1] ?? "{}") as Record<string, string>),
        ),
      );
    });
    req.on("error", reject);
  });
}

describe("the Express + BullMQ baseline", () => {
  it("accepts a job once per idempotency key and rejects bad bodies without details", async () => {
    const key = `k-${randomBytes(4).toString("hex")}`;
    const first = await post({ userId: "alice", reportType: "weekly", idempotencyKey: key });
    expect(first.status).toBe(202);
    expect(first.body.deduplicated).toBe(false);
    const again = await post({ userId: "alice", reportType: "weekly", idempotencyKey: key });
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ jobId: first.body.jobId, deduplicated: true });

    const bad = await post({ userId: "", reportType: "yearly" });
    expect(bad.status).toBe(400);
    expect(bad.body.problems).toEqual([
      "userId must be a string of 1-128 characters",
      "reportType must be one of weekly, monthly, custom",
    ]);
    const malformed = await post(undefined, "{not json");
    expect(malformed.status).toBe(400);
    expect(JSON.stringify(malformed.body)).not.toMatch(/at |SyntaxError/);
  });

  it("runs the service's phases, one event each, writes the report and answers the status", async () => {
    const { body } = await post({ userId: "bob", reportType: "monthly" });
    const jobId = String(body.jobId);
    const events = await watch(jobId);
    expect(events.map((e) => [e.type, e.progress, e.phase])).toEqual([
      ["started", "5", "started"],
      ["progress", "40", "fetch-data"],
      ["progress", "80", "render"],
      ["completed", "100", "completed"],
    ]);
    expect(existsSync(String(events[3]?.path))).toBe(true);
    const status = await fetch(`${baseUrl}/v1/jobs/${jobId}`);
    expect(await status.json()).toMatchObject({ id: jobId, state: "completed" });
    expect((await fetch(`${baseUrl}/v1/jobs/no-such-job`)).status).toBe(404);
  });

  it("holds one Redis connection per watcher", async () => {
    const own = createBaselineApi(config);
    const url = `http://127.0.0.1:${await own.listen()}`;
    // Its command and queue connections, before any watcher.
    await fetch(`${url}/v1/jobs/none`);
    const before = tcpConnectionsTo(process.pid, redisPort);
    // Jobs that never come: each watch blocks in its own XREAD until the API closes.
    const watches = ["a", "b", "c"].map((id) => watch(`never-${id}`, url));
    await waitFor(() => tcpConnectionsTo(process.pid, redisPort) === before + 3, {
      what: "three more Redis connections",
    });
    await own.close();
    await Promise.all(watches);
    await waitFor(() => tcpConnectionsTo(process.pid, redisPort) <= before, {
      what: "the watchers' connections to close",
    });
  });
});
