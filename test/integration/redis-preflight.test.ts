/**
 * The start-up check of Redis, against real redis-servers: AOF off is a loud
 * warning (or a refusal with REQUIRE_AOF=true), SUBMIT_WAITAOF is refused on
 * Redis 7.0, and where CONFIG is disabled (renamed, or denied by an ACL, as on
 * managed Redis) persistence is read from INFO and what could not be read is
 * named.
 */
import { afterEach, describe, expect, it } from "vitest";
import { type CapturedLine, capturedLogger, logLevel } from "../helpers/captured-logger.js";
import { type RedisServerHandle, startRedisServer } from "../helpers/redis-server.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

describe("the start-up check of Redis", () => {
  const servers: RedisServerHandle[] = [];
  const apps: TestApp[] = [];
  afterEach(async () => {
    for (const app of apps.splice(0)) await app.close();
    for (const server of servers.splice(0)) await server.stop();
  });

  async function redis(options: Parameters<typeof startRedisServer>[0] = {}) {
    const server = await startRedisServer(options);
    servers.push(server);
    return server;
  }

  /** Starts an api app on `url`; resolves with what it logged, or rejects as start() does. */
  async function start(url: string, env: Record<string, string> = {}) {
    const { logger, lines } = capturedLogger();
    const app = await startTestApp({ REDIS_URL: url, ...env }, { mode: "api", logger });
    apps.push(app);
    return lines;
  }

  const messages = (lines: CapturedLine[], level: number) =>
    lines.filter((l) => l.level === level).map((l) => l.msg);

  it("starts on Redis without AOF, warning loudly what a restart would lose", async () => {
    const server = await redis();
    const lines = await start(server.url);
    expect(messages(lines, logLevel.warn)).toContain(
      "Redis has appendonly no: a Redis restart loses every acknowledged job ever acknowledged (RDB snapshots are off too), and then their report files; turn AOF on (appendonly yes), or set REQUIRE_AOF=true to refuse to start without it",
    );
    expect(messages(lines, logLevel.info)).toContain("Redis 7.0.15, appendonly no");
  });

  it("refuses to start without AOF when REQUIRE_AOF=true, in one line", async () => {
    const server = await redis();
    await expect(start(server.url, { REQUIRE_AOF: "true" })).rejects.toThrow(
      /^REQUIRE_AOF=true but Redis has appendonly no; turn AOF on \(CONFIG SET appendonly yes, and appendonly yes in redis\.conf\) or unset REQUIRE_AOF$/,
    );
  });

  it("starts with REQUIRE_AOF=true on Redis with AOF, saying how it syncs", async () => {
    const server = await redis({ appendonly: true });
    const lines = await start(server.url, { REQUIRE_AOF: "true" });
    expect(messages(lines, logLevel.info)).toContain(
      "Redis 7.0.15, appendonly yes, appendfsync always",
    );
    expect(messages(lines, logLevel.warn).filter((m) => m.includes("Redis"))).toEqual([]);
  });

  it("refuses SUBMIT_WAITAOF=1 on Redis 7.0, which has no WAITAOF", async () => {
    const server = await redis({ appendonly: true });
    await expect(start(server.url, { SUBMIT_WAITAOF: "1" })).rejects.toThrow(
      /^SUBMIT_WAITAOF=1 needs Redis 7\.2 or newer \(WAITAOF\), and this is 7\.0\.15; unset SUBMIT_WAITAOF$/,
    );
  });

  it("reads persistence from INFO when CONFIG is renamed away, and names what it could not check", async () => {
    const server = await redis({ appendonly: true, args: ["--rename-command", "CONFIG", ""] });
    const lines = await start(server.url, { REQUIRE_AOF: "true" });
    const warnings = messages(lines, logLevel.warn);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(
      /^could not check Redis's appendfsync \(always or everysec\): CONFIG GET refused \(ERR unknown command 'CONFIG'.*\), and INFO did not tell; check them yourself$/,
    );
    expect(messages(lines, logLevel.info)).toContain(
      "Redis 7.0.15, appendonly yes, appendfsync unknown",
    );
    // And AOF off is still seen through INFO.
    const noAof = await redis({ args: ["--rename-command", "CONFIG", ""] });
    await expect(start(noAof.url, { REQUIRE_AOF: "true" })).rejects.toThrow(
      /^REQUIRE_AOF=true but Redis has appendonly no/,
    );
  });

  it("falls back to INFO when an ACL denies CONFIG to the service's user", async () => {
    const password = "acl-test-password-0123456789";
    const server = await redis({
      appendonly: true,
      args: ["--user", "reports", "on", `>${password}`, "~*", "&*", "+@all", "-config"],
    });
    const lines = await start(`redis://reports:${password}@127.0.0.1:${server.port}`, {
      REQUIRE_AOF: "true",
    });
    expect(messages(lines, logLevel.warn)).toEqual([
      expect.stringMatching(
        /^could not check Redis's appendfsync \(always or everysec\): CONFIG GET refused \(NOPERM.*\), and INFO did not tell; check them yourself$/,
      ),
    ]);
    expect(messages(lines, logLevel.info)).toContain(
      "Redis 7.0.15, appendonly yes, appendfsync unknown",
    );
    // Never the password, in any line.
    expect(JSON.stringify(lines)).not.toContain(password);
  });
});
