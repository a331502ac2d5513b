/**
 * CORS in a real browser (Debian's Chromium): a page on an allowed origin
 * calls the API with an API key (a preflighted request) and can read both a
 * success and a 401 with its WWW-Authenticate header; a page on another
 * origin cannot read anything.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchChromium } from "../helpers/chromium.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

const apiKey = "browser-key-0123456789abcdef";

/** A one-page site: its origin is what matters. */
async function site(): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<!doctype html><title>site</title>");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe("CORS from a real browser", () => {
  let allowed: Awaited<ReturnType<typeof site>>;
  let other: Awaited<ReturnType<typeof site>>;
  let t: TestApp;
  let browser: Browser;

  beforeAll(async () => {
    allowed = await site();
    other = await site();
    t = await startTestApp(
      { CORS_ORIGINS: allowed.url, API_KEYS: `acme:${apiKey}` },
      { mode: "api" },
    );
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await t?.close();
    await allowed?.close();
    await other?.close();
  });

  /** Runs fetch(`api`/ListJobs) in a page of `origin`; the key when given. */
  const call = async (origin: string, key?: string) => {
    const page = await browser.newPage();
    try {
      await page.goto(origin);
      return await page.evaluate(
        async ({ api, key }) => {
          try {
            const res = await fetch(`${api}/reports.v1.ReportService/ListJobs`, {
              method: "POST",
              headers: {
                "content-type": "application/json",
                ...(key ? { authorization: `Bearer ${key}` } : {}),
              },
              body: "{}",
            });
            return {
              status: res.status,
              wwwAuthenticate: res.headers.get("www-authenticate"),
              body: await res.text(),
            };
          } catch (err) {
            return { error: String(err) };
          }
        },
        { api: t.url, key },
      );
    } finally {
      await page.close();
    }
  };

  it("lets the allowed origin call with its key and read a 401", async () => {
    expect(await call(allowed.url, apiKey)).toEqual({
      status: 200,
      wwwAuthenticate: null,
      body: "{}",
    });
    const denied = await call(allowed.url);
    expect(denied).toMatchObject({ status: 401, wwwAuthenticate: 'Bearer realm="report-jobs"' });
  });

  it("gives another origin nothing it can read", async () => {
    const res = await call(other.url, apiKey);
    expect(res).toEqual({ error: expect.stringMatching(/Failed to fetch/) });
  });
});
