/**
 * The known-bad list (security/known-bad.json, kept by hand): package versions
 * that were hijacked, sabotaged or emptied. A lockfile holding any of them
 * fails the audit, offline, whatever the advisory database says.
 */
import { lockPackages } from "./lockfile.mjs";

/**
 * Problems of the list itself: a malformed list must fail, not pass silently.
 * @param {unknown} list the parsed security/known-bad.json
 * @returns {string[]}
 */
export function knownBadListProblems(list) {
  const entries = /** @type {{ packages?: unknown }} */ (list)?.packages;
  if (!Array.isArray(entries) || entries.length === 0) {
    return ['no "packages" list'];
  }
  const problems = [];
  entries.forEach((e, i) => {
    const at = `packages[${i}]${typeof e?.name === "string" ? ` (${e.name})` : ""}`;
    if (typeof e?.name !== "string" || e.name === "") problems.push(`${at}: no name`);
    if (
      !Array.isArray(e?.versions) ||
      e.versions.length === 0 ||
      !e.versions.every((v) => typeof v === "string" && /^\d+\.\d+\.\d+\S*$/.test(v))
    ) {
      problems.push(`${at}: "versions" must list exact versions`);
    }
    if (typeof e?.reason !== "string" || e.reason.trim() === "") problems.push(`${at}: no reason`);
  });
  return problems;
}

/**
 * The lockfile's packages that the list names, with the list's reason.
 * @param {{ packages?: Record<string, Record<string, unknown>> }} lock
 * @param {{ packages: Array<{ name: string, versions: string[], reason: string }> }} list
 * @returns {Array<{ path: string, name: string, version: string, reason: string }>}
 */
export function knownBadFindings(lock, list) {
  const findings = [];
  for (const { path, name, entry } of lockPackages(lock)) {
    const bad = list.packages.find(
      (e) => e.name === name && e.versions.includes(String(entry.version)),
    );
    if (bad) findings.push({ path, name, version: String(entry.version), reason: bad.reason });
  }
  return findings;
}
