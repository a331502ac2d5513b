/**
 * The browser app (web/, served by the API at `/`) in headless Chromium, with
 * the real Connect-Web bundle against the real service: submit, live progress
 * to 100, the download (the file itself), cancel and retry buttons, the API
 * key header, keyboard use; then the same app served from another origin
 * (CORS), resuming its watches when the server cuts them with UNAVAILABLE.
 * A screenshot of the finished job lands in test-artifacts/.
 */
import { mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Browser, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ReportType } from "../../gen/reports/v1/job_pb.js";
import { buildWeb } from "../../scripts/build-web.mjs";
import { launchChromium } from "../helpers/chromium.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput, type Deferred, deferred } from "../helpers/generators.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const artifactsDir = path.join(repoRoot, "test-artifacts");

/** examples/browser/serve.mjs */
interface ServeModule {
  startExampleServer(options: {
    port?: number;
    api?: string;
  }): Promise<{ url: string; close(): Promise<void> }>;
}

/** Debian's Chromium, with the flags this file has always used on top of the base ones. */
const launchBrowser = () =>
  launchChromium([
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
  ]);

/** The card of a job: `li.job[data-job-id=...]`. */
const card = (jobId: string) => `li.job[data-job-id="${jobId}"]`;

/**
 * Waits until `selector` is visible, failing early when the page shows an
 * error instead; the failure says what the page showed.
 */
async function untilVisible(page: Page, selector: string, timeoutMs = 15_000): Promise<void> {
  try {
    await page
      .locator(`${selector}, #error:not([hidden])`)
      .first()
      .waitFor({ state: "visible", timeout: timeoutMs });
    if (await page.locator(selector).first().isVisible()) return;
  } catch {
    // Reported below with what the page shows.
  }
  const error = await page.locator("#error").textContent();
  const jobs = await page.locator("#jobs").textContent();
  throw new Error(
    `${selector} not shown (waited up to ${timeoutMs} ms); page error: ${JSON.stringify(error)}; jobs: ${JSON.stringify(jobs)}`,
  );
}

/** Records every value the page's progress bars take (a MutationObserver in the page). */
async function recordProgress(page: Page): Promise<void> {
  await page.evaluate(() => {
    const seen: number[] = [];
    (window as unknown as { progressSeen: number[] }).progressSeen = seen;
    new MutationObserver((records) => {
      for (const r of records) {
        if (r.target instanceof HTMLProgressElement) seen.push(r.target.value);
      }
    }).observe(document.body, {
      subtree: true,
      attributes: true,
      attributeFilter: ["value"],
    });
    // Property writes (bar.value = n) reflect to the attribute, which the observer sees.
  });
}

/** The newest job card's id. */
async function newestJobId(page: Page): Promise<string> {
  await page.locator("li.job").first().waitFor();
  return (await page.locator("li.job").first().getAttribute("data-job-id")) ?? "";
}

/** A custom-report generator that holds each job until the test releases it. */
function heldGenerator(gates: Map<string, Deferred>) {
  return {
    async generate(
      input: { jobId: string },
      progress: (p: number, phase: string) => Promise<void>,
      signal: AbortSignal,
    ) {
      await progress(40, "fetch-data");
      let gate = gates.get(input.jobId);
      if (gate === undefined) {
        gate = deferred();
        gates.set(input.jobId, gate);
      }
      await new Promise<void>((resolve, reject) => {
        signal.addEventListener("abort", () => reject(signal.reason), { once: true });
        void gate.promise.then(resolve);
      });
      return csvOutput;
    },
  };
}

describe("browser app served by the API at /", () => {
  let t: TestApp;
  let browser: Browser;
  let page: Page;
  let pageErrors: string[];
  const gates = new Map<string, Deferred>();

  beforeAll(async () => {
    await buildWeb();
    t = await startTestApp(
      { REPORT_PHASE_DELAY_MS: "150" },
      { generators: { custom: heldGenerator(gates) } },
    );
    browser = await launchBrowser();
  }, 60_000);
  afterAll(async () => {
    for (const g of gates.values()) g.resolve();
    await browser?.close();
    await t?.close();
  });
  beforeEach(async () => {
    pageErrors = [];
    const context = await browser.newContext({ acceptDownloads: true });
    page = await context.newPage();
    page.on("pageerror", (err) => pageErrors.push(err.message));
    await page.goto(`${t.url}/`);
    await page.locator("#api-url", { hasText: t.url }).waitFor();
  });
  afterEach(async () => {
    await page?.context().close();
  });

  it("submits a report, shows progress to 100 and downloads the file", async () => {
    await recordProgress(page);
    await page.getByLabel("User id").fill("browser-user");
    await page.getByLabel("Report type").selectOption("weekly");
    await page.getByLabel("Filters (JSON)").fill('{"end_date": "2026-01-31"}');
    await page.getByRole("button", { name: "Submit report" }).click();
    const jobId = await newestJobId(page);
    await untilVisible(page, `${card(jobId)}[data-state="SUCCEEDED"] a.download`);

    const progress = page.locator(`${card(jobId)} progress`);
    expect(await progress.evaluate((p) => (p as HTMLProgressElement).value)).toBe(100);
    const seen = await page.evaluate(
      () => (window as unknown as { progressSeen: number[] }).progressSeen,
    );
    // The bar moved through the phases live, not just to its end.
    expect(seen).toEqual(expect.arrayContaining([40, 80, 100]));
    expect(await page.locator(`${card(jobId)} [role="status"]`).textContent()).toBe(
      "100% · completed",
    );

    const { job } = await reportClient("connect-binary", t.url).getJob({ jobId });
    expect(job?.userId).toBe("browser-user");
    const link = page.locator(`${card(jobId)} a.download`);
    // The same file; each read signs the link afresh, and its expiry (rounded
    // to the minute) may differ between the page's read and this one.
    const href = new URL((await link.getAttribute("href")) ?? "");
    const fromApi = new URL(job?.result?.downloadUrl ?? "");
    expect(href.pathname).toBe(fromApi.pathname);
    expect(href.searchParams.get("signature")).toMatch(/^[\w-]{43}$/);

    // A real download, through the link.
    const [download] = await Promise.all([page.waitForEvent("download"), link.click()]);
    expect(download.suggestedFilename()).toBe("weekly-browser-user.csv");
    const file = await download.path();
    const text = readFileSync(file, "utf8");
    expect(text.split("\r\n")[0]).toBe("date,sessions,orders,revenue");
    expect(text).toContain("2026-01-31,");

    mkdirSync(artifactsDir, { recursive: true });
    await page.screenshot({ path: path.join(artifactsDir, "browser-app.png"), fullPage: true });
    expect(pageErrors).toEqual([]);
  });

  it("lists the user's jobs and can be used with the keyboard alone", async () => {
    const node = reportClient("connect-binary", t.url);
    const { jobId: older } = await node.submitReport({
      userId: "kb-user",
      reportType: ReportType.MONTHLY,
    });
    await page.getByLabel("User id").focus();
    await page.keyboard.press("ControlOrMeta+a");
    await page.keyboard.type("kb-user");
    await page.keyboard.press("Tab"); // change event: the list reloads for kb-user
    await untilVisible(page, card(older));
    // Tab to the submit button and press Enter.
    await page.getByRole("button", { name: "Submit report" }).focus();
    await page.keyboard.press("Enter");
    await page.locator("li.job").nth(1).waitFor();
    const ids = await page
      .locator("li.job")
      .evaluateAll((lis) => lis.map((li) => (li as HTMLElement).dataset.jobId));
    expect(ids).toHaveLength(2);
    expect(ids[1]).toBe(older);
    expect(pageErrors).toEqual([]);
  });

  it("keeps a just-submitted job when an older ListJobs answer arrives after it", async () => {
    const gate = deferred();
    const held = gate.promise;
    const release = () => gate.resolve();
    // A ListJobs answer from before the submit (no jobs yet), arriving after it.
    await page.route("**/reports.v1.ReportService/ListJobs*", async (route) => {
      await held;
      await route.fulfill({ status: 200, contentType: "application/json", body: "{}" });
    });
    await page.getByLabel("User id").fill("race-user");
    await page.getByRole("button", { name: "Submit report" }).click(); // blur: a ListJobs
    const jobId = await newestJobId(page);
    const listed = page.waitForResponse("**/reports.v1.ReportService/ListJobs*");
    release();
    await listed;
    await untilVisible(page, `${card(jobId)}[data-state="SUCCEEDED"]`);
    expect(await page.locator("li.job").count()).toBe(1);
    expect(pageErrors).toEqual([]);
  });

  it("cancels a running job and retries a failed one", async () => {
    await page.getByLabel("User id").fill("buttons");
    await page.getByLabel("Report type").selectOption("custom");
    await page.getByRole("button", { name: "Submit report" }).click();
    const running = await newestJobId(page);
    await untilVisible(page, `${card(running)}[data-state="RUNNING"]`);
    await page.getByRole("button", { name: `Cancel job ${running}` }).click();
    await untilVisible(page, `${card(running)}[data-state="CANCELLED"]`);
    expect(await page.locator(`${card(running)} .cancel`).isHidden()).toBe(true);

    // A permanent failure (bad filters) is FAILED at once; Retry runs it again.
    await page.getByLabel("Report type").selectOption("weekly");
    await page.getByLabel("Filters (JSON)").fill('{"end_date": "not a date"}');
    await page.getByRole("button", { name: "Submit report" }).click();
    await page.locator(`li.job[data-job-id]:not([data-job-id="${running}"])`).first().waitFor();
    const failed = await newestJobId(page);
    await untilVisible(page, `${card(failed)}[data-state="FAILED"] .retry`);
    expect(await page.locator(`${card(failed)} .reason`).textContent()).toContain("end_date");
    await page.getByRole("button", { name: `Retry job ${failed}` }).click();
    const node = reportClient("connect-binary", t.url);
    const types: string[] = [];
    await expect
      .poll(
        async () => {
          types.length = 0;
          for await (const r of node.watchJob({ jobId: failed }))
            if (r.event) types.push(String(r.event.type));
          return types.filter((x) => x === "1").length;
        },
        { timeout: 10_000 },
      )
      .toBe(2); // QUEUED twice: submitted, then retried
    await untilVisible(page, `${card(failed)}[data-state="FAILED"] .retry`);
    expect(pageErrors).toEqual([]);
  });

  it("sends the API key from sessionStorage as Authorization: Bearer", async () => {
    const seen: (string | undefined)[] = [];
    page.on("request", (req) => {
      if (req.url().includes("/reports.v1.ReportService/")) seen.push(req.headers().authorization);
    });
    await page.getByText("API key", { exact: true }).first().click(); // opens <details>
    await page.getByLabel("API key").fill("k-browser-1");
    await page.getByRole("button", { name: "Save" }).click();
    await page.getByText("A key is set.").waitFor();
    expect(await page.evaluate(() => sessionStorage.getItem("reports.apiKey"))).toBe("k-browser-1");
    await page.getByLabel("User id").fill("key-user");
    await page.getByRole("button", { name: "Submit report" }).click();
    await newestJobId(page);
    expect(seen.length).toBeGreaterThan(1);
    expect(seen.at(-1)).toBe("Bearer k-browser-1");
    // Kept for this tab across reloads.
    await page.reload();
    expect(await page.getByLabel("API key").inputValue()).toBe("k-browser-1");
    expect(pageErrors).toEqual([]);
  });

  it("follows a job with a plain EventSource on GET /v1/jobs/{id}/events", async () => {
    const { jobId } = await reportClient("connect-binary", t.url).submitReport({
      userId: "sse-browser",
      reportType: ReportType.WEEKLY,
    });
    const events = await page.evaluate(
      (id) =>
        new Promise<{ type: string; id: string; progress: number }[]>((resolve, reject) => {
          const seen: { type: string; id: string; progress: number }[] = [];
          const source = new EventSource(`/v1/jobs/${id}/events`);
          const timer = setTimeout(() => reject(new Error(JSON.stringify(seen))), 15_000);
          for (const type of ["queued", "started", "progress", "succeeded"]) {
            source.addEventListener(type, (e) => {
              const m = e as MessageEvent<string>;
              seen.push({ type, id: m.lastEventId, progress: JSON.parse(m.data).progress ?? 0 });
              if (type === "succeeded") {
                source.close();
                clearTimeout(timer);
                resolve(seen);
              }
            });
          }
        }),
      jobId,
    );
    expect(events.map((e) => e.type)).toEqual([
      "queued",
      "started",
      "progress",
      "progress",
      "succeeded",
    ]);
    expect(events.map((e) => e.progress)).toEqual([0, 5, 40, 80, 100]);
    const ids: string[] = [];
    for await (const r of reportClient("connect-binary", t.url).watchJob({ jobId })) {
      if (r.event) ids.push(r.event.id);
    }
    expect(events.map((e) => e.id)).toEqual(ids);
  });

  it("shows invalid_argument naming user_id for an empty user id", async () => {
    await page.getByLabel("User id").fill("");
    await page.getByRole("button", { name: "Submit report" }).click();
    await untilVisible(page, "#error");
    const error = (await page.textContent("#error")) ?? "";
    expect(error).toContain("invalid_argument");
    expect(error).toContain("user_id");
    expect(await page.getAttribute("#error", "role")).toBe("alert");
  });
});

describe("browser app on another origin (CORS), with watches cut by UNAVAILABLE", () => {
  let t: TestApp;
  let browser: Browser;
  let site: { url: string; close(): Promise<void> } | undefined;

  beforeAll(async () => {
    await buildWeb();
    const serve = (await import(
      pathToFileURL(path.join(repoRoot, "examples/browser/serve.mjs")).href
    )) as ServeModule;
    // The API's address is only known once it listens: serve the page first, then start the API.
    site = await serve.startExampleServer({ port: 0, api: "http://placeholder.invalid" });
    // Watches end with UNAVAILABLE after 1 s while the job takes 4 phases of 600 ms.
    t = await startTestApp({
      CORS_ORIGINS: site.url,
      REPORT_PHASE_DELAY_MS: "600",
      WATCH_MAX_DURATION_MS: "1000",
    });
    browser = await launchBrowser();
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await site?.close();
    await t?.close();
  });

  it("submits through CORS and resumes the watch to SUCCEEDED", async () => {
    if (site === undefined) throw new Error("no site");
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (err) => errors.push(err.message));
    try {
      await page.goto(`${site.url}/?api=${encodeURIComponent(t.url)}`);
      await page.locator("#api-url", { hasText: t.url }).waitFor();
      await page.getByLabel("User id").fill("cors-user");
      await page.getByRole("button", { name: "Submit report" }).click();
      const jobId = await newestJobId(page);
      await untilVisible(page, `${card(jobId)}[data-state="SUCCEEDED"] a.download`);
      const reconnects = Number(await page.getAttribute(card(jobId), "data-reconnects"));
      expect(reconnects).toBeGreaterThanOrEqual(1);
      expect(
        await page
          .locator(`${card(jobId)} progress`)
          .evaluate((p) => (p as HTMLProgressElement).value),
      ).toBe(100);
      // The browser downloads cross-origin too.
      const href = (await page.getAttribute(`${card(jobId)} a.download`, "href")) ?? "";
      const got = await page.evaluate(async (u) => {
        const res = await fetch(u);
        return { status: res.status, text: await res.text() };
      }, href);
      expect(got.status).toBe(200);
      expect(got.text.split("\r\n")[0]).toBe("date,sessions,orders,revenue");
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it("redirects / to the configured API, as `npm run example:browser` serves it", async () => {
    if (site === undefined) throw new Error("no site");
    const res = await fetch(`${site.url}/`, { redirect: "manual" });
    expect(res.status).toBe(302);
    expect(res.headers.get("location")).toBe(
      `/?api=${encodeURIComponent("http://placeholder.invalid")}`,
    );
  });
});
