/**
 * result.download_url is a signed link: it downloads without an
 * Authorization header, and stops working when any part of it is altered,
 * when it is expired, or when moved to another job or file. Replicas sharing
 * DOWNLOAD_URL_SECRET accept each other's links; others do not.
 */
import { readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { createDownloadSigner } from "../../src/api/download-signer.js";
import { deploymentArtifactDir } from "../../src/domain/artifact-paths.js";
import { moveToJobFolder, reportFilesOf, segmentReportToFile } from "../helpers/artifact-files.js";
import { reportClient } from "../helpers/clients.js";
import { scripted } from "../helpers/generators.js";
import { waitForState } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const acmeKey = "acme-key-0123456789abcdef";
const globexKey = "globex-key-0123456789abcdef";
const secret = "download-secret-0123456789abcdef-0123456789";
const env = {
  API_KEYS: `acme:${acmeKey},globex:${globexKey}`,
  DOWNLOAD_URL_SECRET: secret,
  REPORT_PHASE_DELAY_MS: "1",
};

describe("signed download URLs", () => {
  let t: TestApp;
  let link: URL;
  let otherLink: URL;

  const succeeded = async (userId: string) => {
    const acme = reportClient("connect-binary", t.url, { apiKey: acmeKey });
    const { jobId } = await acme.submitReport({ userId, reportType: ReportType.WEEKLY });
    const job = await waitForState(acme, jobId, JobState.SUCCEEDED);
    return new URL(job.result?.downloadUrl ?? "");
  };
  /** Stores job `jobId`'s report (in a segment) as versions before segments did: `<job>@<tag>`. */
  const asFile = (jobId: string, tag: string) =>
    segmentReportToFile(
      t.config.redis.url,
      t.app.keys.job(jobId),
      deploymentArtifactDir(t.config.worker.artifactDir, t.config.redis.prefix),
      jobId,
      tag,
    );
  const status = async (url: URL | string, headers: Record<string, string> = {}) => {
    const res = await fetch(url, { headers });
    const body = await res.text();
    return { status: res.status, body };
  };

  beforeAll(async () => {
    t = await startTestApp(env);
    link = await succeeded("alice");
    otherLink = await succeeded("bob");
  });
  afterAll(async () => {
    await t?.close();
  });

  it("hands out links with an expiry and a signature that download without Authorization", async () => {
    // The job, the attempt that published the file, the file.
    expect(link.pathname).toMatch(
      /^\/v1\/artifacts\/[A-Za-z0-9_-]{22}\/1-[0-9a-f]{12}\/weekly-alice\.csv$/,
    );
    const expires = Number(link.searchParams.get("expires"));
    expect(expires * 1000).toBeGreaterThan(Date.now() + 3500_000);
    expect(expires * 1000).toBeLessThan(Date.now() + 3700_000);
    expect(link.searchParams.get("signature")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const res = await fetch(link);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/csv/);
    expect((await res.text()).split("\r\n")[0]).toBe("date,sessions,orders,revenue");
  });

  it("serves a report as one file in the deployment's folder, named by job and attempt", async () => {
    const link = await succeeded("dave");
    // /v1/artifacts/<job>/<attempt>/<file> is <deployment folder>/<job>@<attempt>
    // for a report stored before segments.
    const [jobId, tag] = link.pathname.split("/").slice(3) as [string, string, string];
    const dir = deploymentArtifactDir(t.config.worker.artifactDir, t.config.redis.prefix);
    const body = (await asFile(jobId, tag)).toString("utf8");
    expect(await reportFilesOf(dir, jobId)).toEqual([`${jobId}@${tag}`]);
    expect(readFileSync(path.join(dir, `${jobId}@${tag}`), "utf8")).toBe(body);
    expect(await status(link)).toEqual({ status: 200, body });
  });

  it("still serves a report stored in the job's folder, as the layout before wrote it", async () => {
    const old = await succeeded("erin");
    // /v1/artifacts/<job>/<attempt>/<file>: before, <job>/<attempt> on disk.
    const [jobId, tag] = old.pathname.split("/").slice(3) as [string, string, string];
    const dir = deploymentArtifactDir(t.config.worker.artifactDir, t.config.redis.prefix);
    const body = (await asFile(jobId, tag)).toString("utf8");
    moveToJobFolder(dir, jobId, tag);
    expect(await reportFilesOf(dir, jobId)).toEqual([path.join(jobId, tag)]);
    expect(await status(old)).toEqual({ status: 200, body });
  });

  it("still serves a report stored in its attempt's folder, as reports were before", async () => {
    const old = await succeeded("carol");
    // /v1/artifacts/<job>/<attempt>/<file>: once <job>/<attempt>/<file> on disk.
    const [jobId, tag, fileName] = old.pathname.split("/").slice(3) as [string, string, string];
    const dir = deploymentArtifactDir(t.config.worker.artifactDir, t.config.redis.prefix);
    const jobFolder = path.join(dir, jobId);
    const body = (await asFile(jobId, tag)).toString("utf8");
    moveToJobFolder(dir, jobId, tag, fileName);
    expect(await status(old)).toEqual({ status: 200, body });
    // A folder where the file should be is no file: not found, not a crash.
    rmSync(path.join(jobFolder, tag, fileName));
    expect((await status(old)).status).toBe(404);
  });

  it("refuses altered links with one 403 that reveals nothing", async () => {
    const refused = {
      code: "permission_denied",
      message: expect.stringMatching(/invalid or has expired/),
    };
    const sig = link.searchParams.get("signature") ?? "";
    const variants: URL[] = [];
    const withParam = (name: string, value: string, base = link) => {
      const u = new URL(base);
      u.searchParams.set(name, value);
      return u;
    };
    // Every character of the signature, flipped.
    for (const i of [0, 10, 42]) {
      const c = sig[i] === "A" ? "B" : "A";
      variants.push(withParam("signature", sig.slice(0, i) + c + sig.slice(i + 1)));
    }
    variants.push(withParam("signature", `${sig}x`), withParam("signature", sig.slice(0, -1)));
    variants.push(withParam("signature", ""));
    // A later expiry with the same signature.
    variants.push(withParam("expires", String(Number(link.searchParams.get("expires")) + 60)));
    variants.push(withParam("expires", "99999999999"));
    // The signature moved to another job, and to another file of the same job.
    const moved = new URL(otherLink);
    moved.search = link.search;
    variants.push(moved);
    const renamed = new URL(link);
    renamed.pathname = link.pathname.replace("weekly-alice.csv", "weekly-bob.csv");
    variants.push(renamed);
    // Another attempt's folder of the same job.
    const otherAttempt = new URL(link);
    otherAttempt.pathname = link.pathname.replace(/\/1-[0-9a-f]{12}\//, "/1-000000000000/");
    variants.push(otherAttempt);
    // Another job id altogether (no such job).
    const missing = new URL(link);
    missing.pathname = "/v1/artifacts/AAAAAAAAAAAAAAAAAAAAAA/weekly-alice.csv";
    variants.push(missing);
    for (const url of variants) {
      const res = await status(url);
      expect(res.status, url.search).toBe(403);
      expect(JSON.parse(res.body)).toEqual(refused);
    }
    // Without any signature the route wants a key: 401, then the owner's key works and another tenant's is 404.
    const bare = new URL(link.pathname, link);
    expect((await status(bare)).status).toBe(401);
    expect((await status(bare, { authorization: `Bearer ${acmeKey}` })).status).toBe(200);
    expect((await status(bare, { authorization: `Bearer ${globexKey}` })).status).toBe(404);
  });

  it("refuses an expired link", async () => {
    const tenSecondsAgo = Date.now() - 10_000;
    // The server's own secret and TTL, signing as of 61 minutes ago: expired by now.
    const signer = createDownloadSigner({ secret, ttlMs: 3600_000 });
    const expired = new URL(
      signer.sign("acme", link.pathname, tenSecondsAgo - 3600_000 - 60_000),
      link,
    );
    expect(Number(expired.searchParams.get("expires")) * 1000).toBeLessThan(Date.now());
    expect((await status(expired)).status).toBe(403);
    // The same signer, signing now: accepted (so only the expiry made the difference).
    const fresh = new URL(signer.sign("acme", link.pathname), link);
    expect((await status(fresh)).status).toBe(200);
    // Signed for another tenant: refused.
    expect((await status(new URL(signer.sign("globex", link.pathname), link))).status).toBe(403);
  });

  it("works on a replica with the same DOWNLOAD_URL_SECRET, not on one without it", async () => {
    const shared = {
      REDIS_PREFIX: t.config.redis.prefix,
      ARTIFACT_DIR: t.config.worker.artifactDir,
    };
    const same = await startTestApp({ ...env, ...shared }, { mode: "api" });
    const other = await startTestApp(
      { ...env, ...shared, DOWNLOAD_URL_SECRET: "another-secret-0123456789abcdef-0123456" },
      { mode: "api" },
    );
    try {
      const path = `${link.pathname}${link.search}`;
      expect((await status(`${same.url}${path}`)).status).toBe(200);
      expect((await status(`${other.url}${path}`)).status).toBe(403);
    } finally {
      await same.close();
      await other.close();
    }
  });
});

describe("downloads that the client leaves", () => {
  let t: TestApp;
  beforeAll(async () => {
    // Larger than the socket and stream buffers: still being read when the client goes.
    const big = scripted(async () => ({
      fileName: "big.csv",
      contentType: "text/csv",
      content: "x".repeat(4 * 1024 * 1024),
    }));
    t = await startTestApp(env, { generators: { weekly: big } });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("close the report file at once", async () => {
    const acme = reportClient("connect-binary", t.url, { apiKey: acmeKey });
    const { jobId } = await acme.submitReport({ userId: "big", reportType: ReportType.WEEKLY });
    const job = await waitForState(acme, jobId, JobState.SUCCEEDED);
    const link = new URL(job.result?.downloadUrl ?? "");
    // /v1/artifacts/<job>/<attempt>/big.csv is <deployment folder>/<job>@<attempt>.
    const file = path.join(
      deploymentArtifactDir(t.config.worker.artifactDir, t.config.redis.prefix),
      link.pathname.split("/").slice(3, -1).join("@"),
    );
    expect(path.basename(link.pathname)).toBe("big.csv");
    const openFds = () =>
      readdirSync("/proc/self/fd").filter((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`) === file;
        } catch {
          return false;
        }
      }).length;
    for (let i = 0; i < 5; i++) {
      await new Promise<void>((resolve, reject) => {
        const socket = net.connect(Number(link.port), link.hostname, () =>
          socket.write(`GET ${link.pathname}${link.search} HTTP/1.1\r\nhost: x\r\n\r\n`),
        );
        socket.on("error", reject);
        // The first bytes of the answer: the file is open and being sent. Then leave.
        socket.once("data", () => {
          socket.destroy();
          resolve();
        });
      });
    }
    await waitFor(() => openFds() === 0, { timeoutMs: 5000, what: "the report file closed" });
  });
});

describe("createDownloadSigner()", () => {
  const signer = createDownloadSigner({ secret, ttlMs: 3600_000 });
  const path = "/v1/artifacts/abc/r.csv";
  const parts = (signed: string) => {
    const u = new URL(signed, "http://x");
    return [u.searchParams.get("expires"), u.searchParams.get("signature")] as const;
  };

  it("accepts until the expiry and not after", () => {
    const now = 1_700_000_000_000;
    const [expires, signature] = parts(signer.sign("t", path, now));
    const at = Number(expires) * 1000;
    expect(at).toBeGreaterThanOrEqual(now + 3600_000);
    expect(at).toBeLessThan(now + 3600_000 + 60_000);
    expect(signer.verify("t", path, expires, signature, at - 1)).toBe(true);
    expect(signer.verify("t", path, expires, signature, at)).toBe(false);
    expect(signer.verify("u", path, expires, signature, now)).toBe(false);
    expect(signer.verify(undefined, path, expires, signature, now)).toBe(false);
    expect(signer.verify("t", `${path}x`, expires, signature, now)).toBe(false);
    expect(signer.verify("t", path, null, signature, now)).toBe(false);
    expect(signer.verify("t", path, `${expires}0`, signature, now)).toBe(false);
    expect(signer.verify("t", path, "1e12", signature, now)).toBe(false);
  });

  it("draws a random secret when none is given: links do not carry over", () => {
    const a = createDownloadSigner({ ttlMs: 1000 });
    const b = createDownloadSigner({ ttlMs: 1000 });
    const [expires, signature] = parts(a.sign("t", path));
    expect(a.verify("t", path, expires, signature)).toBe(true);
    expect(b.verify("t", path, expires, signature)).toBe(false);
  });
});
