/**
 * `npm run chaos` in small: a few seconds of load with a worker SIGKILL and a
 * Redis restart, on its own Redis and processes. The full run (minutes, every
 * fault) is `npm run chaos`, and 30 s of it in CI (.ci/run); this keeps the
 * suite itself working: it runs, prints its invariant table, and they hold.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

describe("npm run chaos", () => {
  it("runs a short seeded run with faults and prints a passing invariant table", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "scripts/chaos/main.ts"], {
      cwd: repoRoot,
      env: {
        ...process.env,
        CHAOS_SECONDS: "6",
        CHAOS_SEED: "12345",
        CHAOS_FAULTS: "worker-kill,redis-restart",
        CHAOS_FAULT_GAP_MS: "1000-1500",
        // Long enough that a job's end is seen before its record expires even
        // when a loaded machine slows the followers' polls (3 s was not).
        CHAOS_RETENTION_SECONDS: "10",
        CHAOS_SETTLE_SECONDS: "40",
        CHAOS_USERS: "2",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => {
      out += c;
    });
    child.stderr.setEncoding("utf8").on("data", (c: string) => {
      out += c;
    });
    const code = await new Promise<number | null>((resolve) => child.once("close", resolve));

    expect(out).toContain("CHAOS_SEED=12345");
    expect(out, out).toMatch(/fault (worker-kill|redis-restart)/);
    const table = out.slice(out.indexOf("chaos invariants"));
    const rows = table.split("\n").filter((l) => /^\| .* \| (pass|FAIL) +\|/.test(l));
    expect(rows.map((r) => r.split("|")[1]?.trim())).toEqual([
      "acknowledged jobs ended (or are provably live)",
      "no idempotency key made two jobs",
      "each job's log is valid, one terminal event per run",
      "failure reasons carry no Redis error text",
      "SUCCEEDED downloads answer 200 with their size",
      "acknowledged cancels hold",
      "acknowledged retries ran again",
      "watchers saw every event once, in order",
      "no process died but by a fault",
      "no call answered INTERNAL",
      "after retention Redis holds nothing of the jobs",
      "after retention no report files are left",
    ]);
    expect(
      rows.filter((r) => !/\| pass +\|/.test(r)),
      out,
    ).toEqual([]);
    expect(code, out).toBe(0);
  }, 120_000);
});
