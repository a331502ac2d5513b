/**
 * SUBMIT_WAIT_REPLICAS: the submit script and WAIT go in one pipeline, and
 * the caller is acknowledged only once that many replicas have the job. On
 * a Redis of its own, without a replica every submit is UNAVAILABLE (the
 * job exists, and a retry with the same key finds it); once a replica
 * follows, submits are acknowledged.
 */
import { Code } from "@connectrpc/connect";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReportType } from "../../gen/reports/v1/job_pb.js";
import { reportClient } from "../helpers/clients.js";
import { type RedisServerHandle, startRedisServer } from "../helpers/redis-server.js";
import { errorOf } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

let primary: RedisServerHandle;
let replica: RedisServerHandle | undefined;
const apps: TestApp[] = [];
beforeAll(async () => {
  primary = await startRedisServer();
});
afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()));
  await replica?.stop();
  await primary?.stop();
});

describe("SUBMIT_WAIT_REPLICAS", () => {
  it("acknowledges a submit only once a replica has it", async () => {
    const t = await startTestApp(
      {
        REDIS_URL: primary.url,
        SUBMIT_WAIT_REPLICAS: "1",
        SUBMIT_WAIT_REPLICAS_TIMEOUT_MS: "200",
      },
      { mode: "api" },
    );
    apps.push(t);
    const client = reportClient("grpc", t.url);
    const request = { userId: "u", reportType: ReportType.WEEKLY, idempotencyKey: "k1" };
    const refused = await errorOf(client.submitReport(request));
    expect(refused?.code).toBe(Code.Unavailable);

    replica = await startRedisServer({ args: ["--replicaof", "127.0.0.1", String(primary.port)] });
    const admin = new Redis(replica.url);
    try {
      await waitFor(
        async () => (await admin.info("replication")).includes("master_link_status:up"),
        {
          timeoutMs: 15_000,
          what: "the replica to follow",
        },
      );
    } finally {
      admin.disconnect();
    }
    // The job the refused call made: a retry with the same key answers with it.
    const again = await client.submitReport(request);
    expect(again.deduplicated).toBe(true);
    const fresh = await client.submitReport({ userId: "u", reportType: ReportType.WEEKLY });
    expect(fresh.deduplicated).toBe(false);
  });
});
