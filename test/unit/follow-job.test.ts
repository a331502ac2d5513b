import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  JobEventSchema,
  JobEventType,
  JobEventTypeSchema,
  JobPrioritySchema,
  JobState,
  JobStateSchema,
  ReportTypeSchema,
} from "../../gen/reports/v1/job_pb.js";
import {
  type WatchJobResponse,
  WatchJobResponseSchema,
} from "../../gen/reports/v1/report_service_pb.js";
import {
  eventTypeFromProto,
  priorityFromProto,
  reportTypeFromProto,
  stateFromProto,
} from "../../src/api/proto-mapping.js";
import { followJob, isDroppedStream } from "../../src/client/follow-job.js";
import {
  isLiveState,
  isTerminalEvent,
  shortName,
  shortNameList,
  valuesByShortName,
} from "../../src/client/job-enums.js";
import { liveStates, terminalEventTypes } from "../../src/domain/job.js";

const event = (id: string, type: JobEventType): WatchJobResponse =>
  create(WatchJobResponseSchema, { event: create(JobEventSchema, { id, type }) });
const keepalive = (): WatchJobResponse =>
  create(WatchJobResponseSchema, { keepaliveTime: timestampNow() });

/** A stream that yields `items`, then fails with `error` (or ends cleanly). */
async function* stream(items: WatchJobResponse[], error?: unknown) {
  yield* items;
  if (error !== undefined) throw error;
}

const unavailable = () => new ConnectError("server is shutting down", Code.Unavailable);
const noWait = { initialDelayMs: 0, maxDelayMs: 0 };

async function collect(events: AsyncIterable<{ id: string }>): Promise<string[]> {
  const ids: string[] = [];
  for await (const e of events) ids.push(e.id);
  return ids;
}

describe("followJob()", () => {
  it("resumes after the last event on a dropped stream and ends after the terminal event", async () => {
    const opened: string[] = [];
    const streams = [
      stream([event("1-0", JobEventType.QUEUED), keepalive()], unavailable()),
      stream([event("2-0", JobEventType.STARTED)], new ConnectError("reset", Code.Canceled)),
      stream([event("3-0", JobEventType.SUCCEEDED), event("4-0", JobEventType.QUEUED)]),
    ];
    const reconnects: number[] = [];
    const ids = await collect(
      followJob({
        open: (after) => {
          opened.push(after);
          return streams.shift() ?? stream([]);
        },
        maxReconnects: 3,
        backoff: noWait,
        onReconnect: (n) => reconnects.push(n),
      }),
    );
    expect(ids).toEqual(["1-0", "2-0", "3-0"]);
    expect(opened).toEqual(["", "1-0", "2-0"]);
    // Each stream brought an event, so the count of reconnects in a row starts over.
    expect(reconnects).toEqual([1, 1]);
  });

  it("ends when a resumed stream ends cleanly without a terminal event", async () => {
    const ids = await collect(
      followJob({
        open: () => stream([]),
        afterEventId: "9-0",
        maxReconnects: 3,
        backoff: noWait,
      }),
    );
    expect(ids).toEqual([]);
  });

  it("throws an answer about the job at once, without reconnecting", async () => {
    let opens = 0;
    const events = followJob({
      open: () => {
        opens++;
        return stream([], new ConnectError("job not found", Code.NotFound));
      },
      maxReconnects: 3,
      backoff: noWait,
    });
    await expect(collect(events)).rejects.toMatchObject({ code: Code.NotFound });
    expect(opens).toBe(1);
  });

  it("gives up after maxReconnects drops in a row, with the last error", async () => {
    let opens = 0;
    const events = followJob({
      open: () => {
        opens++;
        return stream([], unavailable());
      },
      maxReconnects: 2,
      backoff: noWait,
    });
    await expect(collect(events)).rejects.toMatchObject({ code: Code.Unavailable });
    expect(opens).toBe(3);
  });

  it("does not reconnect once its signal aborted, and cuts the wait before a reconnect short", async () => {
    const aborted = new AbortController();
    let opens = 0;
    const events = followJob({
      open: () => {
        opens++;
        aborted.abort();
        return stream([], unavailable());
      },
      signal: aborted.signal,
      maxReconnects: 5,
      backoff: noWait,
    });
    await expect(collect(events)).rejects.toMatchObject({ code: Code.Unavailable });
    expect(opens).toBe(1);

    const waiting = new AbortController();
    const slow = followJob({
      open: () => stream([], unavailable()),
      signal: waiting.signal,
      maxReconnects: 5,
      // A minute's wait at most: the abort must end it at once.
      backoff: { initialDelayMs: 60_000, maxDelayMs: 60_000 },
      onReconnect: () => waiting.abort(),
    });
    await expect(collect(slow)).rejects.toMatchObject({ code: Code.Canceled });
  });
});

describe("isDroppedStream()", () => {
  it("counts drops (the server going away, resets, failed fetches), not answers", () => {
    expect(isDroppedStream(unavailable())).toBe(true);
    expect(isDroppedStream(new ConnectError("stream reset", Code.Canceled))).toBe(true);
    expect(
      isDroppedStream(new ConnectError("x", Code.Unknown, undefined, undefined, new TypeError())),
    ).toBe(true);
    expect(isDroppedStream(new ConnectError("premature close", Code.Internal))).toBe(true);
    expect(isDroppedStream(new ConnectError("job not found", Code.NotFound))).toBe(false);
    expect(isDroppedStream(new ConnectError("internal error", Code.Internal))).toBe(false);
  });
});

describe("job-enums", () => {
  it("names every proto value as the API's mapping table does", () => {
    for (const v of ReportTypeSchema.values)
      expect(shortName(ReportTypeSchema, v.number)).toBe(
        reportTypeFromProto(v.number) ?? "unspecified",
      );
    for (const v of JobStateSchema.values)
      expect(shortName(JobStateSchema, v.number)).toBe(stateFromProto(v.number) ?? "unspecified");
    for (const v of JobEventTypeSchema.values)
      expect(shortName(JobEventTypeSchema, v.number)).toBe(
        eventTypeFromProto(v.number) ?? "unspecified",
      );
    // Unset priority means "normal" to the API; by name it is the zero value.
    for (const v of JobPrioritySchema.values.filter((p) => p.number !== 0))
      expect(shortName(JobPrioritySchema, v.number)).toBe(priorityFromProto(v.number));
  });

  it("maps the names people type to values, without the zero value", () => {
    expect([...valuesByShortName(ReportTypeSchema).keys()]).toEqual([
      "weekly",
      "monthly",
      "custom",
    ]);
    expect(shortNameList(JobPrioritySchema)).toBe("low, normal or high");
  });

  it("reads live states and terminal events from the domain's tables", () => {
    const live = JobStateSchema.values.filter((v) => isLiveState(v.number));
    expect(live.map((v) => shortName(JobStateSchema, v.number))).toEqual([...liveStates]);
    const terminal = JobEventTypeSchema.values.filter((v) => isTerminalEvent(v.number));
    expect(new Set(terminal.map((v) => shortName(JobEventTypeSchema, v.number)))).toEqual(
      terminalEventTypes,
    );
    expect(isLiveState(JobState.UNSPECIFIED)).toBe(false);
  });
});
