/**
 * The artifact store on a real file system: a report is written under its
 * attempt's own name in the job's folder (no temporary file), small ones
 * with synchronous calls and large ones asynchronously, and an attempt's
 * file is never written twice.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createArtifactStore, syncWriteMaxBytes } from "../../src/worker/artifact-store.js";

describe("createArtifactStore()", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), "artifact-store-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("writes a small report under the attempt's name and nothing else", async () => {
    const store = createArtifactStore(path.join(dir, "@deploy"));
    const content = "date,sessions\r\n2026-01-01,5\r\n";
    const artifact = await store.put("job1", "1-abc", "weekly.csv", "text/csv", content);
    expect(artifact).toEqual({
      downloadPath: "/v1/artifacts/job1/1-abc/weekly.csv",
      contentType: "text/csv",
      sizeBytes: Buffer.byteLength(content),
    });
    expect(readdirSync(path.join(dir, "@deploy"))).toEqual(["job1"]);
    expect(readdirSync(path.join(dir, "@deploy", "job1"))).toEqual(["1-abc"]);
    expect(readFileSync(path.join(dir, "@deploy", "job1", "1-abc"), "utf8")).toBe(content);
  });

  it("writes a report above the synchronous limit, bytes as given", async () => {
    const store = createArtifactStore(dir);
    const content = new Uint8Array(syncWriteMaxBytes + 1000).map((_, i) => i % 251);
    const artifact = await store.put(
      "job2",
      "2-def",
      "big.bin",
      "application/octet-stream",
      content,
    );
    expect(artifact.sizeBytes).toBe(content.byteLength);
    const written = readFileSync(path.join(dir, "job2", "2-def"));
    expect(Buffer.compare(written, Buffer.from(content))).toBe(0);
    expect(readdirSync(path.join(dir, "job2"))).toEqual(["2-def"]);
  });

  it("puts a second attempt beside the first and never overwrites an attempt's file", async () => {
    const store = createArtifactStore(dir);
    await store.put("job3", "1-aaa", "r.csv", "text/csv", "first\n");
    await store.put("job3", "2-bbb", "r.csv", "text/csv", "second\n");
    await expect(store.put("job3", "1-aaa", "r.csv", "text/csv", "again\n")).rejects.toThrow(
      /EEXIST/,
    );
    expect(readFileSync(path.join(dir, "job3", "1-aaa"), "utf8")).toBe("first\n");
    expect(readFileSync(path.join(dir, "job3", "2-bbb"), "utf8")).toBe("second\n");
    expect((await store.entries("job3")).sort()).toEqual(["1-aaa", "2-bbb"]);
    await store.discard("job3", "1-aaa");
    expect(await store.entries("job3")).toEqual(["2-bbb"]);
  });

  it("refuses names that could leave their folder", async () => {
    const store = createArtifactStore(dir);
    await expect(store.put("job4", "../x", "r.csv", "text/csv", "x")).rejects.toThrow(/unsafe/);
    await expect(store.put("job4", "1-a", ".hidden", "text/csv", "x")).rejects.toThrow(/unsafe/);
    expect(readdirSync(dir)).toEqual([]);
  });
});
