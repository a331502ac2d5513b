/**
 * CORS, header by header: an allowed origin's preflight and actual request
 * (successful and failing: a browser must be able to read errors too), a
 * disallowed origin (no Access-Control-* header at all), and `*` (never with
 * credentials).
 */
import http from "node:http";
import { cors } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { corsAllowedHeaders, corsExposedHeaders } from "../../src/api/cors.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

const allowed = "https://app.example.com";
const apiKey = "acme-key-0123456789abcdef";
const submitPath = "/reports.v1.ReportService/SubmitReport";

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP/1.1 request with exactly `headers` (Origin included, which fetch would not allow). */
function request(
  url: string,
  method: string,
  headers: Record<string, string>,
  body?: string,
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        text += c;
      });
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }),
      );
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** The response's Access-Control-* headers. */
const corsHeaders = (res: RawResponse) =>
  Object.fromEntries(Object.entries(res.headers).filter(([k]) => k.startsWith("access-control-")));

const preflightHeaders = (origin: string) => ({
  origin,
  "access-control-request-method": "POST",
  "access-control-request-headers":
    "authorization, content-type, connect-protocol-version, idempotency-key",
});
const submitBody = JSON.stringify({ userId: "u", reportType: "REPORT_TYPE_WEEKLY" });
const jsonHeaders = { "content-type": "application/json", "connect-protocol-version": "1" };

describe("CORS with an allow-list", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp(
      { CORS_ORIGINS: `${allowed},https://other.example.com`, API_KEYS: `acme:${apiKey}` },
      { mode: "api" },
    );
  });
  afterAll(async () => {
    await t?.close();
  });

  it("answers an allowed origin's preflight with 204 and exactly the CORS headers", async () => {
    const res = await request(`${t.url}${submitPath}`, "OPTIONS", preflightHeaders(allowed));
    expect(res.status).toBe(204);
    expect(corsHeaders(res)).toEqual({
      "access-control-allow-origin": allowed,
      "access-control-allow-methods": cors.allowedMethods.join(", "),
      "access-control-allow-headers": corsAllowedHeaders.join(", "),
      "access-control-expose-headers": corsExposedHeaders.join(", "),
      "access-control-max-age": "7200",
    });
    expect(res.headers.vary).toBe("Origin");
    expect(cors.allowedMethods).toEqual(expect.arrayContaining(["POST", "GET"]));
    const allowHeaders = String(res.headers["access-control-allow-headers"]).toLowerCase();
    for (const h of [
      "authorization",
      "idempotency-key",
      "content-type",
      "connect-protocol-version",
      "x-grpc-web",
      "grpc-timeout",
    ])
      expect(allowHeaders.split(", "), h).toContain(h);
    const exposed = String(res.headers["access-control-expose-headers"]).toLowerCase().split(", ");
    for (const h of [
      "retry-after",
      "location",
      "grpc-status",
      "grpc-message",
      "grpc-status-details-bin",
    ])
      expect(exposed, h).toContain(h);
    expect(res.headers["access-control-allow-credentials"]).toBeUndefined();
    expect(res.body).toBe("");
  });

  it("adds the CORS headers to an allowed origin's actual requests, errors included", async () => {
    const ok = await request(
      `${t.url}${submitPath}`,
      "POST",
      { ...jsonHeaders, origin: allowed, authorization: `Bearer ${apiKey}` },
      submitBody,
    );
    expect(ok.status).toBe(200);
    expect(corsHeaders(ok)).toEqual({
      "access-control-allow-origin": allowed,
      "access-control-expose-headers": corsExposedHeaders.join(", "),
    });
    expect(ok.headers.vary).toMatch(/\bOrigin\b/);
    // Without a key: the 401 is readable by the page, WWW-Authenticate exposed.
    const denied = await request(
      `${t.url}${submitPath}`,
      "POST",
      { ...jsonHeaders, origin: allowed },
      submitBody,
    );
    expect(denied.status).toBe(401);
    expect(denied.headers["access-control-allow-origin"]).toBe(allowed);
    expect(String(denied.headers["access-control-expose-headers"])).toContain("WWW-Authenticate");
    // The plain routes too.
    const health = await request(`${t.url}/healthz`, "GET", {
      origin: "https://other.example.com",
    });
    expect(health.headers["access-control-allow-origin"]).toBe("https://other.example.com");
  });

  it("gives a disallowed origin no CORS header at all, and refuses its preflight", async () => {
    for (const origin of [
      "https://evil.example.com",
      "https://app.example.com.evil.com",
      "null",
      "http://app.example.com",
    ]) {
      const pre = await request(`${t.url}${submitPath}`, "OPTIONS", preflightHeaders(origin));
      expect(pre.status, origin).toBe(403);
      expect(corsHeaders(pre), origin).toEqual({});
      const actual = await request(
        `${t.url}${submitPath}`,
        "POST",
        { ...jsonHeaders, origin, authorization: `Bearer ${apiKey}` },
        submitBody,
      );
      expect(corsHeaders(actual), origin).toEqual({});
      expect(actual.headers.vary).toMatch(/\bOrigin\b/);
    }
  });
});

describe("CORS with *", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ CORS_ORIGINS: "*" }, { mode: "api" });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("allows any origin with *, never with credentials", async () => {
    const pre = await request(
      `${t.url}${submitPath}`,
      "OPTIONS",
      preflightHeaders("https://any.example"),
    );
    expect(pre.status).toBe(204);
    expect(pre.headers["access-control-allow-origin"]).toBe("*");
    expect(pre.headers["access-control-allow-credentials"]).toBeUndefined();
    const actual = await request(
      `${t.url}${submitPath}`,
      "POST",
      { ...jsonHeaders, origin: "https://any.example" },
      submitBody,
    );
    expect(actual.status).toBe(200);
    expect(actual.headers["access-control-allow-origin"]).toBe("*");
    expect(actual.headers["access-control-allow-credentials"]).toBeUndefined();
  });
});
