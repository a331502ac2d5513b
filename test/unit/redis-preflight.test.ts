/**
 * The start-up judgement of a Redis server (pure): what refuses the start,
 * what is logged loudly, what is named as unchecked.
 */
import { describe, expect, it } from "vitest";
import {
  compareVersions,
  type Finding,
  judgeRedis,
  type RedisFacts,
} from "../../src/queue/redis-preflight.js";

const healthy: RedisFacts = {
  version: "7.0.15",
  appendonly: true,
  appendfsync: "everysec",
  save: "",
  maxmemoryPolicy: "noeviction",
};
const defaults = { requireAof: false, submitWaitAof: 0 as const };

const lines = (findings: Finding[], level: Finding["level"]) =>
  findings.filter((f) => f.level === level).map((f) => f.line);

describe("judgeRedis()", () => {
  it("passes a Redis 7 with AOF and noeviction, with one line on what a submit survives", () => {
    const findings = judgeRedis(healthy, defaults);
    expect(findings).toEqual([
      { level: "info", line: "Redis 7.0.15, appendonly yes, appendfsync everysec" },
    ]);
  });

  it("refuses Redis older than 7.0 in one line", () => {
    for (const version of ["6.2.14", "5.0.7", "6.9.9"]) {
      const refusals = lines(judgeRedis({ ...healthy, version }, defaults), "refuse");
      expect(refusals).toEqual([
        `Redis ${version} is too old: report-jobs needs Redis 7.0 or newer (WatchJob's resume reads XINFO STREAM max-deleted-entry-id, new in 7.0); upgrade Redis`,
      ]);
    }
    for (const version of ["7.0.0", "7.2.4", "8.0.1"]) {
      expect(lines(judgeRedis({ ...healthy, version }, defaults), "refuse")).toEqual([]);
    }
  });

  it("warns loudly when appendonly is off, naming what a restart loses", () => {
    const noRdb = judgeRedis({ ...healthy, appendonly: false, save: "" }, defaults);
    expect(lines(noRdb, "refuse")).toEqual([]);
    expect(lines(noRdb, "warn")).toEqual([
      "Redis has appendonly no: a Redis restart loses every acknowledged job ever acknowledged (RDB snapshots are off too), and then their report files; turn AOF on (appendonly yes), or set REQUIRE_AOF=true to refuse to start without it",
    ]);
    const rdb = judgeRedis({ ...healthy, appendonly: false, save: "3600 1 300 100" }, defaults);
    expect(lines(rdb, "warn")[0]).toContain('since the last RDB snapshot (save "3600 1 300 100")');
    expect(lines(rdb, "info")).toEqual(["Redis 7.0.15, appendonly no"]);
  });

  it("refuses with REQUIRE_AOF=true when appendonly is off or cannot be read", () => {
    const req = { ...defaults, requireAof: true };
    expect(lines(judgeRedis({ ...healthy, appendonly: false }, req), "refuse")).toEqual([
      "REQUIRE_AOF=true but Redis has appendonly no; turn AOF on (CONFIG SET appendonly yes, and appendonly yes in redis.conf) or unset REQUIRE_AOF",
    ]);
    const unknown = judgeRedis({ version: "7.0.15", configRefused: "ERR unknown command" }, req);
    expect(lines(unknown, "refuse")).toEqual([
      "REQUIRE_AOF=true but whether Redis has appendonly on could not be read (CONFIG GET and INFO persistence both refused); allow one of them, or unset REQUIRE_AOF if your provider guarantees AOF",
    ]);
    expect(judgeRedis(healthy, req).some((f) => f.level === "refuse")).toBe(false);
  });

  it("warns about appendfsync no", () => {
    const findings = judgeRedis({ ...healthy, appendfsync: "no" }, defaults);
    expect(lines(findings, "warn")[0]).toMatch(/^Redis has appendfsync no: .*about 30 s/);
  });

  it("logs an eviction policy other than noeviction as an error", () => {
    const findings = judgeRedis({ ...healthy, maxmemoryPolicy: "allkeys-lru" }, defaults);
    expect(lines(findings, "error")).toEqual([
      "Redis maxmemory-policy is allkeys-lru; set it to noeviction or jobs can be lost (CONFIG SET maxmemory-policy noeviction)",
    ]);
  });

  it("names what it could not check when CONFIG is disabled, and what INFO told instead", () => {
    const viaInfo = judgeRedis(
      {
        version: "7.0.15",
        appendonly: true,
        maxmemoryPolicy: "noeviction",
        configRefused: "ERR unknown command 'CONFIG'",
      },
      defaults,
    );
    expect(lines(viaInfo, "warn")).toEqual([
      "could not check Redis's appendfsync (always or everysec): CONFIG GET refused (ERR unknown command 'CONFIG'), and INFO did not tell; check them yourself",
    ]);
    expect(lines(viaInfo, "info")).toEqual(["Redis 7.0.15, appendonly yes, appendfsync unknown"]);
    const nothing = judgeRedis({ configRefused: "NOPERM" }, defaults);
    expect(lines(nothing, "refuse")).toEqual([]);
    expect(lines(nothing, "warn")).toEqual([
      "could not check Redis's version (needs 7.0 or newer), appendonly (should be yes), appendfsync (always or everysec), maxmemory-policy (should be noeviction): CONFIG GET refused (NOPERM), and INFO did not tell; check them yourself",
    ]);
  });

  it("refuses SUBMIT_WAITAOF=1 before Redis 7.2, without AOF, or when WAITAOF fails", () => {
    const req = { ...defaults, submitWaitAof: 1 as const };
    expect(lines(judgeRedis({ ...healthy, waitAof: "unknown" }, req), "refuse")).toEqual([
      "SUBMIT_WAITAOF=1 needs Redis 7.2 or newer (WAITAOF), and this is 7.0.15; unset SUBMIT_WAITAOF",
    ]);
    const on72 = { ...healthy, version: "7.2.4" };
    expect(lines(judgeRedis({ ...on72, waitAof: "unknown" }, req), "refuse")).toEqual([
      "SUBMIT_WAITAOF=1 needs Redis 7.2 or newer (WAITAOF), and this Redis does not know WAITAOF",
    ]);
    expect(
      lines(judgeRedis({ ...on72, appendonly: false, waitAof: "aof-off" }, req), "refuse"),
    ).toEqual(["SUBMIT_WAITAOF=1 needs appendonly yes: WAITAOF waits for the AOF fsync"]);
    expect(judgeRedis({ ...on72, waitAof: "ok" }, req)).toEqual([
      {
        level: "info",
        line: "Redis 7.2.4, appendonly yes, appendfsync everysec, submits wait for the AOF fsync (SUBMIT_WAITAOF)",
      },
    ]);
  });
});

describe("compareVersions()", () => {
  it("compares numerically, part by part", () => {
    expect(compareVersions("7.0.15", "7.0.0")).toBeGreaterThan(0);
    expect(compareVersions("6.2.14", "7.0.0")).toBeLessThan(0);
    expect(compareVersions("7.10.0", "7.2.0")).toBeGreaterThan(0);
    expect(compareVersions("7.2", "7.2.0")).toBe(0);
  });
});
