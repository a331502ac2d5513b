#!/usr/bin/env node
/**
 * Dependency hygiene for CI, three checks; it exits 1 when any fails:
 *
 * 1. package-lock.json's integrity (scripts/lockfile.mjs): every package from
 *    the npm registry with a sha512 hash, package.json's exact pins locked.
 * 2. The known-bad list (security/known-bad.json, kept by hand): no listed
 *    version anywhere in the lockfile.
 * 3. `npm audit --omit=dev --json`: no high or critical advisory in production
 *    dependencies. When the audit endpoint itself cannot be used (offline, a
 *    proxy that refuses it: npm then prints an error object instead of a
 *    report), it warns clearly and does not fail on that alone, since that
 *    says nothing about the dependencies.
 *
 * The first two need no network, so the step can fail anywhere.
 *
 *   node scripts/audit.mjs                    # what .ci/run does
 *   node scripts/audit.mjs report.json        # judge a saved npm audit report instead
 *   node scripts/audit.mjs --root DIR [report.json]
 *                                             # another folder's package.json, lockfile and list
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { knownBadFindings, knownBadListProblems } from "./known-bad.mjs";
import { lockfileProblems, lockPackages } from "./lockfile.mjs";

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

/**
 * Checks 1 and 2 on the project in `root`; the exit code.
 * @param {string} root
 */
function offlineChecks(root) {
  const read = (file) => JSON.parse(readFileSync(path.join(root, file), "utf8"));
  const lock = read("package-lock.json");
  const problems = lockfileProblems(lock, read("package.json"));
  let code = 0;
  if (problems.length > 0) {
    process.stderr.write(
      `audit: FAILED: package-lock.json (${problems.length} ${problems.length === 1 ? "problem" : "problems"}):\n`,
    );
    for (const p of problems) process.stderr.write(`  ${p}\n`);
    code = 1;
  } else {
    process.stdout.write(
      `audit: ok: package-lock.json: ${lockPackages(lock).length} packages, all from the npm registry with sha512 hashes; package.json's pins locked\n`,
    );
  }
  const list = read("security/known-bad.json");
  const listProblems = knownBadListProblems(list);
  if (listProblems.length > 0) {
    process.stderr.write(
      `audit: FAILED: security/known-bad.json is malformed: ${listProblems.join("; ")}\n`,
    );
    return 1;
  }
  const bad = knownBadFindings(lock, list);
  if (bad.length > 0) {
    process.stderr.write(
      "audit: FAILED: package-lock.json holds known-bad versions (security/known-bad.json):\n",
    );
    for (const b of bad) process.stderr.write(`  ${b.path}: ${b.name}@${b.version}: ${b.reason}\n`);
    return 1;
  }
  process.stdout.write(
    `audit: ok: none of the ${list.packages.length} known-bad packages of security/known-bad.json is locked\n`,
  );
  return code;
}

/**
 * Check 3, on a saved report or by running npm audit in `root`; the exit code.
 * @param {string} root
 * @param {string | undefined} file
 */
function advisoryCheck(root, file) {
  let text;
  if (file !== undefined) {
    text = readFileSync(file, "utf8");
  } else {
    const run = spawnSync("npm", ["audit", "--omit=dev", "--json"], {
      cwd: root,
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
    });
    if (run.error) {
      process.stderr.write(
        `audit: WARNING: could not run npm audit (${run.error.message}); advisories NOT checked\n`,
      );
      return 0;
    }
    text = run.stdout;
  }
  const result = evaluateAudit(text);
  if (result.verdict === "unavailable") {
    process.stderr.write(
      `audit: WARNING: the npm audit endpoint is unavailable (${result.reason}); production dependencies were NOT audited for advisories. Run \`npm audit --omit=dev\` where the registry's audit endpoint is reachable.\n`,
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

function main() {
  const args = process.argv.slice(2);
  let root = path.resolve(import.meta.dirname, "..");
  const at = args.indexOf("--root");
  if (at >= 0) {
    root = path.resolve(args[at + 1] ?? ".");
    args.splice(at, 2);
  }
  const offline = offlineChecks(root);
  const advisories = advisoryCheck(root, args[0]);
  return Math.max(offline, advisories);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.exitCode = main();
}
