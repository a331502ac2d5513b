/**
 * grpc.health.v1 and /readyz follow Redis: NOT_SERVING (503) while it is
 * down, SERVING (200) once it is back, NOT_SERVING once shutdown begins.
 * Checked with @grpc/grpc-js reading gRPC's health.proto, so nothing of
 * connect-es sits between the test and the wire. The Redis here is this
 * file's own: the test kills it.
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RedisServerHandle, startRedisServer } from "../helpers/redis-server.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const protoDir = fileURLToPath(new URL("../../proto", import.meta.url));

type Status = "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";
interface CheckResponse {
  status: Status;
}
type CheckMethod = (
  request: { service: string },
  options: grpc.CallOptions,
  callback: (err: grpc.ServiceError | null, response?: CheckResponse) => void,
) => grpc.ClientUnaryCall;
type WatchMethod = (
  request: { service: string },
  options?: grpc.CallOptions,
) => grpc.ClientReadableStream<CheckResponse>;

function healthClient(address: string): grpc.Client {
  const definition = protoLoader.loadSync(path.join("grpc", "health", "v1", "health.proto"), {
    includeDirs: [protoDir],
    keepCase: true,
    enums: String,
    defaults: true,
  });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
  };
  return new loaded.grpc.health.v1.Health(address, grpc.credentials.createInsecure());
}

/** A Watch call that records every status and how it ended. */
function watch(client: grpc.Client, service: string) {
  const call = (client as unknown as { Watch: WatchMethod }).Watch({ service });
  const seen: Status[] = [];
  let ended: grpc.StatusObject | undefined;
  call.on("data", (m: CheckResponse) => seen.push(m.status));
  call.on("error", () => undefined); // the status event carries the outcome
  call.on("status", (s: grpc.StatusObject) => {
    ended = s;
  });
  return {
    call,
    seen,
    get ended() {
      return ended;
    },
  };
}

describe("grpc.health.v1.Health and /readyz", () => {
  let redis: RedisServerHandle;
  let t: TestApp;
  let client: grpc.Client;
  const check = (service: string) =>
    new Promise<Status>((resolve, reject) => {
      (client as unknown as { Check: CheckMethod }).Check(
        { service },
        { deadline: Date.now() + 5000 },
        (err, res) => (err ? reject(err) : resolve((res as CheckResponse).status)),
      );
    });
  const readyz = async () => (await fetch(`${t.url}/readyz`)).status;

  beforeAll(async () => {
    redis = await startRedisServer();
    t = await startTestApp({ REDIS_URL: redis.url }, { mode: "api" });
    client = healthClient(new URL(t.url).host);
  });
  afterAll(async () => {
    client?.close();
    await t?.close();
    await redis?.stop();
  });

  it("answers SERVING for the server and ReportService, NOT_FOUND for an unknown service", async () => {
    expect(await check("")).toBe("SERVING");
    expect(await check("reports.v1.ReportService")).toBe("SERVING");
    const err = await check("no.such.Service").then(
      () => undefined,
      (e: grpc.ServiceError) => e,
    );
    expect(err?.code).toBe(grpc.status.NOT_FOUND);
    expect(await readyz()).toBe(200);
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
  });

  it("flips to NOT_SERVING while Redis is down and back to SERVING when it returns", async () => {
    const all = watch(client, "");
    const unknown = watch(client, "no.such.Service");
    await waitFor(() => all.seen.length > 0 && unknown.seen.length > 0, {
      what: "the first Watch messages",
    });
    expect(all.seen).toEqual(["SERVING"]);
    expect(unknown.seen).toEqual(["SERVICE_UNKNOWN"]);

    await redis.kill();
    await waitFor(async () => (await check("reports.v1.ReportService")) === "NOT_SERVING", {
      timeoutMs: 10_000,
      what: "Check to answer NOT_SERVING",
    });
    expect(await check("")).toBe("NOT_SERVING");
    expect(await readyz()).toBe(503);
    await waitFor(() => all.seen.at(-1) === "NOT_SERVING", { what: "Watch to see NOT_SERVING" });

    await redis.restart();
    await waitFor(async () => (await check("reports.v1.ReportService")) === "SERVING", {
      timeoutMs: 15_000,
      what: "Check to answer SERVING again",
    });
    expect(await readyz()).toBe(200);
    await waitFor(() => all.seen.at(-1) === "SERVING", { what: "Watch to see SERVING again" });
    // Exactly the transitions, each once: the current status, then every change.
    expect(all.seen).toEqual(["SERVING", "NOT_SERVING", "SERVING"]);
    // An unknown service stays unknown, and its watch stays open (the spec says so).
    expect(unknown.seen).toEqual(["SERVICE_UNKNOWN"]);
    expect(unknown.ended).toBeUndefined();
    all.call.cancel();
    unknown.call.cancel();
  });

  it("reports NOT_SERVING and ends watches once shutdown begins", async () => {
    const w = watch(client, "reports.v1.ReportService");
    await waitFor(() => w.seen.length > 0, { what: "the first Watch message" });
    expect(w.seen).toEqual(["SERVING"]);
    const closing = t.app.close();
    await waitFor(() => w.ended, { timeoutMs: 10_000, what: "the watch to end" });
    expect(w.seen).toEqual(["SERVING", "NOT_SERVING"]);
    await closing;
  });
});
