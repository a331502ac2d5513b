import { describe, expect, it, vi } from "vitest";
import { coalesceSyncs } from "../../src/worker/artifact-store.js";

/** A fake fsync whose runs the test finishes by hand. */
function fakeSync() {
  const runs: { folder: string; finish: (err?: Error) => void }[] = [];
  const syncOnce = (folder: string) =>
    new Promise<void>((resolve, reject) => {
      runs.push({ folder, finish: (err) => (err ? reject(err) : resolve()) });
    });
  return { runs, syncOnce };
}

describe("coalesceSyncs()", () => {
  it("starts one sync at once, and one more for all callers that came while it ran", async () => {
    const { runs, syncOnce } = fakeSync();
    const sync = coalesceSyncs(syncOnce);
    let firstDone = false;
    const first = sync("/d").then(() => {
      firstDone = true;
    });
    const later = [sync("/d"), sync("/d"), sync("/d")];
    expect(runs).toHaveLength(1);
    let laterDone = 0;
    for (const p of later) void p.then(() => laterDone++);
    runs[0]?.finish();
    await first;
    // The callers that came during the first run need a sync that began after their call.
    expect(firstDone).toBe(true);
    await vi.waitFor(() => expect(runs).toHaveLength(2));
    expect(laterDone).toBe(0);
    runs[1]?.finish();
    await Promise.all(later);
    expect(laterDone).toBe(3);
    expect(runs).toHaveLength(2);
    // Idle again: the next caller starts a sync of its own at once.
    const again = sync("/d");
    expect(runs).toHaveLength(3);
    runs[2]?.finish();
    await again;
  });

  it("keeps folders apart and hands a failure to the callers of that run only", async () => {
    const { runs, syncOnce } = fakeSync();
    const sync = coalesceSyncs(syncOnce);
    const a = sync("/a");
    const b = sync("/b");
    expect(runs.map((r) => r.folder)).toEqual(["/a", "/b"]);
    const a2 = sync("/a");
    runs[0]?.finish(new Error("EIO"));
    await expect(a).rejects.toThrow("EIO");
    // The queued caller gets a fresh run, not the failed one.
    await vi.waitFor(() => expect(runs).toHaveLength(3));
    runs[2]?.finish();
    await expect(a2).resolves.toBeUndefined();
    runs[1]?.finish();
    await expect(b).resolves.toBeUndefined();
  });
});
