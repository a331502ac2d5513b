/**
 * SUBMIT_WAIT_REPLICAS: the submit script and WAIT go in one pipeline, and
 * the caller is acknowledged only once that many replicas have the job. On
 * a Redis of its own, without a replica every submit is UNAVAILABLE (the
 * job exists, and a retry with the same key finds it); once a replica
 * follows, submits are acknowledged.
 *
 * And what it buys: with the replication link cut (a proxy between replica
 * and primary drops what the primary sends), a submit without
 * SUBMIT_WAIT_REPLICAS is acknowledged and then lost when the primary dies
 * and its replica is promoted; with it, the caller was told UNAVAILABLE and
 * its retry (same key) on the promoted replica makes the job.
 */

import net from "node:net";
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

/**
 * Waits until a write on the primary at `url` is acknowledged by a replica
 * (WAIT 1). The replica saying its link is up is not enough: after a full
 * sync the primary starts its command stream on the replica's first
 * acknowledgement, sent once a second, and until then WAIT counts it out
 * (seen as a flaky UNAVAILABLE on a loaded machine).
 */
async function waitForOnlineReplica(url: string): Promise<void> {
  const admin = new Redis(url);
  try {
    await waitFor(
      async () => {
        await admin.set("replica-probe", String(Date.now()));
        return Number(await admin.call("WAIT", "1", "100")) >= 1;
      },
      { timeoutMs: 15_000, what: "a replica to acknowledge a write" },
    );
  } finally {
    admin.disconnect();
  }
}

describe("SUBMIT_WAIT_REPLICAS", () => {
  it("acknowledges a submit only once a replica has it", async () => {
    const t = await startTestApp(
      {
        REDIS_URL: primary.url,
        SUBMIT_WAIT_REPLICAS: "1",
        SUBMIT_WAIT_REPLICAS_TIMEOUT_MS: "1000",
      },
      { mode: "api" },
    );
    apps.push(t);
    const client = reportClient("grpc", t.url);
    const request = { userId: "u", reportType: ReportType.WEEKLY, idempotencyKey: "k1" };
    const refused = await errorOf(client.submitReport(request));
    expect(refused?.code).toBe(Code.Unavailable);

    replica = await startRedisServer({ args: ["--replicaof", "127.0.0.1", String(primary.port)] });
    await waitForOnlineReplica(primary.url);
    // The job the refused call made: a retry with the same key answers with it.
    const again = await client.submitReport(request);
    expect(again.deduplicated).toBe(true);
    const fresh = await client.submitReport({ userId: "u", reportType: ReportType.WEEKLY });
    expect(fresh.deduplicated).toBe(false);
  });
});

/**
 * A TCP link from a replica to its primary that can be cut: once cut, what
 * the primary sends is dropped (the replica's acknowledgements still reach
 * the primary, so it believes the replica is there, as with a slow network).
 */
async function startReplicationLink(primaryPort: number) {
  let cut = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((replicaSide) => {
    const primarySide = net.connect(primaryPort, "127.0.0.1");
    sockets.add(replicaSide).add(primarySide);
    const closeBoth = () => {
      replicaSide.destroy();
      primarySide.destroy();
    };
    for (const s of [replicaSide, primarySide]) {
      s.on("error", closeBoth);
      s.on("close", closeBoth);
    }
    replicaSide.on("data", (chunk) => primarySide.write(chunk));
    primarySide.on("data", (chunk) => {
      if (!cut) replicaSide.write(chunk);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    cut() {
      cut = true;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe("a failover after the replication link was cut", () => {
  it("loses an acknowledged submit without SUBMIT_WAIT_REPLICAS; with it, the caller was refused and its retry makes the job", async () => {
    const master = await startRedisServer();
    const link = await startReplicationLink(master.port);
    const follower = await startRedisServer({
      args: ["--replicaof", "127.0.0.1", String(link.port)],
    });
    const followerAdmin = new Redis(follower.url);
    const local: TestApp[] = [];
    try {
      await waitForOnlineReplica(master.url);
      const unsafe = await startTestApp({ REDIS_URL: master.url }, { mode: "api" });
      local.push(unsafe);
      const safe = await startTestApp(
        {
          REDIS_URL: master.url,
          SUBMIT_WAIT_REPLICAS: "1",
          SUBMIT_WAIT_REPLICAS_TIMEOUT_MS: "1000",
        },
        { mode: "api" },
      );
      local.push(safe);
      const unsafeClient = reportClient("grpc", unsafe.url);
      const safeClient = reportClient("grpc", safe.url);

      // While the link works, a waited-for submit is on the replica when acknowledged.
      const before = await safeClient.submitReport({
        userId: "u",
        reportType: ReportType.WEEKLY,
        idempotencyKey: "before-cut",
      });
      expect(await followerAdmin.exists(safe.app.keys.job(before.jobId))).toBe(1);

      link.cut();
      const acknowledged = await unsafeClient.submitReport({
        userId: "u",
        reportType: ReportType.WEEKLY,
        idempotencyKey: "unsafe",
      });
      expect(acknowledged.deduplicated).toBe(false);
      const safeRequest = { userId: "u", reportType: ReportType.WEEKLY, idempotencyKey: "safe" };
      const refused = await errorOf(safeClient.submitReport(safeRequest));
      expect(refused?.code).toBe(Code.Unavailable);

      // The primary dies; its replica is promoted.
      await Promise.all(local.splice(0).map((a) => a.close()));
      await master.kill();
      await link.close();
      await followerAdmin.call("REPLICAOF", "NO", "ONE");

      // Without WAIT: the caller was told its job exists, and it is gone.
      expect(await followerAdmin.exists(unsafe.app.keys.job(acknowledged.jobId))).toBe(0);
      // With WAIT: what was acknowledged is there; the refused caller retries and gets its job.
      expect(await followerAdmin.exists(safe.app.keys.job(before.jobId))).toBe(1);
      const promoted = await startTestApp(
        {
          REDIS_URL: follower.url,
          REDIS_PREFIX: safe.config.redis.prefix,
          SUBMIT_WAIT_REPLICAS: "0",
        },
        { mode: "api" },
      );
      local.push(promoted);
      const client = reportClient("grpc", promoted.url);
      expect((await client.getJob({ jobId: before.jobId })).job?.id).toBe(before.jobId);
      const retried = await client.submitReport(safeRequest);
      expect(retried.deduplicated).toBe(false);
      expect((await client.getJob({ jobId: retried.jobId })).job?.id).toBe(retried.jobId);
    } finally {
      followerAdmin.disconnect();
      await Promise.all(local.map((a) => a.close()));
      await link.close().catch(() => {});
      await follower.stop();
      await master.stop();
    }
  });
});
