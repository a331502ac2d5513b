import { execFileSync } from "node:child_process";
import http from "node:http";
import { afterAll, describe, expect, it } from "vitest";
import { isListening } from "../../src/queue/private-redis.js";
import { killAllServices, type LogLine, spawnService } from "../helpers/processes.js";
import { testEnv } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

/** A GetJob over Connect JSON on a connection of its own (closed after it); answers the HTTP status. */
function getJobOnNewConnection(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${url}/reports.v1.ReportService/GetJob`,
      { method: "POST", agent: false, headers: { "content-type": "application/json" } },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      },
    );
    req.on("error", reject);
    req.end(JSON.stringify({ jobId: "no-such-job" }));
  });
}

const processesOf = (lines: readonly LogLine[], msg: string) =>
  new Set(lines.filter((l) => l.msg === msg).map((l) => l.api_process));

describe("API_PROCESSES (node:cluster)", () => {
  afterAll(killAllServices);

  it("serves one port from two API processes and stops both gracefully on SIGTERM", async () => {
    const api = await spawnService("api", testEnv({ API_PROCESSES: "2" }));
    await waitFor(
      () =>
        processesOf(api.logs, "api listening (gRPC, gRPC-Web and Connect on one port)").size === 2,
      {
        what: "both API processes listening",
        timeoutMs: 20_000,
      },
    );
    // Connections go round-robin to the processes: calls on fresh connections reach both.
    await waitFor(
      async () => {
        expect(await getJobOnNewConnection(api.url)).toBe(404);
        const served = processesOf(api.logs, "rpc");
        return served.has(0) && served.has(1);
      },
      { what: "RPCs answered by both API processes", timeoutMs: 20_000 },
    );

    api.kill("SIGTERM");
    expect(await api.exited).toEqual({ code: 0, signal: null });
    expect(processesOf(api.logs, "stopping")).toEqual(new Set([0, 1]));
    expect(await isListening("127.0.0.1", Number(new URL(api.url).port))).toBe(false);
  });

  it("stops the other API processes, and exits 1, when one of them dies", async () => {
    const api = await spawnService("api", testEnv({ API_PROCESSES: "2" }));
    await waitFor(
      () =>
        processesOf(api.logs, "api listening (gRPC, gRPC-Web and Connect on one port)").size === 2,
      {
        what: "both API processes listening",
        timeoutMs: 20_000,
      },
    );
    // The API processes' pids, from the one process that answers them all: the primary's children.
    const children = execFileSync("pgrep", ["-P", String(api.pid)], { encoding: "utf8" })
      .trim()
      .split("\n")
      .map(Number);
    expect(children).toHaveLength(2);
    process.kill(children[0] as number, "SIGKILL");
    expect(await api.exited).toEqual({ code: 1, signal: null });
    expect(
      api.logs.some((l) => l.msg === "an API process exited on its own: stopping the others"),
    ).toBe(true);
    expect(await isListening("127.0.0.1", Number(new URL(api.url).port))).toBe(false);
  });
});
