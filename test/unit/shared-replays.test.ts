import { describe, expect, it } from "vitest";
import type { EventLog, Replay } from "../../src/events/event-log.js";
import { shareReplays } from "../../src/events/shared-replays.js";

/** A log that counts its reads and answers each with a fresh Replay. */
function countingLog() {
  const reads: (string | undefined)[] = [];
  const log: EventLog = {
    async replay(jobId, afterId): Promise<Replay | undefined> {
      reads.push(`${jobId}@${afterId ?? "-"}`);
      return { tenant: "t1", state: "queued", events: [] };
    },
  };
  return { log, reads };
}

describe("shareReplays()", () => {
  it("sends one read for replays of one job and cursor asked for in the same turn", async () => {
    const { log, reads } = countingLog();
    const shared = shareReplays(log);
    const answers = await Promise.all([
      shared.replay("a"),
      shared.replay("a"),
      shared.replay("a", "1-0"),
      shared.replay("b"),
      shared.replay("a"),
    ]);
    expect(reads.sort()).toEqual(["a@-", "a@1-0", "b@-"]);
    expect(answers[0]).toBe(answers[1]);
    expect(answers[0]).toBe(answers[4]);
    expect(answers[0]).not.toBe(answers[2]);
  });

  it("never joins a read already sent: a later replay reads again", async () => {
    const { log, reads } = countingLog();
    const shared = shareReplays(log);
    let release: (() => void) | undefined;
    const slow: EventLog = {
      async replay(jobId, afterId) {
        await new Promise<void>((r) => {
          release = r;
        });
        return log.replay(jobId, afterId);
      },
    };
    const sharedSlow = shareReplays(slow);
    const first = sharedSlow.replay("a");
    // Wait until the first read is under way, then ask again.
    while (release === undefined) await new Promise((r) => setImmediate(r));
    const started = release;
    release = undefined;
    const second = sharedSlow.replay("a");
    started();
    await first;
    while (release === undefined) await new Promise((r) => setImmediate(r));
    (release as () => void)();
    await second;
    expect(reads).toEqual(["a@-", "a@-"]);
    await shared.replay("c");
    expect(reads).toEqual(["a@-", "a@-", "c@-"]);
  });

  it("rejects at once, reading nothing, when the caller's signal has aborted", async () => {
    const { log, reads } = countingLog();
    const ctl = new AbortController();
    ctl.abort(new Error("gone"));
    await expect(shareReplays(log).replay("a", undefined, ctl.signal)).rejects.toThrow("gone");
    expect(reads).toEqual([]);
  });
});
