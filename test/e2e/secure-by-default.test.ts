/**
 * Secure by default, as a person starting the real binary sees it: with no
 * API keys the service serves only on loopback (and says so); on any other
 * address it refuses to start with one line and exit code 2, unless
 * ALLOW_UNAUTHENTICATED=true, which it announces loudly.
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { killAllServices, spawnService } from "../helpers/processes.js";
import { testEnv } from "../helpers/test-app.js";

const run = promisify(execFile);
const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

describe("secure by default", () => {
  afterAll(async () => {
    await killAllServices();
  });

  it("refuses to start without keys on a non-loopback HOST: one line, exit 2", async () => {
    const env = { PATH: process.env.PATH ?? "", ...testEnv({ HOST: "0.0.0.0", PORT: "0" }) };
    const failure = await run(process.execPath, ["--import", "tsx", "src/main.ts", "api"], {
      cwd: repoRoot,
      env,
      timeout: 20_000,
    }).then(
      () => undefined,
      (err: { code?: number; stderr?: string }) => err,
    );
    expect(failure?.code).toBe(2);
    const lines = (failure?.stderr ?? "").trim().split("\n");
    expect(lines).toEqual([
      "config: API_KEYS: no API keys configured and HOST=0.0.0.0 is not a loopback address; set API_KEYS or API_KEYS_FILE (or ALLOW_UNAUTHENTICATED=true to serve without authentication)",
    ]);
  });

  it("serves open on 0.0.0.0 with ALLOW_UNAUTHENTICATED=true, with a loud warning", async () => {
    const api = await spawnService(
      "api",
      testEnv({ HOST: "0.0.0.0", ALLOW_UNAUTHENTICATED: "true" }),
    );
    const line = await api.waitForLog("WITHOUT AUTHENTICATION");
    expect(line.level).toBe(40); // pino warn
    expect((await fetch(`${api.url}/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA`)).status).toBe(404);
    api.kill("SIGTERM");
    expect((await api.exited).code).toBe(0);
  });

  it("serves open on loopback without keys and says so in one line", async () => {
    const api = await spawnService("api", testEnv({}));
    const line = await api.waitForLog("no API keys configured");
    expect(line.msg).toContain('every caller is tenant "default"');
    expect(api.logs.filter((l) => String(l.msg).includes("no API keys"))).toHaveLength(1);
    api.kill("SIGTERM");
    expect((await api.exited).code).toBe(0);
  });
});
