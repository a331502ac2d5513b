/**
 * With API keys configured, the probes stay open: gRPC health and reflection
 * (AUTH_EXEMPT_SERVICES, by default) answer without a key, as do /healthz,
 * /readyz and the metrics port, while ReportService still wants one. With the
 * exemptions emptied, health and reflection want a key too.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import {
  ServerReflection,
  ServerReflectionRequestSchema,
} from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { ReportService } from "../../gen/reports/v1/report_service_pb.js";
import { bearer } from "../helpers/clients.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

const key = "exempt-test-key-0123456789";

/** Service names reflection lists, asked without a key unless `apiKey` is given. */
async function listServices(url: string, apiKey?: string): Promise<string[]> {
  const transport = createGrpcTransport({
    baseUrl: url,
    interceptors: apiKey === undefined ? [] : [bearer(apiKey)],
  });
  const client = createClient(ServerReflection, transport);
  async function* requests() {
    yield create(ServerReflectionRequestSchema, {
      messageRequest: { case: "listServices", value: "" },
    });
  }
  for await (const res of client.serverReflectionInfo(requests())) {
    if (res.messageResponse.case === "listServicesResponse") {
      return res.messageResponse.value.service.map((s) => s.name);
    }
  }
  return [];
}

async function healthStatus(url: string, apiKey?: string) {
  const transport = createGrpcTransport({
    baseUrl: url,
    interceptors: apiKey === undefined ? [] : [bearer(apiKey)],
  });
  return (await createClient(Health, transport).check({ service: "" })).status;
}

async function codeOf(p: Promise<unknown>): Promise<Code | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

describe("auth exemptions with API keys configured", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ API_KEYS: `acme:${key}` }, { mode: "api" });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("answers gRPC health and reflection without a key", async () => {
    expect(await healthStatus(t.url)).toBe(HealthCheckResponse_ServingStatus.SERVING);
    expect(await listServices(t.url)).toContain("reports.v1.ReportService");
  });

  it("still refuses ReportService without a key, and serves it with one", async () => {
    const open = createClient(ReportService, createGrpcTransport({ baseUrl: t.url }));
    expect(await codeOf(open.getJob({ jobId: "AAAAAAAAAAAAAAAAAAAAAA" }))).toBe(
      Code.Unauthenticated,
    );
    const keyed = createClient(
      ReportService,
      createGrpcTransport({ baseUrl: t.url, interceptors: [bearer(key)] }),
    );
    expect(await codeOf(keyed.getJob({ jobId: "AAAAAAAAAAAAAAAAAAAAAA" }))).toBe(Code.NotFound);
  });

  it("answers the HTTP probes and /metrics without a key", async () => {
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${t.url}/readyz`)).status).toBe(200);
    expect((await fetch(`${t.metricsUrl}/readyz`)).status).toBe(200);
    // No SDK runs in this test process, so /metrics says it is off (503),
    // but it never asks for a key.
    expect((await fetch(`${t.metricsUrl}/metrics`)).status).not.toBe(401);
  });
});

describe("auth exemptions emptied (AUTH_EXEMPT_SERVICES=)", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ API_KEYS: `acme:${key}`, AUTH_EXEMPT_SERVICES: "" }, { mode: "api" });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("wants a key for health and reflection too", async () => {
    expect(await codeOf(healthStatus(t.url))).toBe(Code.Unauthenticated);
    expect(await codeOf(listServices(t.url))).toBe(Code.Unauthenticated);
    expect(await healthStatus(t.url, key)).toBe(HealthCheckResponse_ServingStatus.SERVING);
    expect(await listServices(t.url, key)).toContain("grpc.health.v1.Health");
  });
});
