/**
 * What an accepted submit leaves in Redis, exactly: the job record as
 * job-record.ts encodes the new job (every pair, in order), the QUEUED event
 * as the `submitted` transition derives it (with the trace id of the
 * record's traceparent last), not published (no one can be watching a new
 * job), the indexes,
 * the tenant's backlog set, the idempotency record and the BullMQ job. The
 * submit script names the record's fixed fields and the event's constants
 * itself (fewer arguments per call), so these pin it to the codecs. And the
 * backlog bound counts every kind of backlog key of every queue, though the
 * script reads the lengths of only the keys that exist.
 */
import net from "node:net";
import { propagation, trace } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { BasicTracerProvider } from "@opentelemetry/sdk-trace-base";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from "vitest";
import { BackpressureError } from "../../src/domain/errors.js";
import { type ReportType, reportTypes, type SubmitInput } from "../../src/domain/job.js";
import { jobTransitions } from "../../src/domain/job-transitions.js";
import { encodeEvent, eventField } from "../../src/events/event-codec.js";
import { decodeRecord, encodeNewRecord, recordField } from "../../src/queue/job-record.js";
import { createKeys, type Keys, queueNameFor } from "../../src/queue/keys.js";
import { bullJobSpec, createSubmitter, digest } from "../../src/queue/submitter.js";
import { traceIdOf } from "../../src/telemetry/trace-context.js";
import { testSubmitterSettings } from "../helpers/submitter-settings.js";
import { testPrefix } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const idempotencyTtlMs = 60_000;
const settings = {
  worker: { retryBackoffMs: 1000 },
  retention: { succeededMs: 60_000, failedMs: 60_000 },
};

describe("createSubmitter(): an accepted submit's writes", () => {
  let redis: Redis;
  const sockets: net.Socket[] = [];
  const queues: Queue[] = [];

  beforeAll(() => {
    redis = new Redis(inject("redisUrl"));
    // A recording tracer: the record carries a traceparent and the event its trace id.
    trace.setGlobalTracerProvider(new BasicTracerProvider());
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  });
  afterEach(async () => {
    for (const socket of sockets.splice(0)) socket.destroy();
    for (const q of queues.splice(0)) await q.close();
  });
  afterAll(() => {
    trace.disable();
    propagation.disable();
    redis.disconnect();
  });

  function setup(maxBacklog = 1000, prefix = testPrefix()) {
    const keys = createKeys(prefix);
    const byType = Object.fromEntries(
      reportTypes.map((type) => {
        const q = new Queue(queueNameFor(type), { connection: redis, prefix: keys.bullPrefix });
        queues.push(q);
        return [type, q];
      }),
    ) as Record<ReportType, Queue>;
    const submitter = createSubmitter({
      redis,
      queues: byType,
      keys,
      settings: testSubmitterSettings({ attempts: 4, idempotencyTtlMs, maxBacklog }),
    });
    return { keys, submitter, byType };
  }

  /**
   * The messages published from now on (SPUBLISH's channel and message, as
   * MONITOR shows the commands clients and scripts run), read off a raw
   * socket: ioredis's monitor mode can take a MONITOR line for a reply.
   */
  async function published(): Promise<string[][]> {
    const seen: string[][] = [];
    const url = new URL(inject("redisUrl"));
    const socket = net.connect(Number(url.port), url.hostname);
    sockets.push(socket);
    let buffered = "";
    let started!: () => void;
    const monitoring = new Promise<void>((resolve) => {
      started = resolve;
    });
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      buffered += chunk;
      for (let end = buffered.indexOf("\r\n"); end >= 0; end = buffered.indexOf("\r\n")) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        if (line === "+OK") started();
        const args = monitorArgs(line);
        if (args[0]?.toLowerCase() === "spublish") seen.push(args.slice(1));
      }
    });
    socket.write("MONITOR\r\n");
    await monitoring;
    return seen;
  }

  async function expectWrites(
    keys: Keys,
    byType: Record<ReportType, Queue>,
    input: SubmitInput,
    submit: () => ReturnType<ReturnType<typeof createSubmitter>["submit"]>,
  ): Promise<void> {
    const messages = await published();
    const { job, deduplicated } = await submit();
    expect(deduplicated).toBe(false);
    expect(job.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);

    const pairs = (await redis.call("HGETALL", keys.job(job.id))) as string[];
    const fp = pairs[pairs.indexOf(recordField.fingerprint) + 1] ?? "";
    expect(fp).toMatch(/^[\w-]{43}$/);
    expect(pairs).toEqual(encodeNewRecord(job, fp));
    // Fields at their default are left out, and read back as it: the stored
    // record is the job the call answered.
    for (const field of ["progress", "phase", "attemptsMade", "failureReason"] as const) {
      expect(pairs.filter((_, i) => i % 2 === 0)).not.toContain(recordField[field]);
    }
    expect(decodeRecord(pairs)).toEqual(job);

    const entries = await redis.xrange(keys.events(job.id), "-", "+");
    expect(entries).toHaveLength(1);
    const [entryId, fields] = entries[0] ?? ["", []];
    const event = jobTransitions.submitted.derive({ at: job.createdAt }).event;
    const expected = [...encodeEvent(event), eventField.traceId, traceIdOf(job.traceparent)];
    expect(fields).toEqual(expected);
    // Not published: a watch subscribes to a job it has read, and no one can
    // have read a job whose id the script has just drawn. A sentinel
    // published after the submit is seen, and nothing on the job's channel
    // before it.
    const channel = keys.eventChannel(job.id);
    await redis.spublish(`${channel}:sentinel`, entryId);
    const mine = () => messages.filter(([c]) => c?.startsWith(channel));
    await waitFor(() => mine().length > 0, { what: "the sentinel's message" });
    expect(mine()).toEqual([[`${channel}:sentinel`, entryId]]);

    const score = String(job.createdAt);
    expect(await redis.zscore(keys.tenantIndex(input.tenant), job.id)).toBe(score);
    expect(await redis.zscore(keys.userIndex(input.tenant, digest(input.userId)), job.id)).toBe(
      score,
    );
    expect(await redis.zscore(keys.live, job.id)).toBe(score);
    expect(await redis.sismember(keys.tenants, input.tenant)).toBe(1);
    expect(await redis.smembers(keys.tenantBacklog(input.tenant))).toEqual([job.id]);
    if (input.idempotencyKey !== undefined) {
      const idem = keys.idempotency(input.tenant, digest(input.idempotencyKey));
      expect(await redis.call("HGETALL", idem)).toEqual([
        "job",
        job.id,
        "fp",
        fp,
        "until",
        String(job.createdAt + idempotencyTtlMs),
      ]);
      expect(await redis.ttl(idem)).toBe(-1);
    }
    const bull = await byType[input.reportType].getJob(job.id);
    expect(bull?.data).toEqual(bullJobSpec(job, settings).data);
  }

  it("writes the record, event, indexes and idempotency record of a keyed submit", async () => {
    const { keys, submitter, byType } = setup();
    const input: SubmitInput = {
      tenant: "acme",
      userId: "u-1",
      idempotencyKey: "k-1",
      reportType: "weekly",
      filters: { region: "eu", 'quote"d/': "ü" },
      priority: "high",
    };
    await expectWrites(keys, byType, input, () => submitter.submit(input));
  });

  it("writes the optional record fields of a scheduled keyless submit with a deadline", async () => {
    const { keys, submitter, byType } = setup();
    const now = Date.now();
    const input: SubmitInput = {
      tenant: "acme",
      userId: "u-2",
      reportType: "custom",
      filters: {},
      priority: "low",
      runAt: now + 60_000,
      deadline: now + 120_000,
    };
    await expectWrites(keys, byType, input, () => submitter.submit(input));
    expect(await byType.custom.getDelayedCount()).toBe(1);
  });

  it("takes a key prefix with quotes, backslashes, a line break and non-ASCII bytes as written", async () => {
    // The script names the keys every call of a queue shares in its own text
    // (submit.lua's constants): they must come out as these bytes.
    const { keys, submitter, byType } = setup(1000, `${testPrefix()}'q"\\b]\n ü1`);
    const input: SubmitInput = {
      tenant: "acme",
      userId: "u-4",
      idempotencyKey: "k-4",
      reportType: "monthly",
      filters: {},
      priority: "normal",
    };
    await expectWrites(keys, byType, input, () => submitter.submit(input));
    expect(await byType.monthly.getPrioritizedCount()).toBe(1);
  });

  it("counts every queue's prioritized, delayed, waiting and paused jobs in the backlog", async () => {
    const { keys, submitter, byType } = setup(4);
    const { custom, monthly } = byType;
    const input = (n: number): SubmitInput => ({
      tenant: "acme",
      userId: "u-3",
      idempotencyKey: `k-${n}`,
      reportType: "weekly",
      filters: {},
      priority: "normal",
    });
    // One job of each kind, each in the last queue's key of its kind, the
    // last kinds the script reads.
    await redis.zadd(custom.keys.prioritized as string, 1, "p");
    await redis.zadd(monthly.keys.delayed as string, 1, "d");
    await redis.lpush(custom.keys.wait as string, "w");
    expect((await submitter.submit(input(1))).deduplicated).toBe(false);
    await redis.lpush(custom.keys.paused as string, "x");
    const refused = await submitter.submit(input(2)).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(BackpressureError);
    expect((refused as Error).message).toContain("(5 jobs waiting)");
    expect(await redis.zcard(keys.tenantIndex("acme"))).toBe(1);
  });
});

/**
 * The arguments of a MONITOR line (`<time> [<db> <client>] "arg" "arg" ...`),
 * each unquoted as Redis quotes them (sdscatrepr), as UTF-8.
 */
function monitorArgs(line: string): string[] {
  const args: string[] = [];
  const start = line.indexOf("] ");
  if (start < 0) return args;
  let i = start + 2;
  while (i < line.length) {
    if (line[i] !== '"') {
      i++;
      continue;
    }
    const bytes: number[] = [];
    for (i++; i < line.length && line[i] !== '"'; i++) {
      const c = line[i] ?? "";
      if (c !== "\\") {
        bytes.push(c.charCodeAt(0));
        continue;
      }
      const next = line[++i] ?? "";
      if (next === "x") {
        bytes.push(Number.parseInt(line.slice(i + 1, i + 3), 16));
        i += 2;
      } else {
        const escaped: Record<string, number> = { n: 10, r: 13, t: 9, a: 7, b: 8 };
        bytes.push(escaped[next] ?? next.charCodeAt(0));
      }
    }
    i++;
    args.push(Buffer.from(bytes).toString("utf8"));
  }
  return args;
}
