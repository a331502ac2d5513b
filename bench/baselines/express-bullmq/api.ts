/**
 * The naive baseline's API: the design the README argues against, written
 * the way most job services start. Express with a JSON body parser and a
 * schema check; submit reads the idempotency record, adds the BullMQ job
 * under an id derived from the key, then writes the record (three round
 * trips, racy under concurrent duplicates); status asks BullMQ for the job
 * and its state (`job.getState()`, which searches the queue's lists); watch
 * streams the job's events as Server-Sent Events from one blocking XREAD
 * connection per watcher.
 */
import { createHash, randomUUID } from "node:crypto";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Queue } from "bullmq";
import express, { type NextFunction, type Request, type Response } from "express";
import { Redis } from "ioredis";
import type { JsonObject } from "../../../src/domain/job.js";
import {
  type BaselineConfig,
  baselineQueueName,
  eventStreamKey,
  idempotencyKey,
} from "./config.js";

/** The report types the baseline accepts. */
export const baselineReportTypes = ["weekly", "monthly", "custom"] as const;

/** What a job carries in BullMQ. */
export interface BaselineJobData {
  userId: string;
  reportType: (typeof baselineReportTypes)[number];
  filters: JsonObject;
}

/** The running API. */
export interface BaselineApi {
  /** Listens on the configured host and port (0: a free one); resolves with the port. */
  listen(): Promise<number>;
  /** Ends watches, stops the server and closes Redis. Idempotent. */
  close(): Promise<void>;
}

/** Checks a submit body; returns the problems (empty when valid). */
export function checkSubmitBody(body: unknown): string[] {
  if (typeof body !== "object" || body === null || Array.isArray(body))
    return ["body must be a JSON object"];
  const b = body as Record<string, unknown>;
  const problems: string[] = [];
  if (typeof b.userId !== "string" || b.userId.length < 1 || b.userId.length > 128)
    problems.push("userId must be a string of 1-128 characters");
  if (!baselineReportTypes.includes(b.reportType as BaselineJobData["reportType"]))
    problems.push(`reportType must be one of ${baselineReportTypes.join(", ")}`);
  if (
    b.filters !== undefined &&
    (typeof b.filters !== "object" || b.filters === null || Array.isArray(b.filters))
  )
    problems.push("filters must be an object");
  if (
    b.idempotencyKey !== undefined &&
    (typeof b.idempotencyKey !== "string" ||
      b.idempotencyKey.length < 1 ||
      b.idempotencyKey.length > 255)
  )
    problems.push("idempotencyKey must be a string of 1-255 characters");
  return problems;
}

/** Creates the API (not listening). */
export function createBaselineApi(config: BaselineConfig): BaselineApi {
  const redis = new Redis(config.redisUrl);
  redis.on("error", () => undefined);
  const queue = new Queue<BaselineJobData>(baselineQueueName, {
    connection: { url: config.redisUrl },
    prefix: config.prefix,
  });
  queue.on("error", () => undefined);
  const watchers = new Set<Redis>();
  const app = express();
  app.disable("x-powered-by");
  app.use(express.json({ limit: "64kb" }));

  app.post("/v1/reports", async (req: Request, res: Response) => {
    const problems = checkSubmitBody(req.body);
    if (problems.length > 0) {
      res.status(400).json({ error: "invalid request", problems });
      return;
    }
    const body = req.body as BaselineJobData & { idempotencyKey?: string };
    const key = req.get("idempotency-key") ?? body.idempotencyKey ?? randomUUID();
    const recordKey = idempotencyKey(config.prefix, key);
    const existing = await redis.get(recordKey);
    if (existing !== null) {
      res.status(200).json({ jobId: existing, statusUrl: statusUrl(existing), deduplicated: true });
      return;
    }
    const jobId = createHash("sha256").update(key).digest("base64url").slice(0, 22);
    await queue.add(
      body.reportType,
      { userId: body.userId, reportType: body.reportType, filters: body.filters ?? {} },
      {
        jobId,
        attempts: 5,
        backoff: { type: "exponential", delay: 1000 },
        removeOnComplete: { age: 24 * 3600 },
        removeOnFail: { age: 7 * 24 * 3600 },
      },
    );
    await redis.set(recordKey, jobId, "EX", config.idempotencyTtlSeconds);
    res.status(202).json({ jobId, statusUrl: statusUrl(jobId), deduplicated: false });
  });

  app.get("/v1/jobs/:id", async (req: Request, res: Response) => {
    const job = await queue.getJob(String(req.params.id));
    if (job === undefined) {
      res.status(404).json({ error: "job not found" });
      return;
    }
    const state = await job.getState();
    res.json({
      id: job.id,
      state,
      progress: job.progress,
      attemptsMade: job.attemptsMade,
      failedReason: job.failedReason,
      result: job.returnvalue,
      createdAt: job.timestamp,
      startedAt: job.processedOn,
      finishedAt: job.finishedOn,
    });
  });

  app.get("/v1/jobs/:id/events", (req: Request, res: Response) => {
    res.writeHead(200, {
      "content-type": "text/event-stream",
      "cache-control": "no-cache",
      connection: "keep-alive",
    });
    res.flushHeaders();
    const stream = eventStreamKey(config.prefix, String(req.params.id));
    // One blocking connection per watcher: XREAD BLOCK holds it until an event comes.
    const reader = new Redis(config.redisUrl);
    reader.on("error", () => undefined);
    watchers.add(reader);
    let open = true;
    const stop = () => {
      open = false;
      watchers.delete(reader);
      reader.disconnect();
    };
    res.on("close", stop);
    let last = typeof req.query.after === "string" ? req.query.after : "0";
    (async () => {
      while (open) {
        const reply = await reader.xread("BLOCK", 0, "STREAMS", stream, last);
        for (const [, entries] of reply ?? []) {
          for (const [id, fields] of entries) {
            last = id;
            const event: Record<string, string> = {};
            for (let i = 0; i + 1 < fields.length; i += 2)
              event[fields[i] as string] = fields[i + 1] as string;
            res.write(`id: ${id}\ndata: ${JSON.stringify(event)}\n\n`);
            if (event.type === "completed" || event.type === "failed") open = false;
          }
        }
      }
    })()
      .catch(() => undefined)
      .finally(() => {
        stop();
        res.end();
      });
  });

  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const status =
      typeof err === "object" && err !== null && "status" in err && typeof err.status === "number"
        ? err.status
        : 500;
    res.status(status).json({ error: status < 500 ? "bad request" : "internal error" });
  });

  const statusUrl = (id: string) => `${config.publicUrl}/v1/jobs/${id}`;
  let server: Server | undefined;
  let closing: Promise<void> | undefined;
  return {
    listen: () =>
      new Promise((resolve, reject) => {
        const s = app.listen(config.port, config.host, (err?: Error) => {
          if (err) reject(err);
          else resolve((s.address() as AddressInfo).port);
        });
        server = s;
      }),
    close() {
      closing ??= (async () => {
        for (const w of watchers) w.disconnect();
        const s = server;
        if (s !== undefined) {
          s.closeAllConnections();
          await new Promise<void>((resolve) => s.close(() => resolve()));
        }
        await queue.close().catch(() => undefined);
        redis.disconnect();
      })();
      return closing;
    },
  };
}
