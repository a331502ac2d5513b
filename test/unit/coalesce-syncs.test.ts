import { setImmediate as nextTurn } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { coalesceSyncs } from "../../src/worker/file-syncs.js";

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
  it("starts a lone caller's sync at once", async () => {
    const { runs, syncOnce } = fakeSync();
    const sync = coalesceSyncs(syncOnce);
    const first = sync("/d");
    expect(runs).toHaveLength(1);
    runs[0]?.finish();
    await first;
    // Idle again: the next caller starts one of its own at once.
    const again = sync("/d");
    expect(runs).toHaveLength(2);
    runs[1]?.finish();
    await again;
  });

  it("while one runs, starts one more for the callers of the turn, without waiting for it", async () => {
    const { runs, syncOnce } = fakeSync();
    const sync = coalesceSyncs(syncOnce);
    let firstDone = false;
    const first = sync("/d").then(() => {
      firstDone = true;
    });
    // Their entries came after the first began: they need a sync of their own, one for all.
    let laterDone = 0;
    const later = [sync("/d"), sync("/d"), sync("/d")];
    for (const p of later) void p.then(() => laterDone++);
    expect(runs).toHaveLength(1);
    await nextTurn();
    expect(runs).toHaveLength(2);
    runs[1]?.finish();
    await Promise.all(later);
    expect(laterDone).toBe(3);
    expect(firstDone).toBe(false);
    runs[0]?.finish();
    await first;
    expect(runs).toHaveLength(2);
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
    // The later caller gets a run of its own, not the failed one.
    await nextTurn();
    expect(runs).toHaveLength(3);
    runs[2]?.finish();
    await expect(a2).resolves.toBeUndefined();
    runs[1]?.finish();
    await expect(b).resolves.toBeUndefined();
  });
});
