/**
 * Report segments on a real file system: small reports are appended to one
 * segment file per process (no file per report), each at the place the
 * store answers, never interleaved however many are in flight; segments
 * roll by size and by age; a torn tail left by a killed writer breaks
 * neither reads of what was published nor the next writer; and a segment
 * goes only once no record can name it, never while a writer may append.
 * Over HTTP (real Redis, the real app): downloads serve the range the
 * record names, a refused SUCCEEDED leaves the published report intact, and
 * the janitor sweeps expired segments only.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  appendFileSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import {
  deploymentArtifactDir,
  newSegmentName,
  segmentFolder,
} from "../../src/domain/artifact-paths.js";
import type { ReportArtifact, SegmentLocation } from "../../src/domain/job.js";
import { decodeRecord } from "../../src/queue/job-record.js";
import { createArtifactStore, syncWriteMaxBytes } from "../../src/worker/artifact-store.js";
import {
  createSegmentWriter,
  defaultSegmentLimits,
  removeExpiredSegments,
} from "../../src/worker/report-segments.js";
import { asAnotherWorker } from "../helpers/another-worker.js";
import { capturedLogger } from "../helpers/captured-logger.js";
import { reportClient } from "../helpers/clients.js";
import { deferred, scripted } from "../helpers/generators.js";
import { getJob, waitForState } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

/** The bytes a segment holds at `where`, `size` long. */
function bytesAt(dir: string, where: SegmentLocation, size: number): Buffer {
  const held = readFileSync(path.join(segmentFolder(dir), where.name));
  return held.subarray(where.offset, where.offset + size);
}

describe("report segments", () => {
  let dir: string;
  beforeEach(() => {
    dir = path.join(mkdtempSync(path.join(tmpdir(), "report-segments-")), "@deploy");
  });
  afterEach(() => rmSync(path.dirname(dir), { recursive: true, force: true }));

  it("appends small reports to one segment, no file per report, each where the record will say", async () => {
    const store = createArtifactStore(dir);
    const content = "date,sessions\r\n2026-01-01,5\r\n";
    const artifact = await store.put("job1", "1-abc", "weekly.csv", "text/csv", content);
    expect(artifact).toEqual({
      downloadPath: "/v1/artifacts/job1/1-abc/weekly.csv",
      contentType: "text/csv",
      sizeBytes: Buffer.byteLength(content),
      segment: { name: expect.stringMatching(/^s-\d{13}-[0-9a-f]{16}$/), offset: 0 },
    });
    // The deployment's folder holds the segment folder only: no report file.
    expect(readdirSync(dir)).toEqual(["@segments"]);
    expect(readdirSync(segmentFolder(dir))).toEqual([artifact.segment?.name]);
    expect(bytesAt(dir, artifact.segment as SegmentLocation, artifact.sizeBytes).toString()).toBe(
      content,
    );
    // A report above the synchronous limit keeps a file of its own.
    const big = new Uint8Array(syncWriteMaxBytes + 1).fill(7);
    const large = await store.put("job2", "1-def", "big.bin", "application/octet-stream", big);
    expect(large.segment).toBeUndefined();
    expect(readdirSync(dir).sort()).toEqual(["@segments", "job2@1-def"]);
    await store.close();
  });

  it("never interleaves the bytes of concurrent puts", async () => {
    const store = createArtifactStore(dir);
    const contents = Array.from({ length: 400 }, (_, i) =>
      randomBytes(1 + ((i * 7919) % 9000)).toString("base64"),
    );
    const artifacts = await Promise.all(
      contents.map((c, i) => store.put(`job${i}`, "1-aaa", "r.csv", "text/csv", c)),
    );
    const places = artifacts.map((a) => a.segment as SegmentLocation);
    // One segment; the places tile it without overlap, each holding its own bytes.
    expect(new Set(places.map((p) => p.name)).size).toBe(1);
    const sorted = artifacts
      .map((a, i) => ({ offset: (a.segment as SegmentLocation).offset, size: a.sizeBytes, i }))
      .sort((a, b) => a.offset - b.offset);
    let end = 0;
    for (const s of sorted) {
      expect(s.offset).toBe(end);
      end += s.size;
    }
    const name = places[0]?.name ?? "";
    expect(statSync(path.join(segmentFolder(dir), name)).size).toBe(end);
    for (const [i, a] of artifacts.entries()) {
      expect(bytesAt(dir, a.segment as SegmentLocation, a.sizeBytes).toString()).toBe(contents[i]);
    }
    await store.close();
  });

  it("rolls a segment by size, and by age", async () => {
    let now = 1_700_000_000_000;
    const writer = createSegmentWriter(dir, { maxBytes: 1000, maxAgeMs: 60_000 }, () => now);
    const chunk = "x".repeat(300);
    const places: SegmentLocation[] = [];
    for (let i = 0; i < 7; i++) places.push(await writer.append(chunk));
    // 3 reports fit in 1000 bytes: segments of 3, 3 and 1.
    const names = [...new Set(places.map((p) => p.name))];
    expect(names).toHaveLength(3);
    expect(places.map((p) => p.offset)).toEqual([0, 300, 600, 0, 300, 600, 0]);
    // A report larger than the limit goes alone into a fresh segment.
    const huge = await writer.append("y".repeat(1500));
    expect(huge.offset).toBe(0);
    expect(huge.name).not.toBe(names[2]);
    // Once a segment is maxAgeMs old, the next report opens another.
    const young = await writer.append("z");
    expect(young.name).not.toBe(huge.name);
    now += 59_999;
    expect((await writer.append("z")).name).toBe(young.name);
    now += 1;
    const old = writer.openName();
    const next = await writer.append("z");
    expect(next.name).not.toBe(old);
    expect(next.offset).toBe(0);
    expect(writer.openName()).toBe(next.name);
    await writer.close();
    expect(writer.openName()).toBeUndefined();
    for (const name of readdirSync(segmentFolder(dir))) {
      expect(statSync(path.join(segmentFolder(dir), name)).size).toBeLessThanOrEqual(1500);
    }
  });

  it("survives a writer killed with SIGKILL and a torn tail: what was published reads back, the next writer writes elsewhere", async () => {
    // A child process appends reports forever, printing each place once durable.
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "--input-type=module",
        "-e",
        `
        const { createSegmentWriter } = await import(${JSON.stringify(path.resolve("src/worker/report-segments.ts"))});
        const writer = createSegmentWriter(${JSON.stringify(dir)});
        for (let i = 0; ; i++) {
          const content = "report " + i + " " + "r".repeat(i % 500) + "\\n";
          const where = await writer.append(content);
          process.stdout.write(JSON.stringify({ where, content }) + "\\n");
        }
        `,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const published: Array<{ where: SegmentLocation; content: string }> = [];
    let buffered = "";
    await new Promise<void>((resolve, reject) => {
      child.on("error", reject);
      child.stdout.on("data", (data: Buffer) => {
        buffered += data.toString();
        const lines = buffered.split("\n");
        buffered = lines.pop() ?? "";
        for (const line of lines) published.push(JSON.parse(line));
        if (published.length >= 200) resolve();
      });
    });
    const exited = new Promise((resolve) => child.on("exit", resolve));
    child.kill("SIGKILL");
    await exited;
    const name = published[0]?.where.name ?? "";
    const segment = path.join(segmentFolder(dir), name);
    // As a crash mid-append leaves it: a half-written report at the tail.
    appendFileSync(segment, "report 99999 half-writ");
    for (const p of published) {
      expect(bytesAt(dir, p.where, Buffer.byteLength(p.content)).toString()).toBe(p.content);
    }
    // The next writer opens a segment of its own, and its reports read back.
    const store = createArtifactStore(dir);
    const next = (await store.put(
      "jobN",
      "1-nnn",
      "r.csv",
      "text/csv",
      "next\n",
    )) as ReportArtifact;
    expect(next.segment?.name).not.toBe(name);
    expect(next.segment?.offset).toBe(0);
    expect(bytesAt(dir, next.segment as SegmentLocation, 5).toString()).toBe("next\n");
    await store.close();
  });

  it("removes a segment only once no record can name its reports, and never a writer's open one", async () => {
    const keepMs = 3_600_000;
    const { maxAgeMs } = defaultSegmentLimits;
    const store = createArtifactStore(dir);
    const open = (await store.put("job1", "1-a", "r.csv", "text/csv", "open\n")).segment;
    const now = Date.now();
    /** A sealed segment created `ageMs` ago, last written `writtenMs` ago. */
    const sealed = (ageMs: number, writtenMs: number) => {
      const name = newSegmentName(now - ageMs, randomBytes(8).toString("hex"));
      const file = path.join(segmentFolder(dir), name);
      writeFileSync(file, "old report\n");
      const at = (now - writtenMs) / 1000;
      utimesSync(file, at, at);
      return name;
    };
    // Past the retention since its last possible append: goes.
    const expired = sealed(maxAgeMs + keepMs + 1000, keepMs + 1000);
    // Its appends may have been late (modified within the retention): stays.
    const lateWrite = sealed(maxAgeMs + keepMs + 1000, keepMs - 60_000);
    // Young enough to take appends (or to be named by a record for the whole retention): stays.
    const young = sealed(keepMs, keepMs + 1000);
    // Files that are no segment (an earlier janitor's or an operator's): never touched.
    writeFileSync(path.join(segmentFolder(dir), "notes.txt"), "x");
    expect(await store.removeExpiredSegments(keepMs)).toBe(1);
    const left = readdirSync(segmentFolder(dir)).sort();
    expect(left).toEqual([lateWrite, young, open?.name, "notes.txt"].sort());
    expect(left).not.toContain(expired);
    // The writer's open segment stays whatever its age says (a writer far in the future).
    expect(
      await removeExpiredSegments(
        dir,
        0,
        new Set([open?.name ?? ""]),
        defaultSegmentLimits,
        now + 10 * keepMs,
      ),
    ).toBe(2);
    expect(readdirSync(segmentFolder(dir)).sort()).toEqual([open?.name, "notes.txt"].sort());
    await store.close();
  });
});

describe("reports in segments, over HTTP", () => {
  const acmeKey = "acme-key-0123456789abcdef";
  const env = {
    API_KEYS: `acme:${acmeKey}`,
    DOWNLOAD_URL_SECRET: "download-secret-0123456789abcdef-0123456789",
    REPORT_PHASE_DELAY_MS: "1",
    RETENTION_SWEEP_MS: "3600000",
  };
  let t: TestApp | undefined;
  let redis: Redis | undefined;
  afterEach(async () => {
    redis?.disconnect();
    redis = undefined;
    await t?.close();
    t = undefined;
  });

  /** Submits a weekly report of `userId` and waits until it succeeded: its job and download link. */
  const succeeded = async (app: TestApp, userId: string) => {
    const acme = reportClient("connect-binary", app.url, { apiKey: acmeKey });
    const { jobId } = await acme.submitReport({ userId, reportType: ReportType.WEEKLY });
    const job = await waitForState(acme, jobId, JobState.SUCCEEDED);
    return { jobId, link: new URL(job.result?.downloadUrl ?? "") };
  };

  it("serves the range the record names: GET, HEAD and keyed downloads, while no report file exists", async () => {
    const contentOf = (userId: string) =>
      `report of ${userId}\n${"r".repeat(userId.length * 97)}\n`;
    const weekly = scripted(async (input) => ({
      fileName: `weekly-${input.userId}.csv`,
      contentType: "text/csv",
      content: contentOf(input.userId),
    }));
    t = await startTestApp(env, { generators: { weekly } });
    const app = t;
    const dir = deploymentArtifactDir(app.config.worker.artifactDir, app.config.redis.prefix);
    const users = Array.from({ length: 30 }, (_, i) => `user${i}${"x".repeat(i)}`);
    const done = await Promise.all(users.map((u) => succeeded(app, u)));
    redis = new Redis(app.config.redis.url);
    for (const [i, { jobId, link }] of done.entries()) {
      const body = contentOf(users[i] ?? "");
      const record = decodeRecord(await redis.hgetall(app.app.keys.job(jobId)));
      expect(record?.result?.segment?.name).toMatch(/^s-/);
      const res = await fetch(link);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toMatch(/^text\/csv/);
      expect(res.headers.get("content-length")).toBe(String(Buffer.byteLength(body)));
      expect(await res.text()).toBe(body);
      const head = await fetch(link, { method: "HEAD" });
      expect(head.status).toBe(200);
      expect(head.headers.get("content-length")).toBe(String(Buffer.byteLength(body)));
      expect(await head.text()).toBe("");
      const keyed = await fetch(new URL(link.pathname, link), {
        headers: { authorization: `Bearer ${acmeKey}` },
      });
      expect(await keyed.text()).toBe(body);
    }
    // Nothing but the segment folder in the deployment's folder: no file per report.
    expect(readdirSync(dir).filter((n) => !n.startsWith("."))).toEqual(["@segments"]);
    expect(readdirSync(segmentFolder(dir))).toHaveLength(1);
    // A segment that lost the bytes (cut short by hand): 404, not a short or broken answer.
    const [segment] = readdirSync(segmentFolder(dir));
    truncateSync(path.join(segmentFolder(dir), segment ?? ""), 0);
    expect((await fetch(done[0]?.link ?? "")).status).toBe(404);
    expect((await fetch(done[0]?.link ?? "", { method: "HEAD" })).status).toBe(404);
  });

  it("keeps the published report when another attempt's SUCCEEDED is refused after it wrote its bytes", async () => {
    const entered = deferred();
    const gate = deferred();
    const weekly = scripted(async (_input, progress) => {
      await progress(30, "fetch-data");
      entered.resolve();
      await gate.promise;
      return { fileName: "weekly.csv", contentType: "text/csv", content: "from,a\n" };
    });
    const { logger, lines } = capturedLogger();
    t = await startTestApp(env, { generators: { weekly }, logger, lockDurationMs: 30_000 });
    const app = t;
    const acme = reportClient("connect-binary", app.url, { apiKey: acmeKey });
    const { jobId } = await acme.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    await entered.promise;
    // A's progress written first (a report right after STARTED is held up to PROGRESS_LINGER_MS).
    await waitFor(async () => (await getJob(acme, jobId)).progress === 30, {
      what: "A's progress write to be applied",
    });
    // Worker B (another process: a segment of its own) takes the job over and publishes.
    redis = new Redis(app.config.redis.url);
    const b = await asAnotherWorker(app, redis, jobId);
    await redis.set(b.keys.bullJobLock("weekly", jobId), "fetch-B", "PX", 60_000);
    const own = { attempt: 1, token: "attempt-B", lockToken: "fetch-B" };
    expect(
      (await b.transitions.apply(b.job, "started", { ...own, at: Date.now(), maxAttempts: 3 }))
        .applied,
    ).toBe(true);
    const dir = deploymentArtifactDir(app.config.worker.artifactDir, app.config.redis.prefix);
    const storeB = createArtifactStore(dir);
    const artifact = await storeB.put(jobId, "1-bbbbbbbbbbbb", "b.csv", "text/csv", "from,b\n");
    await storeB.close();
    const done = await b.transitions.apply(b.job, "succeeded", {
      ...own,
      at: Date.now(),
      startedAt: Date.now(),
      artifact,
    });
    expect(done.applied).toBe(true);
    // A writes its bytes to its own segment, then its SUCCEEDED is refused.
    gate.resolve();
    await waitFor(() => lines.some((l) => l.msg === "attempt lost its job; it changes nothing"), {
      what: "A's attempt to end as lost",
    });
    const job = await getJob(acme, jobId);
    const res = await fetch(job.result?.downloadUrl ?? "");
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("from,b\n");
    // A's bytes sit in its segment, named by no record; no file of A's anywhere.
    const segments = readdirSync(segmentFolder(dir));
    expect(segments).toHaveLength(2);
    const held = segments.map((n) => readFileSync(path.join(segmentFolder(dir), n), "utf8"));
    expect(held.sort()).toEqual(["from,a\n", "from,b\n"]);
    expect(readdirSync(dir).filter((n) => !n.startsWith("."))).toEqual(["@segments"]);
  });

  it("sweeps expired segments and keeps the ones records may name; a removed record's report answers 404 at once", async () => {
    t = await startTestApp(env);
    const app = t;
    const dir = deploymentArtifactDir(app.config.worker.artifactDir, app.config.redis.prefix);
    const kept = await succeeded(app, "alice");
    const gone = await succeeded(app, "bob");
    const [live] = readdirSync(segmentFolder(dir));
    // A segment sealed long ago (beyond every retention and the grace), as an earlier process left it.
    const longAgo = Date.now() - 400 * 24 * 3600_000;
    const expired = newSegmentName(longAgo, "0123456789abcdef");
    writeFileSync(path.join(segmentFolder(dir), expired), "old reports\n");
    utimesSync(path.join(segmentFolder(dir), expired), longAgo / 1000, longAgo / 1000);
    await app.app.janitor?.sweep();
    expect(readdirSync(segmentFolder(dir))).toEqual([live]);
    expect((await fetch(kept.link)).status).toBe(200);
    // A record that goes (expired, or beyond RETENTION_*_COUNT) takes its report with it at once.
    redis = new Redis(app.config.redis.url);
    await redis.del(app.app.keys.job(gone.jobId));
    // (A signed link to it answers 403, as every failing signed link does.)
    expect((await fetch(gone.link)).status).toBe(403);
    const keyed = await fetch(new URL(gone.link.pathname, gone.link), {
      headers: { authorization: `Bearer ${acmeKey}` },
    });
    expect(keyed.status).toBe(404);
    expect((await fetch(kept.link)).status).toBe(200);
  });
});
