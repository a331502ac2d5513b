/**
 * Report names on disk: an attempt's report is `<job id>@<attempt tag>` in
 * the deployment's folder, splits back into both, refuses names that could
 * leave the folder, and is no name that a janitor of the layouts before
 * would take for a job's folder (it would delete it: no such job).
 */
import path from "node:path";
import { describe, expect, it } from "vitest";
import {
  artifactFolder,
  artifactPath,
  newSegmentName,
  parseReportName,
  parseSegmentName,
  publishedEntry,
  reportFile,
  segmentFile,
  segmentFolder,
} from "../../src/domain/artifact-paths.js";

describe("reportFile()", () => {
  it("names the attempt's file by job and attempt, in the deployment's folder", () => {
    expect(reportFile("/a/@d", "AbC_-9", "1-0f0f0f", "weekly.csv")).toBe(
      path.join("/a/@d", "AbC_-9@1-0f0f0f"),
    );
    expect(reportFile("/a/@d", "AbC_-9", "1-0f0f0f")).toBe(path.join("/a/@d", "AbC_-9@1-0f0f0f"));
  });

  it("refuses names that could leave the folder or hide in it", () => {
    for (const [job, tag, file] of [
      ["../x", "1-a", "r.csv"],
      ["j", "../../x", "r.csv"],
      ["j", "1-a", "../r.csv"],
      [".j", "1-a", "r.csv"],
      ["j", "a/b", "r.csv"],
      ["j@k", "1-a", "r.csv"],
      ["j", "1@a", "r.csv"],
      ["", "1-a", "r.csv"],
    ] as const) {
      expect(reportFile("/a", job, tag, file), `${job} ${tag} ${file}`).toBeUndefined();
    }
  });
});

describe("parseReportName()", () => {
  it("splits a report's name back into its job and attempt", () => {
    const name = path.basename(reportFile("/a", "job_1", "2-abcdef") ?? "");
    expect(parseReportName(name)).toEqual({ jobId: "job_1", attemptTag: "2-abcdef" });
    // The published download path names the same attempt.
    expect(publishedEntry(artifactPath("job_1", "r.csv", "2-abcdef"))).toBe("2-abcdef");
  });

  it("answers undefined for every other entry", () => {
    for (const name of ["job_1", "@prefix", "a@", "@b", "a@b@c", ".a@b", "a@.b", "a@b/c"]) {
      expect(parseReportName(name), name).toBeUndefined();
    }
  });

  it("is never a job's folder to the janitors of the layouts before", () => {
    // They remove `artifactFolder(dir, entry)` for every entry without a
    // job record, and skip entries for which it is undefined.
    const name = path.basename(reportFile("/a", "job_1", "2-abcdef") ?? "");
    expect(artifactFolder("/a", name)).toBeUndefined();
  });
});

describe("segments", () => {
  it("sit in a folder that no janitor, of this layout or those before, takes for a job's or a report", () => {
    const folder = path.basename(segmentFolder("/a/@d"));
    expect(segmentFolder("/a/@d")).toBe(path.join("/a/@d", folder));
    // Janitors before segments remove `artifactFolder(dir, entry)` for
    // every entry without a job record, and skip entries for which it is undefined.
    expect(artifactFolder("/a/@d", folder)).toBeUndefined();
    expect(parseReportName(folder)).toBeUndefined();
  });

  it("have names that carry their creation time, and nothing else is one", () => {
    const name = newSegmentName(1_764_000_000_123, "0123456789abcdef");
    expect(parseSegmentName(name)).toBe(1_764_000_000_123);
    expect(segmentFile("/a/@d", name)).toBe(path.join(segmentFolder("/a/@d"), name));
    for (const other of [
      "",
      "s-1-abc",
      "../s-1764000000123-0123456789abcdef",
      "job@1-a",
      `${name}/x`,
    ]) {
      expect(parseSegmentName(other), other).toBeUndefined();
      expect(segmentFile("/a/@d", other), other).toBeUndefined();
    }
  });
});
