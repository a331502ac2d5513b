/**
 * API keys and tenant isolation, over every RPC protocol and the plain HTTP
 * routes: no key and a wrong key get the same UNAUTHENTICATED answer; another
 * tenant's job is NOT_FOUND exactly as a missing one; idempotency keys and
 * listings are per tenant; rotated keys (several per tenant) all work.
 */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { unauthenticatedMessage } from "../../src/api/auth.js";
import { type Protocol, protocols, reportClient } from "../helpers/clients.js";
import { connectErrorOf, getJob, type ReportClient } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

const acmeKey = "acme-key-0123456789abcdef";
const acmeRotatedKey = "acme-key-rotated-fedcba9876543210";
const globexKey = "globex-key-0123456789abcdef";
const wrongKey = "not-a-key-0123456789abcdef";
const apiKeys = `acme:${acmeKey},acme:${acmeRotatedKey},globex:${globexKey}`;
const missingId = "AAAAAAAAAAAAAAAAAAAAAA";

/** Every ReportService RPC, called on `jobId` (or a fresh request for SubmitReport). */
const rpcs: Record<string, (c: ReportClient, jobId: string) => Promise<unknown>> = {
  SubmitReport: (c) => c.submitReport({ userId: "u", reportType: ReportType.WEEKLY }),
  GetJob: (c, jobId) => c.getJob({ jobId }),
  WatchJob: async (c, jobId) => {
    for await (const _ of c.watchJob({ jobId }, { signal: AbortSignal.timeout(5000) })) break;
  },
  CancelJob: (c, jobId) => c.cancelJob({ jobId }),
  ListJobs: (c) => c.listJobs({}),
  RetryJob: (c, jobId) => c.retryJob({ jobId }),
};

/** The NOT_FOUND message with the job id taken out, to compare answers for different ids. */
const shape = (message: string, jobId: string) => message.replaceAll(jobId, "<id>");

describe("authentication and tenant isolation", () => {
  let t: TestApp;
  let acmeJob: string;

  beforeAll(async () => {
    // api mode: no worker, so jobs stay QUEUED (cancellable) for the whole file.
    t = await startTestApp({ API_KEYS: apiKeys }, { mode: "api" });
    const acme = reportClient("connect-binary", t.url, { apiKey: acmeKey });
    acmeJob = (await acme.submitReport({ userId: "alice", reportType: ReportType.WEEKLY })).jobId;
  });
  afterAll(async () => {
    await t?.close();
  });

  describe.each(protocols)("over %s", (protocol: Protocol) => {
    for (const [name, call] of Object.entries(rpcs)) {
      it(`${name} without a key and with a wrong key: the same UNAUTHENTICATED`, async () => {
        const none = await connectErrorOf(call(reportClient(protocol, t.url), acmeJob));
        const wrong = await connectErrorOf(
          call(reportClient(protocol, t.url, { apiKey: wrongKey }), acmeJob),
        );
        expect(none.code).toBe(Code.Unauthenticated);
        expect(wrong.code).toBe(Code.Unauthenticated);
        expect(none.rawMessage).toBe(unauthenticatedMessage);
        expect(wrong.rawMessage).toBe(none.rawMessage);
      });
    }

    for (const name of ["GetJob", "WatchJob", "CancelJob", "RetryJob"]) {
      it(`${name} on another tenant's job is NOT_FOUND, like a missing job`, async () => {
        const call = rpcs[name] as (c: ReportClient, jobId: string) => Promise<unknown>;
        const globex = reportClient(protocol, t.url, { apiKey: globexKey });
        const other = await connectErrorOf(call(globex, acmeJob));
        const missing = await connectErrorOf(call(globex, missingId));
        expect(other.code).toBe(Code.NotFound);
        expect(missing.code).toBe(Code.NotFound);
        expect(shape(other.rawMessage, acmeJob)).toBe(shape(missing.rawMessage, missingId));
        expect(other.details).toEqual(missing.details);
        // Untouched: still acme's, still queued.
        const acme = reportClient(protocol, t.url, { apiKey: acmeRotatedKey });
        expect((await getJob(acme, acmeJob)).state).toBe(JobState.QUEUED);
      });
    }

    it("ListJobs shows each tenant only its own jobs", async () => {
      const globex = reportClient(protocol, t.url, { apiKey: globexKey });
      const own = await globex.submitReport({ userId: "alice", reportType: ReportType.MONTHLY });
      const globexIds = (await globex.listJobs({ pageSize: 200 })).jobs.map((j) => j.id);
      expect(globexIds).toContain(own.jobId);
      expect(globexIds).not.toContain(acmeJob);
      const byUser = (await globex.listJobs({ userId: "alice" })).jobs.map((j) => j.id);
      expect(byUser).not.toContain(acmeJob);
      const acme = reportClient(protocol, t.url, { apiKey: acmeKey });
      const acmeIds = (await acme.listJobs({ pageSize: 200 })).jobs.map((j) => j.id);
      expect(acmeIds).toContain(acmeJob);
      expect(acmeIds).not.toContain(own.jobId);
    });
  });

  it("accepts every key of a tenant (rotation) and maps each to its tenant", async () => {
    for (const apiKey of [acmeKey, acmeRotatedKey]) {
      const c = reportClient("grpc", t.url, { apiKey });
      expect((await getJob(c, acmeJob)).id).toBe(acmeJob);
    }
  });

  it("gives two tenants using the same idempotency key two jobs", async () => {
    const idempotencyKey = `shared-${Date.now()}`;
    const request = { idempotencyKey, userId: "bob", reportType: ReportType.WEEKLY };
    const acme = reportClient("connect-json", t.url, { apiKey: acmeKey });
    const globex = reportClient("grpc", t.url, { apiKey: globexKey });
    const a = await acme.submitReport(request);
    const g = await globex.submitReport(request);
    expect(a.deduplicated).toBe(false);
    expect(g.deduplicated).toBe(false);
    expect(g.jobId).not.toBe(a.jobId);
    // Each tenant still deduplicates its own repeat (under its other key, too).
    const again = await reportClient("grpc-web", t.url, { apiKey: acmeRotatedKey }).submitReport(
      request,
    );
    expect(again).toMatchObject({ jobId: a.jobId, deduplicated: true });
    expect((await globex.submitReport(request)).jobId).toBe(g.jobId);
  });

  it("draws job ids at random: the same tenant, key and request give a new id in a fresh namespace", async () => {
    const request = {
      idempotencyKey: "derivable?",
      userId: "carol",
      reportType: ReportType.WEEKLY,
    };
    const ids = new Set<string>();
    for (let i = 0; i < 2; i++) {
      const other = await startTestApp({ API_KEYS: apiKeys }, { mode: "api" });
      try {
        const c = reportClient("connect-binary", other.url, { apiKey: acmeKey });
        ids.add((await c.submitReport(request)).jobId);
      } finally {
        await other.close();
      }
    }
    expect(ids.size).toBe(2);
    // 128 bits, base64url.
    for (const id of ids) expect(id).toMatch(/^[A-Za-z0-9_-]{22}$/);
  });

  describe("plain HTTP routes", () => {
    const routes = (jobId: string): Array<[string, string, string?]> => [
      ["POST", "/v1/reports", JSON.stringify({ userId: "u", reportType: "weekly" })],
      ["GET", `/v1/jobs/${jobId}`],
      ["GET", `/v1/artifacts/${jobId}/1-0123456789ab/weekly-u.csv`],
      // The shape of files stored before attempt folders.
      ["GET", `/v1/artifacts/${jobId}/weekly-u.csv`],
    ];
    const send = (method: string, path: string, body?: string, key?: string) =>
      fetch(`${t.url}${path}`, {
        method,
        body,
        headers: {
          "content-type": "application/json",
          ...(key === undefined ? {} : { authorization: `Bearer ${key}` }),
        },
      });

    it("answers 401 with WWW-Authenticate: Bearer, the same for no key and a wrong key", async () => {
      for (const [method, path, body] of routes(acmeJob)) {
        const none = await send(method, path, body);
        const wrong = await send(method, path, body, wrongKey);
        for (const res of [none, wrong]) {
          expect(res.status, `${method} ${path}`).toBe(401);
          expect(res.headers.get("www-authenticate")).toMatch(/^Bearer\b/);
        }
        const [a, b] = [await none.json(), await wrong.json()];
        expect(a).toEqual({ code: "unauthenticated", message: unauthenticatedMessage });
        expect(b).toEqual(a);
      }
    });

    it("answers 404 for another tenant's job, like a missing one", async () => {
      for (const [method, path] of routes(acmeJob).slice(1)) {
        const other = await send(method, path, undefined, globexKey);
        const missing = await send(method, path.replace(acmeJob, missingId), undefined, globexKey);
        expect(other.status, path).toBe(404);
        expect(missing.status).toBe(404);
        const [o, m] = [await other.json(), await missing.json()];
        expect(JSON.stringify(o).replaceAll(acmeJob, "<id>")).toBe(
          JSON.stringify(m).replaceAll(missingId, "<id>"),
        );
      }
      const own = await send("GET", `/v1/jobs/${acmeJob}`, undefined, acmeKey);
      expect(own.status).toBe(200);
      expect(((await own.json()) as { id: string }).id).toBe(acmeJob);
    });

    it("submits into the key's tenant", async () => {
      const res = await send("POST", "/v1/reports", routes("")[0]?.[2], globexKey);
      expect(res.status).toBe(202);
      const { jobId } = (await res.json()) as { jobId: string };
      const globex = reportClient("connect-binary", t.url, { apiKey: globexKey });
      expect((await getJob(globex, jobId)).id).toBe(jobId);
      const acme = reportClient("connect-binary", t.url, { apiKey: acmeKey });
      expect((await connectErrorOf(acme.getJob({ jobId }))).code).toBe(Code.NotFound);
    });

    it("names no path under /v1/ to a caller without a key: 401 first, then 404", async () => {
      for (const [method, path] of [
        ["GET", "/v1/nothing-here"],
        ["POST", "/v1/jobs/abc"],
        ["DELETE", `/v1/jobs/${acmeJob}`],
      ] as const) {
        expect((await send(method, path)).status, `${method} ${path}`).toBe(401);
        const known = await send(method, path, undefined, acmeKey);
        expect(known.status).toBe(404);
        expect(await known.json()).toEqual({
          code: "not_found",
          message: `no route for ${method} ${path}`,
        });
      }
      // Outside /v1/ no key is asked for.
      expect(await (await send("GET", "/nope")).json()).toEqual({
        code: "not_found",
        message: "no route for GET /nope",
      });
    });

    it("keeps /healthz and /readyz public", async () => {
      expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
      expect((await fetch(`${t.url}/readyz`)).status).toBe(200);
    });
  });
});
