/**
 * The browser example (examples/browser) in headless Chromium, with the real
 * Connect-Web bundle against the real service. The page is served from
 * another origin than the API, so every call goes through CORS.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { toJson } from "@bufbuild/protobuf";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { JobSchema, ReportType } from "../../gen/reports/v1/job_pb.js";
import { reportClient } from "../helpers/clients.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const exampleDir = fileURLToPath(new URL("../../examples/browser/", import.meta.url));

/** examples/browser/build.mjs */
interface BuildModule {
  buildExample(options: { outDir?: string }): Promise<{ outFile: string }>;
}
/** examples/browser/serve.mjs */
interface ServeModule {
  startExampleServer(options: {
    port?: number;
    distDir?: string;
  }): Promise<{ url: string; close(): Promise<void> }>;
}

/** Imports one of the example's plain-JS scripts (they carry JSDoc types, not .d.ts files). */
async function importExample<T>(file: string): Promise<T> {
  return (await import(pathToFileURL(path.join(exampleDir, file)).href)) as T;
}

/** One row of the page's event list. */
interface ShownEvent {
  id: string;
  type: string;
  phase: string;
}

/** The events the page lists, in order. */
function shownEvents(page: Page): Promise<ShownEvent[]> {
  return page.$$eval("#events li", (items) =>
    items.map((li) => ({
      id: (li as HTMLElement).dataset.eventId ?? "",
      type: (li as HTMLElement).dataset.type ?? "",
      phase: (li as HTMLElement).dataset.phase ?? "",
    })),
  );
}

/**
 * Waits until `selector` is visible, failing early when the page shows an
 * error instead; the failure says what the page showed.
 */
async function untilVisible(page: Page, selector: string, timeoutMs = 10_000): Promise<void> {
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
  const events = (await shownEvents(page)).map((e) => e.type).join(", ");
  throw new Error(
    `${selector} not shown (waited up to ${timeoutMs} ms); page error: ${JSON.stringify(error)}; events: [${events}]`,
  );
}

/*
 * Node-side calls use connect-binary (HTTP/2): the app's close() ends idle h2
 * sessions at once, while idle HTTP/1.1 keep-alive connections wait out its deadline.
 */

/** Every event id of a finished job, as a Node client watching from the start sees them. */
async function serverEventIds(url: string, jobId: string): Promise<string[]> {
  const ids: string[] = [];
  for await (const res of reportClient("connect-binary", url).watchJob({ jobId })) {
    if (res.event) ids.push(res.event.id);
  }
  return ids;
}

/**
 * Launches Debian's Chromium. Each describe has its own and closes it before
 * its app: the app's close() would otherwise wait out the browser's idle
 * keep-alive connections.
 */
function launchChromium(): Promise<Browser> {
  const executablePath = "/usr/bin/chromium";
  if (!existsSync(executablePath)) {
    throw new Error(`${executablePath} is missing; install it with: apt-get install -y chromium`);
  }
  return chromium.launch({
    executablePath,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-quic",
      "--no-first-run",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

describe("examples/browser", () => {
  let outDir: string;
  let site: { url: string; close(): Promise<void> } | undefined;

  beforeAll(async () => {
    outDir = mkdtempSync(path.join(tmpdir(), "report-jobs-browser-"));
    const { buildExample } = await importExample<BuildModule>("build.mjs");
    await buildExample({ outDir });
    const { startExampleServer } = await importExample<ServeModule>("serve.mjs");
    site = await startExampleServer({ port: 0, distDir: outDir });
  });

  afterAll(async () => {
    await site?.close();
    rmSync(outDir, { recursive: true, force: true });
  });

  /** Opens the example page against the API at `apiUrl`; uncaught page errors land in `errors`. */
  async function openPage(browser: Browser, apiUrl: string, errors: string[]): Promise<Page> {
    if (site === undefined) throw new Error("beforeAll did not finish");
    const page = await browser.newPage();
    page.on("pageerror", (err) => errors.push(err.message));
    await page.goto(`${site.url}/?api=${encodeURIComponent(apiUrl)}`);
    await page.locator("#api-url", { hasText: apiUrl }).waitFor();
    return page;
  }

  describe("against the service on another origin", () => {
    let t: TestApp;
    let browser: Browser;
    let page: Page;
    let pageErrors: string[];

    beforeAll(async () => {
      if (site === undefined) throw new Error("static server did not start");
      t = await startTestApp({ CORS_ORIGINS: site.url, REPORT_PHASE_DELAY_MS: "100" });
      browser = await launchChromium();
    });
    afterAll(async () => {
      await browser?.close();
      await t?.close();
    });
    beforeEach(async () => {
      pageErrors = [];
      page = await openPage(browser, t.url, pageErrors);
    });
    afterEach(async () => {
      await page?.close();
    });

    it("submits a report, lists its events live and links the download", async () => {
      await page.fill("#user-id", "browser-user");
      await page.selectOption("#report-type", "weekly");
      await page.fill("#filters", '{"end_date": "2026-01-31"}');
      await page.click("#submit");
      await untilVisible(page, '#events li[data-type="SUCCEEDED"]');

      const events = await shownEvents(page);
      expect(events.map((e) => (e.type === "PROGRESS" ? `PROGRESS:${e.phase}` : e.type))).toEqual([
        "QUEUED",
        "STARTED",
        "PROGRESS:fetch-data",
        "PROGRESS:render",
        "SUCCEEDED",
      ]);
      expect(await page.textContent("#job-state")).toBe("SUCCEEDED");
      expect(await page.getAttribute("#progress", "value")).toBe("100");

      const jobId = (await page.textContent("#job-id")) ?? "";
      const { job } = await reportClient("connect-binary", t.url).getJob({ jobId });
      expect(job?.userId).toBe("browser-user");
      expect(job?.reportType).toBe(ReportType.WEEKLY);
      const downloadUrl = job?.result?.downloadUrl ?? "";
      expect(downloadUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1\/artifacts\//);
      await untilVisible(page, "#download");
      // Same file; the signature's expiry may differ between the two reads.
      const href = (await page.getAttribute("#download", "href")) ?? "";
      expect(new URL(href).pathname).toBe(new URL(downloadUrl).pathname);
      expect(events.map((e) => e.id)).toEqual(await serverEventIds(t.url, jobId));

      // The browser itself downloads the report, cross-origin.
      const download = await page.evaluate(async (href) => {
        const res = await fetch(href);
        return {
          status: res.status,
          type: res.headers.get("content-type"),
          text: await res.text(),
        };
      }, downloadUrl);
      expect(download.status).toBe(200);
      expect(download.type).toBe("text/csv");
      expect(download.text.split("\r\n")[0]).toBe("date,sessions,orders,revenue");
      expect(download.text).toContain("2026-01-31,");

      const screenshot = process.env.EXAMPLE_SCREENSHOT;
      if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
      expect(pageErrors).toEqual([]);
    });

    it("reads a job with GetJob over Connect-Web from the page", async () => {
      const node = reportClient("connect-binary", t.url);
      const { jobId } = await node.submitReport({
        userId: "u-get",
        reportType: ReportType.MONTHLY,
      });
      const fromNode = await waitFor(
        async () => {
          const { job } = await node.getJob({ jobId });
          return job?.result ? job : undefined;
        },
        { what: "the job to succeed" },
      );

      const fromPage = await page.evaluate(async (id) => {
        // Set by examples/browser/main.ts (typed there as ReportsExample).
        const api = (window as { reportsExample?: { getJob(id: string): Promise<unknown> } })
          .reportsExample;
        if (api === undefined) throw new Error("window.reportsExample is not set");
        return api.getJob(id);
      }, jobId);
      expect(fromPage).toEqual(toJson(JobSchema, fromNode));
      expect(pageErrors).toEqual([]);
    });

    it("shows invalid_argument naming user_id for an empty user id", async () => {
      await page.fill("#user-id", "");
      await page.click("#submit");
      await untilVisible(page, "#error");

      const error = (await page.textContent("#error")) ?? "";
      expect(error).toContain("invalid_argument");
      expect(error).toContain("user_id");
      expect(await page.isVisible("#job")).toBe(false);
      expect(pageErrors).toEqual([]);
    });
  });

  describe("when the service cuts watches with UNAVAILABLE", () => {
    let t: TestApp;
    let browser: Browser;

    beforeAll(async () => {
      if (site === undefined) throw new Error("static server did not start");
      // Watches end with UNAVAILABLE after 1 s (the smallest maximum) while the
      // job takes at least 3 phases of 600 ms: the page has to resume at least once.
      t = await startTestApp({
        CORS_ORIGINS: site.url,
        REPORT_PHASE_DELAY_MS: "600",
        WATCH_MAX_DURATION_MS: "1000",
      });
      browser = await launchChromium();
    });
    afterAll(async () => {
      await browser?.close();
      await t?.close();
    });

    it("resumes from the last event id, showing every event once and in order", async () => {
      const pageErrors: string[] = [];
      const page = await openPage(browser, t.url, pageErrors);
      try {
        await page.fill("#user-id", "resume-user");
        await page.click("#submit");
        await untilVisible(page, '#events li[data-type="SUCCEEDED"]');

        const reconnects = Number(await page.getAttribute("#connection", "data-reconnects"));
        expect(reconnects).toBeGreaterThanOrEqual(1);
        const jobId = (await page.textContent("#job-id")) ?? "";
        const events = await shownEvents(page);
        expect(events.map((e) => e.id)).toEqual(await serverEventIds(t.url, jobId));
        expect(events.map((e) => e.type)).toEqual([
          "QUEUED",
          "STARTED",
          "PROGRESS",
          "PROGRESS",
          "SUCCEEDED",
        ]);
        expect(pageErrors).toEqual([]);
      } finally {
        await page.close();
      }
    });
  });
});
