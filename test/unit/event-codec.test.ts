import { describe, expect, it } from "vitest";
import {
  compareStreamIds,
  decodeEvent,
  encodeEvent,
  encodeEventJson,
  type NewJobEvent,
  parseStreamId,
} from "../../src/events/event-codec.js";

/** What Redis hands back for an XADD of `fields`: the same flat list. */
function roundTrip(id: string, e: NewJobEvent) {
  return decodeEvent(id, encodeEvent(e));
}

describe("encodeEvent() and decodeEvent()", () => {
  it("round-trips a minimal event", () => {
    const e: NewJobEvent = {
      type: "queued",
      state: "queued",
      progress: 0,
      phase: "",
      attempt: 0,
      time: 1_732_812_345_678,
    };
    expect(roundTrip("1732812345678-0", e)).toEqual({ id: "1732812345678-0", ...e });
  });

  it("round-trips a success with its result", () => {
    const e: NewJobEvent = {
      type: "succeeded",
      state: "succeeded",
      progress: 100,
      phase: "completed",
      attempt: 2,
      time: 1_732_812_345_999,
      result: {
        downloadPath: "/v1/artifacts/abc/weekly-u1.csv",
        contentType: "text/csv",
        sizeBytes: 0,
      },
    };
    expect(roundTrip("1-1", e)).toEqual({ id: "1-1", ...e });
  });

  it("round-trips a retry with its error and next attempt time", () => {
    const e: NewJobEvent = {
      type: "retrying",
      state: "retrying",
      progress: 40,
      phase: "fetch-data",
      attempt: 1,
      time: 10,
      error: "downstream timed out, with, commas and = signs",
      nextAttemptAt: 2010,
    };
    expect(roundTrip("10-0", e)).toEqual({ id: "10-0", ...e });
  });

  it("round-trips every event type and state", () => {
    const types = [
      "queued",
      "started",
      "progress",
      "retrying",
      "succeeded",
      "failed",
      "cancelled",
    ] as const;
    const states = ["queued", "running", "retrying", "succeeded", "failed", "cancelled"] as const;
    for (const type of types) {
      for (const state of states) {
        const e: NewJobEvent = { type, state, progress: 5, phase: "p", attempt: 1, time: 1 };
        expect(roundTrip("1-0", e)).toEqual({ id: "1-0", ...e });
      }
    }
  });

  it("encodes as flat field/value pairs", () => {
    const fields = encodeEvent({
      type: "failed",
      state: "failed",
      progress: 80,
      phase: "render",
      attempt: 5,
      time: 7,
      error: "boom",
    });
    expect(fields.length % 2).toBe(0);
    expect(fields.every((f) => typeof f === "string")).toBe(true);
  });

  it("ignores unknown fields", () => {
    const fields = [
      ...encodeEvent({
        type: "started",
        state: "running",
        progress: 5,
        phase: "started",
        attempt: 1,
        time: 3,
      }),
      "future-field",
      "whatever",
    ];
    expect(decodeEvent("3-0", fields)).toEqual({
      id: "3-0",
      type: "started",
      state: "running",
      progress: 5,
      phase: "started",
      attempt: 1,
      time: 3,
    });
  });
});

describe("encodeEventJson()", () => {
  it("is the JSON list of the fields without its brackets, as the hub parses it with the entry id", () => {
    const fields = encodeEvent({
      type: "retrying",
      state: "retrying",
      progress: 5,
      phase: 'a "quoted" \\ phase\n✓',
      attempt: 1,
      time: 2,
      error: "</script>",
    });
    const json = encodeEventJson(fields);
    expect(json.startsWith('"t",')).toBe(true);
    expect(JSON.parse(`["1-0",[${json}]]`)).toEqual(["1-0", fields]);
  });

  it("says a lone surrogate as U+FFFD, as its UTF-8 bytes in the stream entry do", () => {
    const json = encodeEventJson(["ph", "a\ud800b", "e", "\udc00", "ok", "\ud83d\ude00"]);
    expect(JSON.parse(`[${json}]`)).toEqual([
      "ph",
      "a\ufffdb",
      "e",
      "\ufffd",
      "ok",
      "\ud83d\ude00",
    ]);
    expect(Buffer.from(JSON.parse(`[${json}]`)[1]).equals(Buffer.from("a\ud800b"))).toBe(true);
  });
});

describe("parseStreamId()", () => {
  it("parses ms-seq and bare ms", () => {
    expect(parseStreamId("1732812345678-3")).toEqual([1732812345678n, 3n]);
    expect(parseStreamId("42")).toEqual([42n, 0n]);
  });

  it("rejects anything else", () => {
    for (const bad of ["", "abc", "1-", "-1", "1-2-3", "1.5-0", " 1-0", "1-0 ", "0x10-0"]) {
      expect(parseStreamId(bad), JSON.stringify(bad)).toBeUndefined();
    }
  });
});

describe("compareStreamIds()", () => {
  it("orders by milliseconds, then sequence, numerically", () => {
    expect(compareStreamIds("9-0", "10-0")).toBeLessThan(0);
    expect(compareStreamIds("10-0", "9-0")).toBeGreaterThan(0);
    expect(compareStreamIds("5-2", "5-10")).toBeLessThan(0);
    expect(compareStreamIds("5-10", "5-2")).toBeGreaterThan(0);
    expect(compareStreamIds("6-0", "5-99")).toBeGreaterThan(0);
  });

  it("treats equal ids (and a bare ms as seq 0) as equal", () => {
    expect(compareStreamIds("5-1", "5-1")).toBe(0);
    expect(compareStreamIds("5", "5-0")).toBe(0);
  });

  it("handles ids beyond Number.MAX_SAFE_INTEGER exactly", () => {
    expect(compareStreamIds("9007199254740993-0", "9007199254740992-0")).toBeGreaterThan(0);
    expect(compareStreamIds("1-9007199254740993", "1-9007199254740992")).toBeGreaterThan(0);
    expect(compareStreamIds("18446744073709551615-18446744073709551615", "0-0")).toBeGreaterThan(0);
  });

  it("sorts a shuffled list into stream order", () => {
    const ids = ["1-0", "1-1", "1-10", "2-0", "10-0", "100-5"];
    const shuffled = [ids[3], ids[5], ids[0], ids[4], ids[2], ids[1]] as string[];
    expect(shuffled.sort(compareStreamIds)).toEqual(ids);
  });
});
