/**
 * readSubmitReportBinary() reads the plain SubmitReportRequest binary as
 * protobuf-es's fromBinary does, and leaves every other message to it.
 */
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  type JobPriority,
  JobPrioritySchema,
  type ReportType,
  ReportTypeSchema,
} from "../../gen/reports/v1/job_pb.js";
import { SubmitReportRequestSchema } from "../../gen/reports/v1/report_service_pb.js";
import { readSubmitReportBinary } from "../../src/api/submit-binary-reader.js";

type Init = MessageInitShape<typeof SubmitReportRequestSchema>;

const plain: Init = {
  idempotencyKey: "k-1",
  userId: "bench-user",
  reportType: 1,
  filters: { region: "eu", format: "csv" },
  priority: 2,
};

const read: [string, Init][] = [
  ["the bench's request", plain],
  ["an empty request", {}],
  ["no filters", { ...plain, filters: undefined }],
  ["empty filters", { ...plain, filters: {} }],
  ...ReportTypeSchema.values.map((v): [string, Init] => [
    `report type ${v.name}`,
    { reportType: v.number },
  ]),
  ...JobPrioritySchema.values.map((v): [string, Init] => [
    `priority ${v.name}`,
    { priority: v.number },
  ]),
  [
    "text: non-ASCII, astral, a leading BOM, controls",
    { idempotencyKey: "\ufeffü😀", userId: "日本語\u0000\n", filters: { "ü😀": "\ufeff" } },
  ],
  ["a 200-byte key", { idempotencyKey: "k".repeat(200) }],
  ["a 20,000-byte user", { userId: "ü".repeat(10000) }],
  [
    "filters of every JSON kind",
    {
      filters: {
        s: "x",
        empty: "",
        n: 1.5,
        zero: 0,
        neg: -42,
        big: 1e300,
        tiny: 5e-324,
        b: false,
        t: true,
        nil: null,
        list: [1, "a", null, [], {}, { deep: [true, [false, [null]]] }],
        o: { "": "", "a b": "ü\u2028😀" },
        "": 1,
        10: "ten",
        2: "two",
      },
    },
  ],
  [
    "filters over 128 bytes at every level",
    { filters: { a: { b: ["x".repeat(300), { c: "y".repeat(20000) }] } } },
  ],
];

/** Bytes written by hand: field by field. */
const tag = (no: number, wt: number) => (no << 3) | wt;
function bytes(...parts: (number | Uint8Array)[]): Uint8Array {
  return Buffer.concat(parts.map((p) => (typeof p === "number" ? Uint8Array.of(p) : p)));
}
const enc = (init: Init) =>
  toBinary(SubmitReportRequestSchema, create(SubmitReportRequestSchema, init));

const referred: [string, Uint8Array][] = [
  ["run_at", enc({ ...plain, runAt: { seconds: BigInt(1), nanos: 0 } })],
  ["deadline", enc({ ...plain, deadline: { seconds: BigInt(1), nanos: 0 } })],
  ["a report type the schema lacks", enc({ reportType: 99 as ReportType })],
  ["a negative priority", enc({ priority: -1 as JobPriority })],
  ["a field repeated", bytes(enc({ userId: "a" }), enc({ userId: "b" }))],
  ["fields out of order", bytes(enc({ userId: "a" }), enc({ idempotencyKey: "b" }))],
  [
    "filters twice (fromBinary merges)",
    bytes(enc({ filters: { a: 1 } }), enc({ filters: { b: 2 } })),
  ],
  ["an unknown field", bytes(enc(plain), tag(99, 0), 1)],
  ["another wire type", bytes(tag(1, 0), 1)],
  ["malformed UTF-8", bytes(tag(1, 2), 2, 0xc3, 0x28)],
  ["a lone surrogate's bytes", bytes(tag(2, 2), 3, 0xed, 0xa0, 0x80)],
  ["a string cut short", bytes(tag(1, 2), 5, 0x61)],
  ["a varint cut short", bytes(tag(3, 0), 0x81)],
  ["an empty Value", bytes(tag(4, 2), 5, tag(1, 2), 3, tag(1, 2), 1, 0x61)],
  ["a map entry without its value", bytes(tag(4, 2), 3, tag(1, 2), 1, tag(1, 2))],
  ["a map entry value first", bytes(tag(4, 2), 7, tag(1, 2), 5, tag(2, 2), 0, tag(1, 2), 1, 0x61)],
  [
    "a duplicate key inside one Struct",
    (() => {
      const one = enc({ filters: { a: 1 } }).subarray(2);
      return bytes(tag(4, 2), one.length * 2, one, one);
    })(),
  ],
  ["a __proto__ key", enc({ filters: JSON.parse('{"__proto__":{"a":1}}') })],
  [
    "a Value with two kinds",
    bytes(tag(4, 2), 9, tag(1, 2), 7, tag(1, 2), 1, 0x61, tag(2, 2), 2, tag(1, 0), 0, tag(4, 0), 1),
  ],
  [
    "a NullValue other than 0",
    bytes(tag(4, 2), 7, tag(1, 2), 5, tag(1, 2), 1, 0x61, tag(2, 2), 0, tag(1, 0), 3),
  ],
];

/** A seeded generator (mulberry32). */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("readSubmitReportBinary()", () => {
  for (const [what, init] of read) {
    it(`reads ${what} as fromBinary does`, () => {
      const b = enc(init);
      const ours = readSubmitReportBinary(b);
      expect(ours).toBeDefined();
      expect(ours).toStrictEqual(fromBinary(SubmitReportRequestSchema, b));
      // And from a Buffer at an offset, as the route hands it.
      const framed = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), b]).subarray(5);
      expect(readSubmitReportBinary(framed)).toStrictEqual(ours);
    });
  }

  it("reads -0 as fromBinary does", () => {
    const b = enc({ filters: { z: -0 } });
    const ours = readSubmitReportBinary(b);
    expect(Object.is(ours?.filters?.z, -0)).toBe(true);
    expect(Object.is(fromBinary(SubmitReportRequestSchema, b).filters?.z, -0)).toBe(true);
  });

  for (const [what, b] of referred) {
    it(`leaves ${what} to fromBinary`, () => {
      expect(readSubmitReportBinary(b)).toBeUndefined();
    });
  }

  it("reads what fromBinary reads alike, or leaves it, for 20,000 damaged messages", () => {
    const next = random(11);
    const seeds = read.map(([, init]) => enc(init)).filter((b) => b.length > 0 && b.length < 400);
    let readAlike = 0;
    for (let i = 0; i < 20000; i++) {
      const b = Buffer.from(seeds[i % seeds.length] as Uint8Array);
      const kind = next();
      let m: Buffer;
      if (kind < 0.4) {
        m = b;
        m[Math.floor(next() * m.length)] = Math.floor(next() * 256);
      } else if (kind < 0.7) {
        m = b.subarray(0, Math.floor(next() * b.length));
      } else {
        m = b;
        const at = Math.floor(next() * m.length);
        m[at] = (m[at] as number) ^ (1 << Math.floor(next() * 8));
      }
      const ours = readSubmitReportBinary(m);
      if (ours === undefined) continue;
      readAlike++;
      expect(ours).toStrictEqual(fromBinary(SubmitReportRequestSchema, m));
    }
    // Most single-byte changes inside strings still read.
    expect(readAlike).toBeGreaterThan(1000);
  });
});
