/**
 * The artifact store on a real file system: a report is one file under its
 * attempt's own name directly in the deployment's folder (no temporary file,
 * no folder per job), small ones with synchronous calls and large ones
 * asynchronously, and an attempt's file is never written twice. Reports of
 * the layouts before (a folder per job) are listed and removed alike.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createArtifactStore, syncWriteMaxBytes } from "../../src/worker/artifact-store.js";

// Every report in a file of its own (REPORT_SEGMENTS=false, and reports above
// syncWriteMaxBytes): segments are report-segments.test.ts's.
const ownFiles = { segments: false } as const;

describe("createArtifactStore()", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), "artifact-store-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("writes a small report under the attempt's name and nothing else", async () => {
    const store = createArtifactStore(path.join(dir, "@deploy"), ownFiles);
    const content = "date,sessions\r\n2026-01-01,5\r\n";
    const artifact = await store.put("job1", "1-abc", "weekly.csv", "text/csv", content);
    expect(artifact).toEqual({
      downloadPath: "/v1/artifacts/job1/1-abc/weekly.csv",
      contentType: "text/csv",
      sizeBytes: Buffer.byteLength(content),
    });
    expect(readdirSync(path.join(dir, "@deploy"))).toEqual(["job1@1-abc"]);
    expect(readFileSync(path.join(dir, "@deploy", "job1@1-abc"), "utf8")).toBe(content);
  });

  it("writes a report above the synchronous limit, bytes as given", async () => {
    const store = createArtifactStore(dir, ownFiles);
    const content = new Uint8Array(syncWriteMaxBytes + 1000).map((_, i) => i % 251);
    const artifact = await store.put(
      "job2",
      "2-def",
      "big.bin",
      "application/octet-stream",
      content,
    );
    expect(artifact.sizeBytes).toBe(content.byteLength);
    const written = readFileSync(path.join(dir, "job2@2-def"));
    expect(Buffer.compare(written, Buffer.from(content))).toBe(0);
    expect(readdirSync(dir)).toEqual(["job2@2-def"]);
  });

  it("puts a second attempt beside the first and never overwrites an attempt's file", async () => {
    const store = createArtifactStore(dir, ownFiles);
    await store.put("job3", "1-aaa", "r.csv", "text/csv", "first\n");
    await store.put("job3", "2-bbb", "r.csv", "text/csv", "second\n");
    await expect(store.put("job3", "1-aaa", "r.csv", "text/csv", "again\n")).rejects.toThrow(
      /EEXIST/,
    );
    expect(readFileSync(path.join(dir, "job3@1-aaa"), "utf8")).toBe("first\n");
    expect(readFileSync(path.join(dir, "job3@2-bbb"), "utf8")).toBe("second\n");
    expect((await store.entries("job3")).sort()).toEqual(["1-aaa", "2-bbb"]);
    await store.discard("job3", "1-aaa");
    expect(await store.entries("job3")).toEqual(["2-bbb"]);
  });

  it("lists, and removes, reports of both layouts: files by job and attempt, and job folders", async () => {
    const store = createArtifactStore(dir, ownFiles);
    await store.put("job5", "1-aaa", "r.csv", "text/csv", "new\n");
    await store.put("job6", "1-ccc", "r.csv", "text/csv", "new\n");
    // As the layouts before wrote them: <job>/<attempt> and <job>/<attempt>/<file>.
    mkdirSync(path.join(dir, "job5", "0-old"), { recursive: true });
    writeFileSync(path.join(dir, "job5", "0-old", "r.csv"), "old\n");
    writeFileSync(path.join(dir, "job5", "1-bbb"), "old\n");
    writeFileSync(path.join(dir, "job5", ".r.csv.tmp"), "half\n");
    mkdirSync(path.join(dir, "job7"));
    writeFileSync(path.join(dir, "job7", "1-ddd"), "old\n");
    // Names that no report or job folder can have: never listed.
    writeFileSync(path.join(dir, "a@b@c"), "x");
    writeFileSync(path.join(dir, ".marker"), "x");

    const listed = await store.list();
    expect([...listed.keys()].sort()).toEqual(["job5", "job6", "job7"]);
    expect(listed.get("job5")).toEqual({ tags: ["1-aaa"], folder: true });
    expect(listed.get("job6")).toEqual({ tags: ["1-ccc"], folder: false });
    expect(listed.get("job7")).toEqual({ tags: [], folder: true });
    expect((await store.entries("job5", listed.get("job5"))).sort()).toEqual([
      ".r.csv.tmp",
      "0-old",
      "1-aaa",
      "1-bbb",
    ]);

    await store.removeEntries("job5", ["0-old", "1-aaa", ".r.csv.tmp"]);
    expect(readdirSync(dir).sort()).toEqual([".marker", "a@b@c", "job5", "job6@1-ccc", "job7"]);
    expect(readdirSync(path.join(dir, "job5"))).toEqual(["1-bbb"]);
    await store.remove("job5");
    await store.remove("job6", ["1-ccc"]);
    await store.discard("job7", "1-ddd");
    expect(readdirSync(dir).sort()).toEqual([".marker", "a@b@c", "job7"]);
    expect(readdirSync(path.join(dir, "job7"))).toEqual([]);
  });

  it("refuses names that could leave their folder", async () => {
    const store = createArtifactStore(dir, ownFiles);
    await expect(store.put("job4", "../x", "r.csv", "text/csv", "x")).rejects.toThrow(/unsafe/);
    await expect(store.put("job4", "1-a", ".hidden", "text/csv", "x")).rejects.toThrow(/unsafe/);
    expect(readdirSync(dir)).toEqual([]);
  });
});
