import { setImmediate as nextTurn } from "node:timers/promises";
import { describe, expect, it } from "vitest";
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
  it("starts one sync for the callers of one turn, after their calls", async () => {
    const { runs, syncOnce } = fakeSync();
    const sync = coalesceSyncs(syncOnce);
    let done = 0;
    const callers = [sync("/d"), sync("/d"), sync("/d")];
    for (const p of callers) void p.then(() => done++);
    // Not before the turn ends: a caller of this turn may still make its entry.
    expect(runs).toHaveLength(0);
    await nextTurn();
    expect(runs).toHaveLength(1);
    runs[0]?.finish();
    await Promise.all(callers);
    expect(done).toBe(3);
    expect(runs).toHaveLength(1);
  });

  it("starts a later turn's sync at once, without waiting for a running one", async () => {
    const { runs, syncOnce } = fakeSync();
    const sync = coalesceSyncs(syncOnce);
    let firstDone = false;
    const first = sync("/d").then(() => {
      firstDone = true;
    });
    await nextTurn();
    expect(runs).toHaveLength(1);
    // The first still runs; this caller's entry came after it began, so it needs its own.
    let laterDone = false;
    const later = sync("/d").then(() => {
      laterDone = true;
    });
    await nextTurn();
    expect(runs).toHaveLength(2);
    runs[1]?.finish();
    await later;
    expect(laterDone).toBe(true);
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
    await nextTurn();
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
