#!/usr/bin/env node
/**
 * Dependency hygiene for CI: runs `npm audit --omit=dev --json` and fails
 * (exit 1) on any high or critical advisory in production dependencies.
 * When the audit endpoint itself cannot be used (offline, a proxy that
 * refuses it: npm then prints an error object instead of a report), it warns
 * clearly and exits 0, since that says nothing about the dependencies.
 *
 *   node scripts/audit.mjs            # what .ci/run does
 *   node scripts/audit.mjs report.json  # judge a saved report instead
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** Severities that fail the build. */
export const failingSeverities = ["high", "critical"];

/**
 * Judges the text npm audit --json printed.
 * @param {string} text
 * @returns {{ verdict: "pass" | "fail" | "unavailable", counts: Record<string, number>, findings: Array<{ name: string, severity: string, advisories: string[] }>, reason?: string }}
 */
export function evaluateAudit(text) {
  const empty = { counts: {}, findings: [] };
  let report;
  try {
    report = JSON.parse(text);
  } catch {
    return { verdict: "unavailable", ...empty, reason: "npm audit printed no JSON report" };
  }
  const counts = report?.metadata?.vulnerabilities;
  if (
    report === null ||
    typeof report !== "object" ||
    typeof counts !== "object" ||
    counts === null
  ) {
    // npm prints {"message": "405 Method Not Allowed - POST …", "statusCode": 405, …}
    // or {"error": {"code": "ENOAUDIT", "summary": …}} when it got no report.
    const reason =
      report?.message ??
      report?.error?.summary ??
      report?.error?.code ??
      "no audit report in the output";
    return { verdict: "unavailable", ...empty, reason: String(reason) };
  }
  const findings = Object.values(report.vulnerabilities ?? {})
    .filter((v) => failingSeverities.includes(v?.severity))
    .map((v) => ({
      name: String(v.name),
      severity: String(v.severity),
      advisories: (v.via ?? [])
        .filter((x) => typeof x === "object" && x !== null)
        .map((x) => `${x.title ?? "advisory"}${x.url ? ` (${x.url})` : ""}`),
    }));
  const failing = failingSeverities.reduce((n, s) => n + Number(counts[s] ?? 0), 0);
  return {
    verdict: failing > 0 || findings.length > 0 ? "fail" : "pass",
    counts,
    findings,
  };
}

function main() {
  const file = process.argv[2];
  let text;
  if (file !== undefined) {
    text = readFileSync(file, "utf8");
  } else {
    const run = spawnSync("npm", ["audit", "--omit=dev", "--json"], {
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
    });
    if (run.error) {
      process.stderr.write(
        `audit: WARNING: could not run npm audit (${run.error.message}); dependencies NOT audited\n`,
      );
      return 0;
    }
    text = run.stdout;
  }
  const result = evaluateAudit(text);
  if (result.verdict === "unavailable") {
    process.stderr.write(
      `audit: WARNING: the npm audit endpoint is unavailable (${result.reason}); production dependencies were NOT audited. Run \`npm audit --omit=dev\` where the registry's audit endpoint is reachable.\n`,
    );
    return 0;
  }
  const summary = ["critical", "high", "moderate", "low", "info"]
    .map((s) => `${result.counts[s] ?? 0} ${s}`)
    .join(", ");
  if (result.verdict === "fail") {
    process.stderr.write(
      `audit: FAILED: production dependencies have high or critical advisories (${summary})\n`,
    );
    for (const f of result.findings) {
      process.stderr.write(
        `  ${f.name} (${f.severity})${f.advisories.length ? `: ${f.advisories.join("; ")}` : ""}\n`,
      );
    }
    return 1;
  }
  process.stdout.write(
    `audit: ok: no high or critical advisories in production dependencies (${summary})\n`,
  );
  return 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.exitCode = main();
}
