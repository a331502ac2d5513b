/**
 * Abuse limits: the per-tenant submit rate (a token bucket in Redis, shared
 * by every API replica), the per-tenant cap on concurrent watches, and
 * message size limits on every protocol and on the plain HTTP route.
 */
import { Code } from "@connectrpc/connect";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RetryInfoSchema } from "../../gen/reports/v1/errors_pb.js";
import { ReportType } from "../../gen/reports/v1/job_pb.js";
import { maxBodyBytes } from "../../src/api/request-body.js";
import { protocols, reportClient } from "../helpers/clients.js";
import { openMonitor } from "../helpers/redis-monitor.js";
import { connectErrorOf, errorOf } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const acmeKey = "acme-key-0123456789abcdef";
const globexKey = "globex-key-0123456789abcdef";
const API_KEYS = `acme:${acmeKey},globex:${globexKey}`;
const request = { userId: "u", reportType: ReportType.WEEKLY };

describe("per-tenant submit rate", () => {
  let a: TestApp;
  let b: TestApp;

  beforeAll(async () => {
    // One token every 2 s, bursts of 3: nothing refills during the burst below.
    const env = { API_KEYS, TENANT_SUBMIT_RATE: "0.5", TENANT_SUBMIT_BURST: "3" };
    a = await startTestApp(env, { mode: "api" });
    // A second API process on the same Redis and prefix: the same buckets.
    b = await startTestApp({ ...env, REDIS_PREFIX: a.config.redis.prefix }, { mode: "api" });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
  });

  it("trips across two API processes, per tenant, and recovers", async () => {
    const onA = reportClient("connect-binary", a.url, { apiKey: acmeKey });
    const onB = reportClient("grpc", b.url, { apiKey: acmeKey });
    const first = await onA.submitReport({ ...request, idempotencyKey: "first" });
    await onB.submitReport(request);
    await onA.submitReport(request);
    // The burst of 3 is spent, whichever process took it.
    const err = await connectErrorOf(onB.submitReport(request));
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.rawMessage).toMatch(/over its submit rate .*retry after \d+ s/);
    expect(Number(err.metadata.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(Number(err.metadata.get("retry-after"))).toBeLessThanOrEqual(2);
    const [info] = err.findDetails(RetryInfoSchema);
    const delayMs =
      Number(info?.retryDelay?.seconds ?? 0n) * 1000 + (info?.retryDelay?.nanos ?? 0) / 1e6;
    expect(delayMs).toBeGreaterThan(0);
    expect(delayMs).toBeLessThanOrEqual(2000);
    expect((await connectErrorOf(onA.submitReport(request))).code).toBe(Code.ResourceExhausted);

    // Plain HTTP: 429 with Retry-After.
    const res = await fetch(`${a.url}/v1/reports`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${acmeKey}` },
      body: JSON.stringify({ userId: "u", reportType: "weekly" }),
    });
    expect(res.status).toBe(429);
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);

    // A deduplicated resubmit needs no token.
    const again = await onB.submitReport({ ...request, idempotencyKey: "first" });
    expect(again).toMatchObject({ jobId: first.jobId, deduplicated: true });
    // Another tenant has its own bucket.
    await reportClient("grpc-web", a.url, { apiKey: globexKey }).submitReport(request);

    // Recovers once a token refills (one per 2 s).
    const started = Date.now();
    await waitFor(async () => (await errorOf(onA.submitReport(request))) === undefined, {
      timeoutMs: 5000,
      intervalMs: 100,
      what: "a token to refill",
    });
    expect(Date.now() - started).toBeGreaterThan(500);
  });
});

describe("the rate limit on the hot path", () => {
  let t: TestApp;
  let monitor: Redis | undefined;
  beforeAll(async () => {
    t = await startTestApp(
      { API_KEYS, TENANT_SUBMIT_RATE: "1000", TENANT_SUBMIT_BURST: "1000" },
      { mode: "api" },
    );
  });
  afterAll(async () => {
    monitor?.disconnect();
    await t?.close();
  });

  it("keeps SubmitReport at one Redis round trip", async () => {
    const client = reportClient("connect-binary", t.url, { apiKey: acmeKey });
    await client.submitReport(request); // loads the script (EVALSHA, then EVAL once)
    const commands: string[][] = [];
    monitor = await openMonitor(t.config.redis.url);
    monitor.on("monitor", (_time: string, args: string[], source: string) => {
      // Commands a script runs are reported too, with source "lua": only the client's count.
      if (source === "lua") return;
      if (args.some((a) => String(a).startsWith(`${t.config.redis.prefix}:`))) commands.push(args);
    });
    await client.submitReport(request);
    // MONITOR reports a command as it runs; a marker after ours shows everything arrived.
    const marker = `${t.config.redis.prefix}:marker`;
    const probe = new Redis(t.config.redis.url);
    await probe.get(marker);
    probe.disconnect();
    await waitFor(() => commands.some((c) => c.includes(marker)), { what: "the marker" });
    const ours = commands.filter((c) => !c.includes(marker));
    expect(ours.map((c) => String(c[0]).toLowerCase())).toEqual(["evalsha"]);
    // The bucket is inside that one script: it exists after the submit.
    expect(ours[0]).toContain(`${t.config.redis.prefix}:rate:acme`);
  });
});

describe("per-tenant cap on concurrent watches", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ API_KEYS, TENANT_MAX_WATCHES: "2" }, { mode: "api" });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("refuses a tenant's third open watch with RESOURCE_EXHAUSTED until one ends", async () => {
    const acme = reportClient("grpc", t.url, { apiKey: acmeKey });
    const { jobId } = await acme.submitReport(request);
    const watches: AbortController[] = [];
    const open = async (client = acme) => {
      const ctl = new AbortController();
      const it = client.watchJob({ jobId }, { signal: ctl.signal })[Symbol.asyncIterator]();
      // The QUEUED event arrives once the watch is open and counted.
      await it.next();
      watches.push(ctl);
      return it;
    };
    await open();
    await open();
    const third = await connectErrorOf(open());
    expect(third.code).toBe(Code.ResourceExhausted);
    expect(third.rawMessage).toMatch(/too many open watches/);
    // Per tenant: globex is not affected.
    const globex = reportClient("connect-binary", t.url, { apiKey: globexKey });
    const { jobId: globexJob } = await globex.submitReport(request);
    const g = new AbortController();
    const gi = globex.watchJob({ jobId: globexJob }, { signal: g.signal })[Symbol.asyncIterator]();
    expect((await gi.next()).done).toBe(false);
    g.abort();
    // Ending one frees its slot (released when the server sees the cancel).
    watches[0]?.abort();
    await waitFor(async () => (await errorOf(open())) === undefined, {
      timeoutMs: 5000,
      what: "a freed watch slot",
    });
    for (const w of watches) w.abort();
  });
});

describe("message size limits", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ API_KEYS, READ_MAX_BYTES: "4096" }, { mode: "api" });
  });
  afterAll(async () => {
    await t?.close();
  });

  it.each(protocols)("refuses a message over READ_MAX_BYTES over %s", async (protocol) => {
    const client = reportClient(protocol, t.url, { apiKey: acmeKey });
    const err = await connectErrorOf(client.submitReport({ ...request, userId: "x".repeat(5000) }));
    expect(err.code).toBe(Code.ResourceExhausted);
    // And keeps serving on the same client.
    expect((await client.listJobs({})).jobs).toBeDefined();
  });

  it("refuses a plain HTTP body over 64 KiB with 413, declared or chunked", async () => {
    const body = JSON.stringify({
      userId: "u",
      reportType: "weekly",
      pad: "x".repeat(maxBodyBytes),
    });
    const headers = { "content-type": "application/json", authorization: `Bearer ${acmeKey}` };
    const declared = await fetch(`${t.url}/v1/reports`, { method: "POST", headers, body });
    expect(declared.status).toBe(413);
    expect(await declared.json()).toMatchObject({
      message: `request body exceeds ${maxBodyBytes} bytes`,
    });
    // A streamed body has no Content-Length: refused while reading.
    const chunks = [body.slice(0, 1000), body.slice(1000)];
    const stream = new ReadableStream<Uint8Array>({
      pull(ctl) {
        const next = chunks.shift();
        if (next === undefined) ctl.close();
        else ctl.enqueue(new TextEncoder().encode(next));
      },
    });
    const chunked = await fetch(`${t.url}/v1/reports`, {
      method: "POST",
      headers,
      body: stream,
      duplex: "half",
    } as RequestInit);
    expect(chunked.status).toBe(413);
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
  });
});
