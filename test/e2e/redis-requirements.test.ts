/**
 * The real binary against a Redis that lacks what the configuration
 * requires: it refuses to start with one error line and exit code 1, as for
 * any other start failure (Redis unreachable, metrics port taken).
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RedisServerHandle, startRedisServer } from "../helpers/redis-server.js";
import { testEnv } from "../helpers/test-app.js";

const run = promisify(execFile);
const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

describe("Redis requirements at start", () => {
  let redis: RedisServerHandle;
  beforeAll(async () => {
    redis = await startRedisServer(); // appendonly no
  });
  afterAll(async () => {
    await redis?.stop();
  });

  /** Runs `src/main.ts worker` with `env`; resolves with how it failed. */
  async function failedStart(env: Record<string, string>) {
    const fullEnv = {
      PATH: process.env.PATH ?? "",
      ...testEnv({ REDIS_URL: redis.url, LOG_LEVEL: "info", ...env }),
    };
    const failure = await run(process.execPath, ["--import", "tsx", "src/main.ts", "worker"], {
      cwd: repoRoot,
      env: fullEnv,
      timeout: 20_000,
    }).then(
      () => undefined,
      (err: { code?: number; stdout?: string; stderr?: string }) => err,
    );
    const lines = (failure?.stdout ?? "")
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l) as { level: number; msg: string });
    return { code: failure?.code, errors: lines.filter((l) => l.level >= 50).map((l) => l.msg) };
  }

  it("exits 1 with one line when REQUIRE_AOF=true and Redis has appendonly no", async () => {
    const { code, errors } = await failedStart({ REQUIRE_AOF: "true" });
    expect(code).toBe(1);
    expect(errors).toEqual([
      "REQUIRE_AOF=true but Redis has appendonly no; turn AOF on (CONFIG SET appendonly yes, and appendonly yes in redis.conf) or unset REQUIRE_AOF",
    ]);
  });

  it("exits 1 with one line when SUBMIT_WAITAOF=1 and Redis is 7.0", async () => {
    const { code, errors } = await failedStart({ SUBMIT_WAITAOF: "1" });
    expect(code).toBe(1);
    expect(errors).toEqual([
      "SUBMIT_WAITAOF=1 needs Redis 7.2 or newer (WAITAOF), and this is 7.0.15; unset SUBMIT_WAITAOF",
    ]);
  });
});
