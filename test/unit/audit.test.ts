import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { evaluateAudit } from "../../scripts/audit.mjs";

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));
const script = fileURLToPath(new URL("../../scripts/audit.mjs", import.meta.url));
const run = promisify(execFile);

/** Runs the script on a saved report: its exit code and stderr. */
async function judge(name: string): Promise<{ code: number; stderr: string; stdout: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [script, fixture(name)]);
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
