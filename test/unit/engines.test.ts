/**
 * The Node.js versions package.json's `engines` admits must run every
 * package of the lockfile: a dependency release that drops a Node version
 * we claim (as @bufbuild/protoc-gen-es 2.14 and the OpenTelemetry SDK 0.300
 * dropped Node 20) fails here, not on a user's machine.
 */
import { readFileSync } from "node:fs";
import semver from "semver";
import { describe, expect, it } from "vitest";

interface Manifest {
  engines?: { node?: string };
}
interface Lockfile {
  packages: Record<string, Manifest & { version?: string; dev?: boolean; optional?: boolean }>;
}

const root = new URL("../../", import.meta.url);
const manifest = JSON.parse(readFileSync(new URL("package.json", root), "utf8")) as Manifest;
const lockfile = JSON.parse(readFileSync(new URL("package-lock.json", root), "utf8")) as Lockfile;

describe("engines", () => {
  const ours = manifest.engines?.node ?? "";
  const oldest = semver.minVersion(ours)?.version;

  it("names a Node.js range that the Node.js running the tests is in", () => {
    expect(oldest, `package.json engines.node ${JSON.stringify(ours)}`).toBeDefined();
    expect(semver.satisfies(process.versions.node, ours)).toBe(true);
  });

  it("admits no Node.js version that a locked package refuses", () => {
    const refusing: string[] = [];
    for (const [where, entry] of Object.entries(lockfile.packages)) {
      const theirs = entry.engines?.node;
      // The root entry is package.json's own; some old packages list engines as an array.
      if (where === "" || typeof theirs !== "string") continue;
      // Development and optional packages too: `npm ci && npm test` installs them.
      if (!semver.subset(ours, theirs)) refusing.push(`${where}@${entry.version}: node ${theirs}`);
    }
    expect(refusing, `packages that refuse part of ${ours}`).toEqual([]);
  });
});
