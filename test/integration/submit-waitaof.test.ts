/**
 * SUBMIT_WAITAOF=1 on a Redis with WAITAOF (7.2 or newer): the submit script
 * is followed by WAITAOF on the same connection, in the same write, and the
 * caller is acknowledged only once the job is fsynced to the AOF.
 *
 * Redis here is 7.0, which has no WAITAOF (the refusal at start is tested in
 * redis-preflight.test.ts), so this file runs against the server named by
 * REDIS_72_SERVER, e.g. valkey-server 8.0 (it reports redis_version 7.2.4)
 * from Debian bookworm-backports, unpacked with apt-get download + dpkg-deb -x.
 */
import { Code } from "@connectrpc/connect";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { reportClient } from "../helpers/clients.js";
import { openMonitor } from "../helpers/redis-monitor.js";
import { type RedisServerHandle, startRedisServer } from "../helpers/redis-server.js";
import { connectErrorOf } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const binary = process.env.REDIS_72_SERVER;

describe.runIf(binary !== undefined)("SUBMIT_WAITAOF=1 (REDIS_72_SERVER)", () => {
  let server: RedisServerHandle;
  let admin: Redis;
  const apps: TestApp[] = [];
  beforeAll(async () => {
    server = await startRedisServer({
      binary,
      appendonly: true,
      args: ["--appendfsync", "everysec"],
    });
    admin = new Redis(server.url);
  });
  afterEach(async () => {
    for (const app of apps.splice(0)) await app.close();
    await aofOn();
  });
  afterAll(async () => {
    admin?.disconnect();
    await server?.stop();
  });
  /** Turns AOF back on and waits for its rewrite, which a forked child does (and stop() does not kill). */
  async function aofOn() {
    await admin.config("SET", "appendonly", "yes");
    await waitFor(
      async () => {
        const info = await admin.info("persistence");
        return (
          info.includes("aof_rewrite_in_progress:0") && info.includes("aof_rewrite_scheduled:0")
        );
      },
      { what: "the AOF rewrite to finish" },
    );
  }
  async function start(env: Record<string, string>) {
    const app = await startTestApp({ REDIS_URL: server.url, ...env }, { mode: "api" });
    apps.push(app);
    return app;
  }

  /** The commands each client connection sent while `fn` ran (not those scripts ran). */
  async function monitored(fn: () => Promise<unknown>): Promise<Map<string, string[]>> {
    const bySource = new Map<string, string[]>();
    const monitor = await openMonitor(server.url);
    try {
      monitor.on("monitor", (_time: string, args: string[], source: string) => {
        if (source === "lua") return;
        bySource.set(source, [...(bySource.get(source) ?? []), String(args[0]).toLowerCase()]);
      });
      await fn();
      const marker = `marker-${Date.now()}`;
      await admin.exists(marker);
      await waitFor(() => [...bySource.values()].some((c) => c.includes("exists")), {
        what: "the marker",
      });
    } finally {
      monitor.disconnect();
    }
    return bySource;
  }

  it("acknowledges a submit after the script and WAITAOF, sent together on one connection", async () => {
    const t = await start({ SUBMIT_WAITAOF: "1" });
    const client = reportClient("grpc", t.url);
    await client.submitReport({ userId: "u", reportType: ReportType.WEEKLY }); // loads the script
    let accepted: string | undefined;
    const seen = await monitored(async () => {
      const res = await client.submitReport({ userId: "u", reportType: ReportType.WEEKLY });
      expect(res.job?.state).toBe(JobState.QUEUED);
      accepted = res.jobId;
    });
    const submitter = [...seen.values()].find((c) => c.includes("evalsha"));
    expect(submitter).toEqual(["evalsha", "waitaof"]);
    expect(await admin.exists(t.app.keys.job(accepted ?? ""))).toBe(1);
  });

  it("adds nothing to a submit when off", async () => {
    const t = await start({});
    const client = reportClient("grpc", t.url);
    await client.submitReport({ userId: "u", reportType: ReportType.WEEKLY });
    const seen = await monitored(() =>
      client.submitReport({ userId: "u", reportType: ReportType.WEEKLY }),
    );
    expect([...seen.values()].find((c) => c.includes("evalsha"))).toEqual(["evalsha"]);
  });

  it("answers UNAVAILABLE when the AOF is turned off after start, and the same key then answers the job", async () => {
    const t = await start({ SUBMIT_WAITAOF: "1" });
    const client = reportClient("connect-json", t.url);
    await admin.config("SET", "appendonly", "no");
    const request = { userId: "u", reportType: ReportType.WEEKLY, idempotencyKey: "k-1" };
    const err = await connectErrorOf(client.submitReport(request));
    expect(err.code).toBe(Code.Unavailable);
    expect(err.rawMessage).toBe("storage is unavailable; retry shortly");
    await aofOn();
    const retried = await client.submitReport(request);
    expect(retried.deduplicated).toBe(true);
  });

  it("refuses to start without AOF", async () => {
    await admin.config("SET", "appendonly", "no");
    await expect(start({ SUBMIT_WAITAOF: "1" })).rejects.toThrow(
      /^SUBMIT_WAITAOF=1 needs appendonly yes: WAITAOF waits for the AOF fsync$/,
    );
  });
});
