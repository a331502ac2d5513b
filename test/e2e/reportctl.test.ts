/**
 * reportctl as people and scripts run it: the real `bin/reportctl.mjs` in a
 * child process against a running service; in a pseudo-terminal (`script`)
 * for the progress bar; `--json` output; exit codes.
 */
import { execFile, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const bin = `${repoRoot}bin/reportctl.mjs`;

/** How a reportctl run ended. */
interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `reportctl args...` with stdout a pipe (not a TTY). */
function reportctl(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [bin, ...args],
      { cwd: repoRoot, env: { PATH: process.env.PATH ?? "", ...env }, timeout: 30_000 },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === "number" ? err.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Shell-quotes one argument. */
const q = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;

/** Runs reportctl inside a pseudo-terminal (util-linux `script`); its raw terminal output. */
function reportctlInPty(args: string[]): Promise<Run> {
  const command = [process.execPath, bin, ...args].map(q).join(" ");
  return new Promise((resolve) => {
    execFile(
      "script",
      ["-qefc", `stty cols 100; ${command}`, "/dev/null"],
      { cwd: repoRoot, env: { PATH: process.env.PATH ?? "", TERM: "xterm" }, timeout: 30_000 },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === "number" ? err.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

describe("reportctl", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ REPORT_PHASE_DELAY_MS: "150" });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("submit --watch follows the job and ends with exit 0 and the download URL (plain lines off a TTY)", async () => {
    const run = await reportctl([
      "--url",
      t.url,
      "submit",
      "--type",
      "weekly",
      "--user",
      "cli-1",
      "--filter",
      "region=eu",
      "--watch",
    ]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const lines = run.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^job [A-Za-z0-9_-]+ submitted$/);
    const jobId = lines[0]?.split(" ")[1] ?? "";
    expect(lines).toContain(`status: ${t.url}/v1/jobs/${jobId}`);
    expect(lines).toContain("PROGRESS   40% fetch-data");
    expect(lines).toContain("SUCCEEDED 100% completed");
    // No terminal control sequences in a pipe.
    expect(run.stdout).not.toContain("\r");
    expect(lines.at(-1)).toMatch(
      new RegExp(
        `^download: ${t.url}/v1/artifacts/${jobId}/1-[0-9a-f]{12}/weekly-cli-1\\.csv\\?expires=\\d+&signature=[\\w-]+$`,
      ),
    );
  });

  it("draws a progress bar with the phase name in a pseudo-terminal", async () => {
    const run = await reportctlInPty([
      "submit",
      "--url",
      t.url,
      "--protocol",
      "connect",
      "--type",
      "monthly",
      "--user",
      "cli-tty",
      "--watch",
    ]);
    expect(run.code).toBe(0);
    // The bar redraws itself in place (\r + erase line) through the phases to 100%.
    const redraw = "\r\u001b[2K";
    expect(run.stdout).toContain(
      `${redraw}[${"#".repeat(12)}${"-".repeat(18)}]  40%  PROGRESS fetch-data`,
    );
    expect(run.stdout).toContain(`${redraw}[${"#".repeat(30)}] 100%  SUCCEEDED completed`);
    expect(run.stdout).toMatch(
      /download: http:\/\/127\.0\.0\.1:\d+\/v1\/artifacts\/\S+\/monthly-cli-tty\.csv/,
    );
    expect(run.stdout).not.toContain("PROGRESS   40% fetch-data");
  });

  it("prints JSON that parses with --json: one document, or JSON lines for a watch", async () => {
    const submitted = await reportctl([
      "--url",
      t.url,
      "--json",
      "submit",
      "--type",
      "custom",
      "--user",
      "cli-json",
      "--filters",
      '{"metrics":["orders"]}',
      "--priority",
      "high",
      "--idempotency-key",
      `cli-${Date.now()}`,
      "--watch",
    ]);
    expect(submitted.code).toBe(0);
    const docs = submitted.stdout
      .trimEnd()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const first = docs[0] as { jobId: string; job: Record<string, unknown> };
    expect(first.job).toMatchObject({
      userId: "cli-json",
      reportType: "REPORT_TYPE_CUSTOM",
      priority: "JOB_PRIORITY_HIGH",
      filters: { metrics: ["orders"] },
    });
    expect(docs.slice(1).map((d) => d.type)).toEqual([
      "JOB_EVENT_TYPE_QUEUED",
      "JOB_EVENT_TYPE_STARTED",
      "JOB_EVENT_TYPE_PROGRESS",
      "JOB_EVENT_TYPE_PROGRESS",
      "JOB_EVENT_TYPE_SUCCEEDED",
    ]);

    const got = await reportctl(["--url", t.url, "get", first.jobId, "--json"]);
    expect(got.code).toBe(0);
    expect(JSON.parse(got.stdout)).toMatchObject({ id: first.jobId, state: "JOB_STATE_SUCCEEDED" });

    const listed = await reportctl([
      "list",
      "--url",
      t.url,
      "--json",
      "--user",
      "cli-json",
      "--state",
      "succeeded",
    ]);
    expect(listed.code).toBe(0);
    const page = JSON.parse(listed.stdout) as { jobs: { id: string }[] };
    expect(page.jobs.map((j) => j.id)).toEqual([first.jobId]);

    // Resumed from its last event: nothing more, exit by how the job ended.
    const watched = await reportctl(["--url", t.url, "--json", "watch", first.jobId]);
    expect(watched.code).toBe(0);
    expect(
      watched.stdout
        .trimEnd()
        .split("\n")
        .map((l) => JSON.parse(l)),
    ).toHaveLength(5);
  });

  it("exits 3 for an unknown job, with one line on stderr", async () => {
    const run = await reportctl(["--url", t.url, "get", "noSuchJob77"]);
    expect(run.code).toBe(3);
    expect(run.stdout).toBe("");
    expect(run.stderr).toBe('reportctl: not_found: job "noSuchJob77" not found\n');
    const json = await reportctl(["--url", t.url, "--json", "watch", "noSuchJob77"]);
    expect(json.code).toBe(3);
    expect(JSON.parse(json.stderr)).toEqual({
      error: { code: "not_found", message: 'job "noSuchJob77" not found' },
    });
  });

  it("exits 2 for usage errors, before calling the service", async () => {
    for (const args of [
      [],
      ["frobnicate"],
      ["get"],
      ["submit", "--user", "u"],
      ["submit", "--user", "u", "--type", "daily"],
      ["submit", "--user", "u", "--type", "weekly", "--filters", "[1]"],
      ["submit", "--user", "u", "--type", "weekly", "--run-at", "tomorrow"],
      ["get", "j1", "--bogus"],
      ["get", "j1", "--protocol", "smoke-signals"],
    ]) {
      const run = await reportctl(["--url", "http://127.0.0.1:9", ...args]);
      expect({ args, code: run.code }).toEqual({ args, code: 2 });
      expect(run.stderr).toContain("reportctl --help");
    }
  });

  it("exits 6 when the watched job FAILED, and 5 when the server rejects the request", async () => {
    const failed = await reportctl([
      "--url",
      t.url,
      "submit",
      "cli-fail",
      "weekly",
      "--filters",
      '{"end_date":"not a date"}',
      "--watch",
    ]);
    expect(failed.code).toBe(6);
    expect(failed.stdout).toMatch(/FAILED: .*end_date/);
    const rejected = await reportctl(["--url", t.url, "submit", "--type", "weekly", "--user", ""]);
    expect(rejected.code).toBe(2);
    const invalid = await reportctl([
      "--url",
      t.url,
      "submit",
      "--type",
      "weekly",
      "--user",
      "x".repeat(200),
    ]);
    expect(invalid.code).toBe(5);
    expect(invalid.stderr).toContain("invalid_argument");
  });

  it("exits 8 when the service cannot be reached", async () => {
    const run = await reportctl(["--url", "http://127.0.0.1:9", "get", "j1"]);
    expect(run.code).toBe(8);
    expect(run.stderr).toMatch(/^reportctl: unavailable: /);
  });

  it("exits 130 on Ctrl-C (SIGINT) during a watch, and --run-at keeps the job queued", async () => {
    const submitted = await reportctl([
      "--url",
      t.url,
      "--json",
      "submit",
      "--type",
      "weekly",
      "--user",
      "cli-later",
      "--run-at",
      "+1h",
    ]);
    expect(submitted.code).toBe(0);
    const { jobId, job } = JSON.parse(submitted.stdout) as {
      jobId: string;
      job: { runAt: string; state: string };
    };
    expect(job.state).toBe("JOB_STATE_QUEUED");
    expect(Date.parse(job.runAt) - Date.now()).toBeGreaterThan(59 * 60_000);
    const child = spawn(process.execPath, [bin, "--url", t.url, "watch", jobId], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH ?? "" },
    });
    try {
      let out = "";
      child.stdout.setEncoding("utf8");
      child.stdout.on("data", (c: string) => {
        out += c;
      });
      const exited = new Promise<number | null>((resolve) => child.once("close", resolve));
      await waitFor(() => out.includes("QUEUED"), { what: "the QUEUED line" });
      child.kill("SIGINT");
      expect(await exited).toBe(130);
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("prints help for the tool and for each command", async () => {
    const main = await reportctl(["--help"]);
    expect(main.code).toBe(0);
    expect(main.stdout).toContain("exit codes:");
    for (const command of ["submit", "get", "watch", "cancel", "retry", "list"]) {
      const run = await reportctl([command, "--help"]);
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(new RegExp(`^usage: reportctl ${command}`));
    }
  });
});
