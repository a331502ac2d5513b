/**
 * What the service needs of its Redis, checked once at start: a version with
 * the stream features WatchJob relies on (7.0), persistence that keeps
 * acknowledged jobs across a restart (AOF), no eviction, and WAITAOF (7.2)
 * when SUBMIT_WAITAOF asks for it.
 *
 * Facts come from CONFIG GET and, where CONFIG is disabled or renamed (as on
 * many managed Redis services), from INFO; the version from INFO server, else
 * HELLO. What none of them tells is named in the log, never guessed.
 * readRedisFacts talks to Redis; judgeRedis is pure.
 */

import type { RedisConfig } from "../config/config.js";
import type { RedisClient } from "./connections.js";

/** The oldest Redis the service runs on: XINFO STREAM's max-deleted-entry-id is 7.0. */
export const minRedisVersion = "7.0.0";
/** The oldest Redis with WAITAOF. */
export const minWaitAofVersion = "7.2.0";

/** What start-up could learn about the Redis server; a field is undefined when it could not be read. */
export interface RedisFacts {
  /** INFO server's redis_version (a compatible server reports the Redis version it matches). */
  version?: string;
  /** CONFIG appendonly, else INFO persistence's aof_enabled. */
  appendonly?: boolean;
  /** CONFIG appendfsync: always, everysec or no (not in INFO). */
  appendfsync?: string;
  /** CONFIG save: the RDB snapshot points ("" : none; not in INFO). */
  save?: string;
  /** CONFIG maxmemory-policy, else INFO memory's maxmemory_policy. */
  maxmemoryPolicy?: string;
  /** Why CONFIG GET failed (undefined: it answered). */
  configRefused?: string;
  /**
   * The answer to a WAITAOF probe (only when asked for): "ok", or why it
   * failed: "unknown" (no such command), "aof-off" (appendonly is off), or the
   * error's text.
   */
  waitAof?: string;
}

/** One finding of the check: refuse to start, or a line to log at this level. */
export interface Finding {
  level: "refuse" | "error" | "warn" | "info";
  line: string;
}

/** Reads what the check needs; never throws (an unreadable fact stays undefined). */
export async function readRedisFacts(
  redis: RedisClient,
  options: { probeWaitAof: boolean },
): Promise<RedisFacts> {
  const facts: RedisFacts = {};
  const info = async (section: string) => parseInfo(String(await redis.info(section)));
  try {
    facts.version = (await info("server")).redis_version;
  } catch {
    facts.version = await helloVersion(redis);
  }
  try {
    const reply = (await redis.call(
      "CONFIG",
      "GET",
      "appendonly",
      "appendfsync",
      "save",
      "maxmemory-policy",
    )) as string[];
    const config = new Map<string, string>();
    for (let i = 0; i + 1 < reply.length; i += 2)
      config.set(String(reply[i]), String(reply[i + 1]));
    const appendonly = config.get("appendonly");
    facts.appendonly = appendonly === undefined ? undefined : appendonly === "yes";
    facts.appendfsync = config.get("appendfsync");
    facts.save = config.get("save");
    facts.maxmemoryPolicy = config.get("maxmemory-policy");
  } catch (err) {
    facts.configRefused = firstLine(err);
  }
  if (facts.appendonly === undefined) {
    try {
      const aof = (await info("persistence")).aof_enabled;
      if (aof !== undefined) facts.appendonly = aof === "1";
    } catch {
      // Stays unknown: judgeRedis says so.
    }
  }
  if (facts.maxmemoryPolicy === undefined) {
    try {
      facts.maxmemoryPolicy = (await info("memory")).maxmemory_policy;
    } catch {
      // Stays unknown.
    }
  }
  if (options.probeWaitAof) facts.waitAof = await probeWaitAof(redis);
  return facts;
}

/**
 * Judges the facts against what the service needs and what the
 * configuration asks (REQUIRE_AOF, SUBMIT_WAITAOF). Pure.
 */
export function judgeRedis(
  facts: RedisFacts,
  config: Pick<RedisConfig, "requireAof" | "submitWaitAof">,
): Finding[] {
  const findings: Finding[] = [];
  const unchecked: string[] = [];
  const { version } = facts;

  if (version === undefined) {
    unchecked.push("version (needs 7.0 or newer)");
  } else if (compareVersions(version, minRedisVersion) < 0) {
    findings.push({
      level: "refuse",
      line: `Redis ${version} is too old: report-jobs needs Redis 7.0 or newer (WatchJob's resume reads XINFO STREAM max-deleted-entry-id, new in 7.0); upgrade Redis`,
    });
  }

  const saveText =
    facts.save === undefined
      ? "since the last RDB snapshot, if any"
      : facts.save.trim() === ""
        ? "ever acknowledged (RDB snapshots are off too)"
        : `since the last RDB snapshot (save "${facts.save}")`;
  if (facts.appendonly === false) {
    findings.push(
      config.requireAof
        ? {
            level: "refuse",
            line: "REQUIRE_AOF=true but Redis has appendonly no; turn AOF on (CONFIG SET appendonly yes, and appendonly yes in redis.conf) or unset REQUIRE_AOF",
          }
        : {
            level: "warn",
            line: `Redis has appendonly no: a Redis restart loses every acknowledged job ${saveText}, and then their report files; turn AOF on (appendonly yes), or set REQUIRE_AOF=true to refuse to start without it`,
          },
    );
  } else if (facts.appendonly === undefined) {
    if (config.requireAof) {
      findings.push({
        level: "refuse",
        line: "REQUIRE_AOF=true but whether Redis has appendonly on could not be read (CONFIG GET and INFO persistence both refused); allow one of them, or unset REQUIRE_AOF if your provider guarantees AOF",
      });
    } else {
      unchecked.push("appendonly (should be yes)");
    }
  } else if (facts.appendfsync === "no") {
    findings.push({
      level: "warn",
      line: "Redis has appendfsync no: the OS decides when the AOF reaches the disk, so a machine crash can lose about 30 s of acknowledged jobs; use appendfsync everysec or always",
    });
  }
  if (facts.appendonly !== false && facts.appendfsync === undefined) {
    unchecked.push("appendfsync (always or everysec)");
  }

  const policy = facts.maxmemoryPolicy;
  if (policy === undefined) {
    unchecked.push("maxmemory-policy (should be noeviction)");
  } else if (policy !== "noeviction") {
    findings.push({
      level: "error",
      line: `Redis maxmemory-policy is ${policy}; set it to noeviction or jobs can be lost (CONFIG SET maxmemory-policy noeviction)`,
    });
  }

  if (config.submitWaitAof > 0) {
    const refuse = (why: string) =>
      findings.push({ level: "refuse", line: `SUBMIT_WAITAOF=${config.submitWaitAof} ${why}` });
    if (version !== undefined && compareVersions(version, minWaitAofVersion) < 0) {
      refuse(`needs Redis 7.2 or newer (WAITAOF), and this is ${version}; unset SUBMIT_WAITAOF`);
    } else if (facts.waitAof === "unknown") {
      refuse("needs Redis 7.2 or newer (WAITAOF), and this Redis does not know WAITAOF");
    } else if (facts.waitAof === "aof-off" || facts.appendonly === false) {
      refuse("needs appendonly yes: WAITAOF waits for the AOF fsync");
    } else if (facts.waitAof !== undefined && facts.waitAof !== "ok") {
      refuse(`cannot be honoured: WAITAOF failed (${facts.waitAof})`);
    }
  }

  if (unchecked.length > 0) {
    const why =
      facts.configRefused !== undefined
        ? `CONFIG GET refused (${facts.configRefused}), and INFO did not tell`
        : "INFO refused";
    findings.push({
      level: "warn",
      line: `could not check Redis's ${unchecked.join(", ")}: ${why}; check them yourself`,
    });
  }
  if (!findings.some((f) => f.level === "refuse")) {
    findings.push({ level: "info", line: durabilitySummary(facts, config) });
  }
  return findings;
}

/** The one start-up line that says what an acknowledged submit survives here. */
function durabilitySummary(facts: RedisFacts, config: Pick<RedisConfig, "submitWaitAof">): string {
  const parts = [
    `Redis ${facts.version ?? "(version unknown)"}`,
    `appendonly ${facts.appendonly === undefined ? "unknown" : facts.appendonly ? "yes" : "no"}`,
  ];
  if (facts.appendonly !== false) parts.push(`appendfsync ${facts.appendfsync ?? "unknown"}`);
  if (config.submitWaitAof > 0) parts.push("submits wait for the AOF fsync (SUBMIT_WAITAOF)");
  return parts.join(", ");
}

/** Compares dotted versions numerically: negative when a < b. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(".").map((n) => Number.parseInt(n, 10) || 0);
  const pb = b.split(".").map((n) => Number.parseInt(n, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** `field:value` lines of an INFO reply. */
function parseInfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const at = line.indexOf(":");
    if (at > 0 && !line.startsWith("#")) out[line.slice(0, at)] = line.slice(at + 1).trim();
  }
  return out;
}

/** The version HELLO (Redis 6+) reports, when INFO is refused. */
async function helloVersion(redis: RedisClient): Promise<string | undefined> {
  try {
    const reply = (await redis.call("HELLO")) as unknown[];
    const at = reply.indexOf("version");
    return at >= 0 ? String(reply[at + 1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Runs WAITAOF the way a submit would (numlocal 1), with nothing to wait for. */
async function probeWaitAof(redis: RedisClient): Promise<string> {
  try {
    await redis.call("WAITAOF", "1", "0", "1000");
    return "ok";
  } catch (err) {
    const text = firstLine(err);
    if (/unknown command/i.test(text)) return "unknown";
    if (/appendonly/i.test(text)) return "aof-off";
    return text;
  }
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split("\n")[0] ?? "";
}
