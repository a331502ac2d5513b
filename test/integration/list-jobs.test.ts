import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Job, JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { reportClient } from "../helpers/clients.js";
import { codeOf, errorOf, type ReportClient } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

/**
 * Submits `n` weekly jobs for `userId`, one after another, each created in a
 * later millisecond than the one before, so "newest first" is one exact order.
 * Returns their ids oldest first.
 */
async function submitMany(client: ReportClient, userId: string, n: number): Promise<string[]> {
  const ids: string[] = [];
  let last = 0;
  for (let i = 0; i < n; i++) {
    await waitFor(() => Date.now() > last, { what: "the clock to move on" });
    const { job } = await client.submitReport({ userId, reportType: ReportType.WEEKLY });
    if (job?.createdAt === undefined) throw new Error("no job in the submit response");
    last = timestampMs(job.createdAt);
    ids.push(job.id);
  }
  return ids;
}

/** Every page of a query, following next_page_token; `between` runs after each page. */
async function allPages(
  client: ReportClient,
  query: { userId?: string; states?: JobState[]; pageSize?: number },
  between: () => Promise<void> = async () => {},
): Promise<Job[][]> {
  const pages: Job[][] = [];
  let pageToken = "";
  for (;;) {
    const res = await client.listJobs({ ...query, pageToken });
    pages.push(res.jobs);
    if (res.nextPageToken === "") return pages;
    if (pages.length > 100) throw new Error("pagination does not end");
    pageToken = res.nextPageToken;
    await between();
  }
}

describe("ListJobs", () => {
  // API only: jobs stay QUEUED (or CANCELLED), so every state is under the test's control.
  let t: TestApp;
  let other: TestApp;
  let client: ReportClient;
  beforeAll(async () => {
    t = await startTestApp({}, { mode: "api" });
    other = await startTestApp({}, { mode: "api" });
    client = reportClient("connect-json", t.url);
  });
  afterAll(async () => {
    await t?.close();
    await other?.close();
  });

  it("lists newest first, 50 per page by default and at most 200", async () => {
    const ids = await submitMany(client, "bulk", 55);
    const first = await client.listJobs({ userId: "bulk" });
    expect(first.jobs).toHaveLength(50);
    expect(first.jobs.map((j) => j.id)).toEqual(ids.slice(-50).reverse());
    expect(first.nextPageToken).not.toBe("");
    const rest = await client.listJobs({ userId: "bulk", pageToken: first.nextPageToken });
    expect(rest.jobs.map((j) => j.id)).toEqual(ids.slice(0, 5).reverse());
    expect(rest.nextPageToken).toBe("");

    const max = await client.listJobs({ userId: "bulk", pageSize: 200 });
    expect(max.jobs.map((j) => j.id)).toEqual([...ids].reverse());
    expect(max.nextPageToken).toBe("");
    // Each entry is the full job, as GetJob has it.
    const { job } = await client.getJob({ jobId: ids[0] ?? "" });
    expect(max.jobs.at(-1)).toEqual(job);

    for (const pageSize of [201, -1]) {
      const err = await errorOf(client.listJobs({ pageSize }));
      expect(err?.code, `page_size ${pageSize}`).toBe(Code.InvalidArgument);
      expect(err?.rawMessage).toMatch(/page_size/);
    }
  });

  it("pages through 10 jobs 3 at a time, each exactly once and in order, while new jobs arrive", async () => {
    const ids = await submitMany(client, "pager", 10);
    const added: string[] = [];
    const pages = await allPages(client, { userId: "pager", pageSize: 3 }, async () => {
      added.push(...(await submitMany(client, "pager", 1)));
    });
    expect(pages.map((p) => p.length)).toEqual([3, 3, 3, 1]);
    expect(pages.flat().map((j) => j.id)).toEqual([...ids].reverse());
    expect(added).toHaveLength(3);
    // The newcomers sit before the first page's cursor: a fresh listing starts with them.
    const fresh = await client.listJobs({ userId: "pager", pageSize: 3 });
    expect(fresh.jobs.map((j) => j.id)).toEqual([...added].reverse());
  });

  it("filters by user, by state, and by both", async () => {
    const alice = await submitMany(client, "alice", 4);
    const bob = await submitMany(client, "bob", 3);
    const cancelled = [alice[1], alice[3], bob[0]] as string[];
    for (const jobId of cancelled) {
      const { job } = await client.cancelJob({ jobId });
      expect(job?.state).toBe(JobState.CANCELLED);
    }
    const ids = async (query: { userId?: string; states?: JobState[] }) =>
      (await allPages(client, { ...query, pageSize: 2 })).flat().map((j) => j.id);

    expect(await ids({ userId: "alice" })).toEqual([...alice].reverse());
    expect(await ids({ userId: "bob" })).toEqual([...bob].reverse());
    expect(await ids({ userId: "nobody" })).toEqual([]);
    expect(await ids({ userId: "alice", states: [JobState.CANCELLED] })).toEqual([
      alice[3],
      alice[1],
    ]);
    expect(await ids({ userId: "bob", states: [JobState.QUEUED] })).toEqual([bob[2], bob[1]]);
    expect(await ids({ userId: "alice", states: [JobState.QUEUED, JobState.CANCELLED] })).toEqual(
      [...alice].reverse(),
    );
    expect(await ids({ userId: "alice", states: [JobState.SUCCEEDED] })).toEqual([]);

    // By state alone: every user of the tenant.
    const allCancelled = await allPages(client, { states: [JobState.CANCELLED], pageSize: 200 });
    const cancelledIds = allCancelled.flat().map((j) => j.id);
    expect(cancelledIds).toEqual([bob[0], alice[3], alice[1]]);
    for (const job of allCancelled.flat()) expect(job.state).toBe(JobState.CANCELLED);
    const queuedIds = (await allPages(client, { states: [JobState.QUEUED], pageSize: 200 }))
      .flat()
      .map((j) => j.id);
    expect(queuedIds).toEqual(expect.arrayContaining([alice[0], alice[2], bob[1], bob[2]]));
    for (const id of cancelled) expect(queuedIds).not.toContain(id);
  });

  it("rejects a page_token used with other filters, or made up, as INVALID_ARGUMENT", async () => {
    await submitMany(client, "tokens", 3);
    const { nextPageToken } = await client.listJobs({ userId: "tokens", pageSize: 1 });
    expect(nextPageToken).not.toBe("");
    // The same token with the same filters works.
    const next = await client.listJobs({ userId: "tokens", pageSize: 1, pageToken: nextPageToken });
    expect(next.jobs).toHaveLength(1);

    const misuses = [
      { userId: "someone-else", pageToken: nextPageToken },
      { userId: "tokens", states: [JobState.QUEUED], pageToken: nextPageToken },
      { pageToken: nextPageToken },
      { userId: "tokens", pageToken: "not-a-token" },
      { userId: "tokens", pageToken: Buffer.from('{"s":"1","i":"x"}').toString("base64url") },
    ];
    for (const query of misuses) {
      const err = await errorOf(client.listJobs(query));
      expect(err?.code, JSON.stringify(query)).toBe(Code.InvalidArgument);
      expect(err?.rawMessage).toMatch(/page_token/);
    }
  });

  it("never lists jobs of another deployment's prefix", async () => {
    // Tenants are a constant until auth lands; what can be checked now is
    // that a second app under its own REDIS_PREFIX shares nothing.
    const otherClient = reportClient("grpc", other.url);
    const mine = await submitMany(client, "shared-name", 2);
    const theirs = await submitMany(otherClient, "shared-name", 2);
    const listed = (await allPages(client, { pageSize: 200 })).flat().map((j) => j.id);
    const listedThere = (await allPages(otherClient, { pageSize: 200 })).flat().map((j) => j.id);
    for (const id of theirs) expect(listed).not.toContain(id);
    expect(listedThere).toEqual([...theirs].reverse());
    const byUser = await client.listJobs({ userId: "shared-name" });
    expect(byUser.jobs.map((j) => j.id)).toEqual([...mine].reverse());
    expect(await codeOf(client.getJob({ jobId: theirs[0] ?? "" }))).toBe(Code.NotFound);
  });
});

describe("ListJobs after retention", () => {
  let t: TestApp;
  beforeAll(async () => {
    // A cancelled job is kept for RETENTION_FAILED_SECONDS.
    t = await startTestApp({ RETENTION_FAILED_SECONDS: "1" }, { mode: "api" });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("drops a job from the listing once it has expired", async () => {
    const client = reportClient("grpc", t.url);
    const keep = await submitMany(client, "exp", 1);
    const [gone] = await submitMany(client, "exp", 1);
    if (gone === undefined) throw new Error("no job");
    await client.cancelJob({ jobId: gone });
    const before = await client.listJobs({ userId: "exp" });
    expect(before.jobs.map((j) => j.id)).toEqual([gone, ...keep]);

    await waitFor(async () => (await codeOf(client.getJob({ jobId: gone }))) === Code.NotFound, {
      timeoutMs: 10_000,
      what: "the cancelled job to expire",
    });
    for (const query of [{ userId: "exp" }, {}, { states: [JobState.CANCELLED] }]) {
      const ids = (await allPages(client, query)).flat().map((j) => j.id);
      expect(ids, JSON.stringify(query)).not.toContain(gone);
    }
    expect((await client.listJobs({ userId: "exp" })).jobs.map((j) => j.id)).toEqual(keep);
  });
});
