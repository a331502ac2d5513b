/**
 * Every invalid input of issue 2 item 9 is INVALID_ARGUMENT with a
 * buf.validate.Violations detail naming exactly the bad fields, over every
 * protocol, and enqueues nothing. Error messages on the wire never carry
 * internals (stack traces, Redis or ioredis error text).
 */

import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { type CallOptions, Code, type ConnectError } from "@connectrpc/connect";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { ReportType } from "../../gen/reports/v1/job_pb.js";
import type {
  GetJobRequestSchema,
  SubmitReportRequestSchema,
  WatchJobRequestSchema,
} from "../../gen/reports/v1/report_service_pb.js";
import { protocols, reportClient } from "../helpers/clients.js";
import { scanKeys } from "../helpers/redis-keys.js";
import { type RedisServerHandle, startRedisServer } from "../helpers/redis-server.js";
import { connectErrorOf } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

/** The field paths listed by the error's Violations detail, sorted. */
function violatedFields(err: ConnectError): string[] {
  const details = err.findDetails(ViolationsSchema);
  expect(details).toHaveLength(1);
  const violations = details[0]?.violations ?? [];
  for (const v of violations) expect(v.message).not.toBe("");
  return violations.map((v) => (v.field?.elements ?? []).map((e) => e.fieldName).join(".")).sort();
}

/**
 * Texts that would reveal internals if they reached a caller: stack traces,
 * Redis replies, and what ioredis and Node say when a connection is down.
 */
const internalMarkers = [
  "Error:",
  "    at ",
  "ERR ",
  "ioredis",
  "WRONGTYPE",
  "ECONN",
  "ETIMEDOUT",
  "EPIPE",
  "Connection is closed",
  "Stream isn't writeable",
  "enableOfflineQueue",
  "max retries",
  "127.0.0.1",
];

function expectNothingInternal(text: string): void {
  for (const marker of internalMarkers) expect(text).not.toContain(marker);
}

type SubmitInit = MessageInitShape<typeof SubmitReportRequestSchema>;
type GetInit = MessageInitShape<typeof GetJobRequestSchema>;
type WatchInit = MessageInitShape<typeof WatchJobRequestSchema>;

const valid: SubmitInit = { userId: "u1", reportType: ReportType.WEEKLY };
const bigFilters = { blob: "x".repeat(16 * 1024) };

/** One invalid request and the fields it must be rejected for. */
type Case =
  | {
      name: string;
      rpc: "submitReport";
      request: SubmitInit;
      headers?: Record<string, string>;
      fields: string[];
    }
  | { name: string; rpc: "getJob"; request: GetInit; fields: string[] }
  | { name: string; rpc: "watchJob"; request: WatchInit; fields: string[] };

const cases: Case[] = [
  {
    name: "an empty user_id",
    rpc: "submitReport",
    request: { ...valid, userId: "" },
    fields: ["user_id"],
  },
  {
    name: "a user_id of 129 characters",
    rpc: "submitReport",
    request: { ...valid, userId: "u".repeat(129) },
    fields: ["user_id"],
  },
  {
    name: "an unset report_type",
    rpc: "submitReport",
    request: { userId: "u1" },
    fields: ["report_type"],
  },
  {
    name: "an unknown report_type (99)",
    rpc: "submitReport",
    request: { ...valid, reportType: 99 as ReportType },
    fields: ["report_type"],
  },
  {
    name: "an idempotency_key of 256 characters",
    rpc: "submitReport",
    request: { ...valid, idempotencyKey: "k".repeat(256) },
    fields: ["idempotency_key"],
  },
  {
    name: "an idempotency_key with a control character",
    rpc: "submitReport",
    request: { ...valid, idempotencyKey: "key\u0001" },
    fields: ["idempotency_key"],
  },
  {
    name: "an idempotency_key with a non-ASCII character",
    rpc: "submitReport",
    request: { ...valid, idempotencyKey: "clé" },
    fields: ["idempotency_key"],
  },
  {
    name: "an Idempotency-Key header of 256 characters",
    rpc: "submitReport",
    request: valid,
    headers: { "idempotency-key": "h".repeat(256) },
    fields: ["idempotency_key"],
  },
  {
    name: "an Idempotency-Key header with a tab",
    rpc: "submitReport",
    request: valid,
    headers: { "idempotency-key": "bad\tkey" },
    fields: ["idempotency_key"],
  },
  {
    name: "filters over 16 KiB",
    rpc: "submitReport",
    request: { ...valid, filters: bigFilters },
    fields: ["filters"],
  },
  {
    name: "a run_at beyond MAX_RUN_AT_SECONDS (30 days)",
    rpc: "submitReport",
    request: { ...valid, runAt: timestampFromMs(Date.now() + 31 * 86_400_000) },
    fields: ["run_at"],
  },
  {
    name: "every SubmitReport field bad at once",
    rpc: "submitReport",
    request: {
      userId: "",
      reportType: 99 as ReportType,
      idempotencyKey: "\u0001",
      filters: bigFilters,
    },
    fields: ["filters", "idempotency_key", "report_type", "user_id"],
  },
  { name: "an empty job_id in GetJob", rpc: "getJob", request: { jobId: "" }, fields: ["job_id"] },
  {
    name: "a job_id with forbidden characters in GetJob",
    rpc: "getJob",
    request: { jobId: "../job id" },
    fields: ["job_id"],
  },
  {
    name: "a job_id of 65 characters in GetJob",
    rpc: "getJob",
    request: { jobId: "j".repeat(65) },
    fields: ["job_id"],
  },
  {
    name: "a malformed after_event_id in WatchJob",
    rpc: "watchJob",
    request: { jobId: "someJob1", afterEventId: "yesterday" },
    fields: ["after_event_id"],
  },
  {
    name: "a malformed job_id in WatchJob",
    rpc: "watchJob",
    request: { jobId: "bad id" },
    fields: ["job_id"],
  },
  {
    name: "both WatchJob fields bad at once",
    rpc: "watchJob",
    request: { jobId: "", afterEventId: "12-x" },
    fields: ["after_event_id", "job_id"],
  },
];

describe("request validation", () => {
  let t: TestApp;
  let redis: Redis;
  beforeAll(async () => {
    t = await startTestApp();
    redis = new Redis(inject("redisUrl"), { lazyConnect: true });
    await redis.connect();
  });
  afterAll(async () => {
    redis?.disconnect();
    await t?.close();
  });

  /** Every key under the app's prefix that only an accepted submit writes. */
  const submitKeys = async (): Promise<string[]> => {
    const prefix = t.config.redis.prefix;
    const found: string[] = [];
    for (const pattern of [`${prefix}:job:*`, `${prefix}:events:*`, `${prefix}:idem:*`]) {
      found.push(...(await scanKeys(redis, pattern)));
    }
    return found;
  };

  const call = async (protocol: (typeof protocols)[number], c: Case): Promise<ConnectError> => {
    const client = reportClient(protocol, t.url);
    if (c.rpc === "submitReport") {
      const options: CallOptions = c.headers ? { headers: c.headers } : {};
      return connectErrorOf(client.submitReport(c.request, options));
    }
    if (c.rpc === "getJob") return connectErrorOf(client.getJob(c.request));
    return connectErrorOf(
      (async () => {
        for await (const _ of client.watchJob(c.request, { timeoutMs: 5_000 })) {
          // Any message at all means the request was accepted.
        }
      })(),
    );
  };

  for (const protocol of protocols) {
    describe(`over ${protocol}`, () => {
      for (const c of cases) {
        it(`rejects ${c.name} as INVALID_ARGUMENT listing ${c.fields.join(", ")}`, async () => {
          const before = await submitKeys();
          const err = await call(protocol, c);
          expect(err.code).toBe(Code.InvalidArgument);
          expect(violatedFields(err)).toEqual(c.fields);
          for (const field of c.fields) expect(err.rawMessage).toContain(field);
          expectNothingInternal(err.rawMessage);
          expect(await submitKeys()).toEqual(before);
        });
      }
    });
  }

  it("accepts the boundary values (control: the key scan sees accepted submits)", async () => {
    const client = reportClient("connect-json", t.url);
    const res = await client.submitReport({
      userId: "u".repeat(128),
      reportType: ReportType.CUSTOM,
      idempotencyKey: `${"~".repeat(254)} `,
      // {"blob":"…"} is exactly 16 KiB as JSON.
      filters: { blob: "x".repeat(16 * 1024 - 11) },
    });
    expect(res.deduplicated).toBe(false);
    const keys = await submitKeys();
    expect(keys).toContain(`${t.config.redis.prefix}:job:${res.jobId}`);
  });
});

describe("error responses on the wire", () => {
  // A private Redis, so the test can plant a wrong-typed key and kill it.
  let server: RedisServerHandle;
  let t: TestApp;
  let redis: Redis;
  beforeAll(async () => {
    server = await startRedisServer();
    t = await startTestApp({ REDIS_URL: server.url });
    redis = new Redis(server.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    redis.on("error", () => {});
    await redis.connect();
  });
  afterAll(async () => {
    redis?.disconnect();
    await t?.close();
    await server?.stop();
  });

  /** A Connect JSON unary call with fetch: the body exactly as it travels. */
  const connectJson = async (method: string, body: unknown) => {
    const res = await fetch(`${t.url}/reports.v1.ReportService/${method}`, {
      method: "POST",
      headers: { "content-type": "application/json", "connect-protocol-version": "1" },
      body: JSON.stringify(body),
    });
    return { status: res.status, text: await res.text() };
  };

  it("sends only safe sentences for invalid, unknown and conflicting requests", async () => {
    const texts: string[] = [];
    const invalid = await connectJson("SubmitReport", { userId: "", reportType: 99 });
    expect(invalid.status).toBe(400);
    texts.push(invalid.text);
    const missing = await connectJson("GetJob", { jobId: "noSuchJob1" });
    expect(missing.status).toBe(404);
    texts.push(missing.text);
    const malformed = await connectJson("GetJob", { jobId: { nested: true } });
    expect(malformed.status).toBe(400);
    texts.push(malformed.text);
    const key = "conflict-key";
    await connectJson("SubmitReport", { idempotencyKey: key, userId: "u1", reportType: 1 });
    const conflict = await connectJson("SubmitReport", {
      idempotencyKey: key,
      userId: "u2",
      reportType: 1,
    });
    expect(conflict.status).toBe(409);
    texts.push(conflict.text);
    const badJson = await fetch(`${t.url}/v1/reports`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{not json",
    });
    expect(badJson.status).toBe(400);
    texts.push(await badJson.text());
    for (const text of texts) expectNothingInternal(text);
  });

  it("answers a Redis command error as INTERNAL without its text", async () => {
    // A job record of the wrong type makes HGETALL/XRANGE fail with WRONGTYPE.
    const prefix = t.config.redis.prefix;
    await redis.set(`${prefix}:job:wrongType1`, "not a hash");
    await redis.set(`${prefix}:events:wrongType1`, "not a stream");
    for (const protocol of protocols) {
      const client = reportClient(protocol, t.url);
      const get = await connectErrorOf(client.getJob({ jobId: "wrongType1" }));
      expect(get.code).toBe(Code.Internal);
      expect(get.rawMessage).toBe("internal error");
      const watch = await connectErrorOf(
        (async () => {
          for await (const _ of client.watchJob({ jobId: "wrongType1" }, { timeoutMs: 5_000 })) {
            // Drain.
          }
        })(),
      );
      expect([Code.Internal, Code.NotFound]).toContain(watch.code);
      expectNothingInternal(watch.rawMessage);
    }
    const raw = await connectJson("GetJob", { jobId: "wrongType1" });
    expect(raw.status).toBe(500);
    expectNothingInternal(raw.text);
    const plain = await fetch(`${t.url}/v1/jobs/wrongType1`);
    expect(plain.status).toBe(500);
    const plainText = await plain.text();
    expect(JSON.parse(plainText)).toEqual({ code: "internal", message: "internal error" });
  });

  it("answers UNAVAILABLE without Redis error text while Redis is down", async () => {
    await server.kill("SIGKILL");
    try {
      const texts: string[] = [];
      for (const protocol of protocols) {
        const client = reportClient(protocol, t.url);
        const submit = await connectErrorOf(
          client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY }),
        );
        expect(submit.code).toBe(Code.Unavailable);
        texts.push(submit.rawMessage);
        const get = await connectErrorOf(client.getJob({ jobId: "anyJob1" }));
        expect(get.code).toBe(Code.Unavailable);
        texts.push(get.rawMessage);
      }
      const raw = await connectJson("GetJob", { jobId: "anyJob1" });
      expect(raw.status).toBe(503);
      texts.push(raw.text);
      const plain = await fetch(`${t.url}/v1/jobs/anyJob1`);
      expect(plain.status).toBe(503);
      texts.push(await plain.text());
      for (const text of texts) expectNothingInternal(text);
      // One safe sentence, whichever way the Redis client failed.
      const rpcMessages = new Set(texts.slice(0, protocols.length * 2));
      expect(rpcMessages.size).toBe(1);
    } finally {
      await server.restart();
    }
    // The app recovers once Redis is back.
    const client = reportClient("connect-json", t.url);
    const back = await waitFor(
      async () => {
        const err = await connectErrorOf(client.getJob({ jobId: "anyJob1" }));
        return err.code === Code.NotFound ? err : undefined;
      },
      { what: "GetJob to reach Redis again" },
    );
    expect(back.code).toBe(Code.NotFound);
  });
});
