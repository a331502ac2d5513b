import { execFile } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { evaluateAudit } from "../../scripts/audit.mjs";
import {
  type KnownBadList,
  knownBadFindings,
  knownBadListProblems,
} from "../../scripts/known-bad.mjs";
import { type Lockfile, lockfileProblems, tarballUrl } from "../../scripts/lockfile.mjs";

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));
const repo = (file: string) => fileURLToPath(new URL(`../../${file}`, import.meta.url));
const script = repo("scripts/audit.mjs");
const run = promisify(execFile);
const readJson = (file: string): unknown => JSON.parse(readFileSync(file, "utf8"));

/** Runs the script (on a saved report): its exit code and output. */
async function judge(
  name: string,
  args: string[] = [],
): Promise<{ code: number; stderr: string; stdout: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [script, ...args, fixture(name)]);
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe("scripts/audit.mjs", () => {
  it("fails on high or critical advisories and names them", async () => {
    const v = evaluateAudit(readFileSync(fixture("npm-audit-high.json"), "utf8"));
    expect(v.verdict).toBe("fail");
    expect(v.findings.map((f) => f.name)).toEqual(["example-parser", "example-framework"]);
    expect(v.findings[0]?.advisories).toEqual([
      "Prototype pollution in example-parser (https://github.com/advisories/GHSA-xxxx-xxxx-xxxx)",
    ]);
    const out = await judge("npm-audit-high.json");
    expect(out.code).toBe(1);
    expect(out.stderr).toContain("audit: FAILED");
    expect(out.stderr).toContain("example-parser (high)");
  });

  it("passes with only moderate advisories", async () => {
    expect(evaluateAudit(readFileSync(fixture("npm-audit-moderate.json"), "utf8")).verdict).toBe(
      "pass",
    );
    const out = await judge("npm-audit-moderate.json");
    expect(out.code).toBe(0);
    expect(out.stdout).toContain("0 critical, 0 high, 1 moderate");
  });

  it("warns without failing when the audit endpoint refuses (npm's 405 error object)", async () => {
    const v = evaluateAudit(readFileSync(fixture("npm-audit-405.json"), "utf8"));
    expect(v.verdict).toBe("unavailable");
    expect(v.reason).toMatch(/^405 Method Not Allowed/);
    expect(evaluateAudit("").verdict).toBe("unavailable");
    expect(evaluateAudit('{"error":{"code":"ENOAUDIT","summary":"no endpoint"}}')).toMatchObject({
      verdict: "unavailable",
      reason: "no endpoint",
    });
    const out = await judge("npm-audit-405.json");
    expect(out.code).toBe(0);
    expect(out.stderr).toMatch(/WARNING: the npm audit endpoint is unavailable .*NOT audited/);
  });

  it("fails on the counts even when the per-package list is empty", () => {
    const report = {
      auditReportVersion: 2,
      vulnerabilities: {},
      metadata: { vulnerabilities: { critical: 1, high: 0 } },
    };
    expect(evaluateAudit(JSON.stringify(report)).verdict).toBe("fail");
  });
});

/** The fixture project (test/fixtures/lockfile), fresh copies to mutate. */
const fixtureLock = () => readJson(fixture("lockfile/package-lock.json")) as Lockfile;
const fixturePackage = () =>
  readJson(fixture("lockfile/package.json")) as Record<string, Record<string, string>>;
/** One entry of a lockfile, to mutate. */
const entry = (lock: Lockfile, key: string) => lock.packages?.[key] as Record<string, unknown>;

describe("package-lock.json integrity (scripts/lockfile.mjs)", () => {
  it("passes the fixture and this repository's own lockfile", () => {
    expect(lockfileProblems(fixtureLock(), fixturePackage())).toEqual([]);
    expect(
      lockfileProblems(
        readJson(repo("package-lock.json")) as Lockfile,
        readJson(repo("package.json")) as Record<string, unknown>,
      ),
    ).toEqual([]);
  });

  it("fails on a package from anywhere but the registry's own tarball of it", () => {
    const git = fixtureLock();
    entry(git, "node_modules/left-pad").resolved = "git+ssh://git@example.com/left-pad.git#abc";
    const other = fixtureLock();
    // The registry, but another package's tarball under this name.
    entry(other, "node_modules/left-pad").resolved = tarballUrl("evil-pad", "1.3.0");
    const link = fixtureLock();
    entry(link, "node_modules/@scope/util").link = true;
    entry(link, "node_modules/@scope/util").resolved = "../util";
    expect(lockfileProblems(git, fixturePackage())).toEqual([
      "node_modules/left-pad (left-pad@1.3.0): resolved from git+ssh://git@example.com/left-pad.git#abc, not the registry's https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz",
    ]);
    expect(lockfileProblems(other, fixturePackage())[0]).toMatch(/evil-pad-1\.3\.0\.tgz, not/);
    expect(lockfileProblems(link, fixturePackage())).toEqual([
      "node_modules/@scope/util (@scope/util@2.0.1): a link to ../util, not a package from the registry",
    ]);
    expect(tarballUrl("@scope/util", "2.0.1")).toBe(
      "https://registry.npmjs.org/@scope/util/-/util-2.0.1.tgz",
    );
  });

  it("fails on a missing, sha1-only or truncated integrity", () => {
    for (const integrity of [undefined, "sha1-2jmj7l5rSw0yVb/vlWAYkK/YBwk=", "sha512-AAAA"]) {
      const lock = fixtureLock();
      entry(lock, "node_modules/event-stream").integrity = integrity;
      expect(lockfileProblems(lock, fixturePackage()), String(integrity)).toEqual([
        `node_modules/event-stream (event-stream@3.3.4): no sha512 integrity (${integrity ?? "none"})`,
      ]);
    }
  });

  it("fails on ranges in package.json and on a lockfile out of step with its pins", () => {
    const ranged = fixturePackage();
    (ranged.dependencies as Record<string, string>)["left-pad"] = "^1.3.0";
    (ranged.overrides as Record<string, string>)["left-pad"] = "~1.3.0";
    expect(lockfileProblems(fixtureLock(), ranged)).toEqual([
      'package.json dependencies: left-pad is "^1.3.0", not an exact version',
      'package.json overrides: left-pad is "~1.3.0", not an exact version',
    ]);

    const bumped = fixturePackage();
    (bumped.devDependencies as Record<string, string>)["test-runner"] = "4.2.0";
    expect(lockfileProblems(fixtureLock(), bumped)).toEqual([
      'out of sync with package.json: devDependencies.test-runner is "4.1.0" in the lockfile, "4.2.0" in package.json (run npm install)',
      "node_modules/test-runner is locked at 4.1.0, package.json pins 4.2.0",
    ]);

    const extra = fixtureLock();
    (entry(extra, "").dependencies as Record<string, string>).extra = "1.0.0";
    expect(lockfileProblems(extra, fixturePackage())).toEqual([
      "out of sync with package.json: dependencies.extra is in the lockfile only (run npm install)",
    ]);

    expect(lockfileProblems({ lockfileVersion: 1 }, fixturePackage())).toEqual([
      'lockfileVersion 1 has no "packages": regenerate it with npm 7 or newer',
    ]);
  });
});

describe("the known-bad list (security/known-bad.json, scripts/known-bad.mjs)", () => {
  const list = readJson(repo("security/known-bad.json")) as KnownBadList;

  it("is well-formed, with a reason for every entry", () => {
    expect(knownBadListProblems(list)).toEqual([]);
    expect(list.packages.map((p) => p.name)).toEqual(
      expect.arrayContaining(["event-stream", "ua-parser-js", "node-ipc", "colors", "faker"]),
    );
    expect(knownBadListProblems({ packages: [{ name: "x", versions: ["^1.0.0"] }] })).toEqual([
      'packages[0] (x): "versions" must list exact versions',
      "packages[0] (x): no reason",
    ]);
    expect(knownBadListProblems({})).toEqual(['no "packages" list']);
  });

  it("finds listed versions anywhere in the lockfile, nested and aliased ones included", () => {
    expect(knownBadFindings(fixtureLock(), list)).toEqual([]);
    const lock = fixtureLock();
    entry(lock, "node_modules/event-stream").version = "3.3.6";
    entry(lock, "node_modules/test-runner/node_modules/colors").version = "1.4.2";
    // Installed under another name through an npm: alias.
    entry(lock, "node_modules/left-pad").name = "faker";
    entry(lock, "node_modules/left-pad").version = "6.6.6";
    const found = knownBadFindings(lock, list);
    expect(found.map((f) => `${f.path} ${f.name}@${f.version}`)).toEqual([
      "node_modules/event-stream event-stream@3.3.6",
      "node_modules/left-pad faker@6.6.6",
      "node_modules/test-runner/node_modules/colors colors@1.4.2",
    ]);
    expect(found[0]?.reason).toMatch(/flatmap-stream/);
  });
});

describe("scripts/audit.mjs on a project", () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  /** A project folder: the fixture's package.json, `lock`, and this repository's list. */
  function project(lock: Lockfile): string {
    const dir = mkdtempSync(path.join(tmpdir(), "audit-"));
    dirs.push(dir);
    cpSync(fixture("lockfile/package.json"), path.join(dir, "package.json"));
    writeFileSync(path.join(dir, "package-lock.json"), JSON.stringify(lock));
    mkdirSync(path.join(dir, "security"));
    cpSync(repo("security/known-bad.json"), path.join(dir, "security/known-bad.json"));
    return dir;
  }

  it("fails on a known-bad version even when the audit endpoint is unavailable", async () => {
    const lock = fixtureLock();
    entry(lock, "node_modules/event-stream").version = "3.3.6";
    const out = await judge("npm-audit-405.json", ["--root", project(lock)]);
    expect(out.code).toBe(1);
    expect(out.stderr).toContain(
      "audit: FAILED: package-lock.json holds known-bad versions (security/known-bad.json):\n  node_modules/event-stream: event-stream@3.3.6: Nov 2018:",
    );
    expect(out.stderr).toMatch(/WARNING: the npm audit endpoint is unavailable/);
  });

  it("fails on a lockfile problem, listing each", async () => {
    const lock = fixtureLock();
    delete entry(lock, "node_modules/left-pad").integrity;
    const out = await judge("npm-audit-moderate.json", ["--root", project(lock)]);
    expect(out.code).toBe(1);
    expect(out.stderr).toContain(
      "audit: FAILED: package-lock.json (1 problem):\n  node_modules/left-pad (left-pad@1.3.0): no sha512 integrity (none)\n",
    );
  });

  it("passes a clean project, saying what it checked", async () => {
    const out = await judge("npm-audit-moderate.json", ["--root", project(fixtureLock())]);
    expect(out.code).toBe(0);
    expect(out.stdout).toContain(
      "audit: ok: package-lock.json: 5 packages, all from the npm registry with sha512 hashes",
    );
    expect(out.stdout).toMatch(/audit: ok: none of the \d+ known-bad packages/);
  });
});
