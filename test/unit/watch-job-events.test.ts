/**
 * watchJobEvents() with an in-memory log and hub, so the races between the
 * replay and live events can be staged exactly.
 */
import { describe, expect, it } from "vitest";
import { CursorTrimmedError, JobNotFoundError } from "../../src/domain/errors.js";
import type { JobEventType, JobEventView } from "../../src/domain/job.js";
import type { EventHub, EventListener } from "../../src/events/event-hub.js";
import type { EventLog, Replay } from "../../src/events/event-log.js";
import { type WatchItem, watchJobEvents } from "../../src/events/watch-job-events.js";

function ev(seq: number, type: JobEventType): JobEventView {
  const state = type === "queued" ? "queued" : type === "succeeded" ? "succeeded" : "running";
  return { id: `${seq}-0`, type, state, progress: 0, phase: "", attempt: 1, time: seq };
}

/** A job's log and live channel in memory. `duringReplay` runs inside each replay, before it answers. */
function fakeStorage(initial: JobEventView[], tenant = "t1") {
  const logged = [...initial];
  const listeners = new Set<EventListener>();
  let duringReplay: (() => void) | undefined;
  let replays = 0;
  const hub: EventHub = {
    async subscribe(_jobId, listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    get listenerCount() {
      return listeners.size;
    },
    async close() {},
  };
  const log: EventLog = {
    async replay(_jobId, afterId): Promise<Replay | undefined> {
      replays++;
      const after = afterId === undefined ? -1 : Number(afterId.split("-")[0]);
      const events = logged.filter((e) => Number(e.id.split("-")[0]) > after);
      const hook = duringReplay;
      duringReplay = undefined;
      hook?.();
      return { tenant, events } as Replay;
    },
  };
  return {
    hub,
    log,
    listeners,
    get replays() {
      return replays;
    },
    /** Appends and publishes, as the append script does. */
    append(e: JobEventView) {
      logged.push(e);
      for (const l of listeners) l.onEvent(e);
    },
    /** Logs only (an append whose message this process missed). */
    logOnly(e: JobEventView) {
      logged.push(e);
    },
    /** Publishes only (the message of an append the log already holds). */
    publish(e: JobEventView) {
      for (const l of listeners) l.onEvent(e);
    },
    resync() {
      for (const l of listeners) l.onResync();
    },
    onNextReplay(fn: () => void) {
      duringReplay = fn;
    },
  };
}

/** Runs a watch to its end (or fails after `ms`), collecting what it yields. */
async function collect(
  storage: ReturnType<typeof fakeStorage>,
  options: { afterEventId?: string; tenant?: string; ms?: number; keepaliveMs?: number } = {},
  onItem?: (item: WatchItem, items: WatchItem[]) => void,
): Promise<WatchItem[]> {
  const items: WatchItem[] = [];
  for await (const item of watchJobEvents(
    { log: storage.log, hub: storage.hub },
    {
      jobId: "job1",
      tenant: options.tenant ?? "t1",
      afterEventId: options.afterEventId,
      signal: AbortSignal.timeout(options.ms ?? 2000),
      keepaliveMs: options.keepaliveMs ?? 60_000,
    },
  )) {
    items.push(item);
    onItem?.(item, items);
  }
  return items;
}

const ids = (items: WatchItem[]) => items.filter((i) => i !== null).map((i) => i.id);

describe("watchJobEvents()", () => {
  it("replays a finished job and ends after its terminal event", async () => {
    const s = fakeStorage([ev(1, "queued"), ev(2, "started"), ev(3, "succeeded")]);
    expect(ids(await collect(s))).toEqual(["1-0", "2-0", "3-0"]);
    expect(s.listeners.size).toBe(0);
  });

  it("drops live copies of events the replay already delivered", async () => {
    const s = fakeStorage([ev(1, "queued"), ev(2, "started")]);
    // Published after the subscribe, before the replay answers: in both.
    s.onNextReplay(() => s.publish(ev(2, "started")));
    const items = await collect(s, {}, (item) => {
      if (item?.id === "2-0") {
        s.append(ev(3, "progress"));
        s.append(ev(4, "succeeded"));
      }
    });
    expect(ids(items)).toEqual(["1-0", "2-0", "3-0", "4-0"]);
  });

  it("ends after a terminal event whose live copy arrived during the replay", async () => {
    const s = fakeStorage([ev(1, "queued"), ev(2, "started"), ev(3, "succeeded")]);
    s.onNextReplay(() => s.publish(ev(3, "succeeded")));
    const items = await collect(s, { ms: 1000, keepaliveMs: 50 });
    expect(items).toEqual(expect.not.arrayContaining([null]));
    expect(ids(items)).toEqual(["1-0", "2-0", "3-0"]);
  });

  it("goes on past a terminal event that newer events follow (RetryJob)", async () => {
    const s = fakeStorage([ev(1, "queued"), ev(2, "failed"), ev(3, "queued")]);
    const items = await collect(s, {}, (item) => {
      if (item?.id === "3-0") s.append(ev(4, "succeeded"));
    });
    expect(ids(items)).toEqual(["1-0", "2-0", "3-0", "4-0"]);
  });

  it("delivers only events after the cursor", async () => {
    const s = fakeStorage([ev(1, "queued"), ev(2, "started"), ev(3, "succeeded")]);
    expect(ids(await collect(s, { afterEventId: "1-0" }))).toEqual(["2-0", "3-0"]);
  });

  it("re-reads the log from the last delivered event on resync, without duplicates", async () => {
    const s = fakeStorage([ev(1, "queued")]);
    const items = await collect(s, {}, (item) => {
      if (item?.id !== "1-0") return;
      // Logged while the subscriber was away: never published to us.
      s.logOnly(ev(2, "started"));
      s.logOnly(ev(3, "progress"));
      s.onNextReplay(() => {
        s.publish(ev(3, "progress")); // a late copy, also in the replay
        s.append(ev(4, "succeeded")); // live only
      });
      s.resync();
    });
    expect(ids(items)).toEqual(["1-0", "2-0", "3-0", "4-0"]);
  });

  it("yields null keepalives while nothing happens", async () => {
    const s = fakeStorage([ev(1, "queued")]);
    const controller = new AbortController();
    const items: WatchItem[] = [];
    await expect(
      (async () => {
        for await (const item of watchJobEvents(
          { log: s.log, hub: s.hub },
          { jobId: "job1", tenant: "t1", signal: controller.signal, keepaliveMs: 10 },
        )) {
          items.push(item);
          if (items.filter((i) => i === null).length === 2) controller.abort(new Error("done"));
        }
      })(),
    ).rejects.toThrow("done");
    expect(items).toEqual([expect.objectContaining({ id: "1-0" }), null, null]);
    expect(s.listeners.size).toBe(0);
  });

  it("is NOT_FOUND for another tenant's job, and lets go of its subscription", async () => {
    const s = fakeStorage([ev(1, "queued")], "t1");
    await expect(collect(s, { tenant: "t2" })).rejects.toBeInstanceOf(JobNotFoundError);
    expect(s.listeners.size).toBe(0);
  });

  it("passes a trimmed cursor's error on, and lets go of its subscription", async () => {
    const s = fakeStorage([ev(1, "queued")]);
    s.log.replay = async (_jobId, afterId) => {
      throw new CursorTrimmedError(afterId ?? "");
    };
    await expect(collect(s, { afterEventId: "1-0" })).rejects.toBeInstanceOf(CursorTrimmedError);
    expect(s.listeners.size).toBe(0);
  });
});
