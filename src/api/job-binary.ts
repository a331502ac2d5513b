/**
 * The protobuf binary of SubmitReportResponse and GetJobResponse as
 * protobuf-es's toBinary writes it (fields by number, proto3 implicit
 * defaults left out, the job's filters as a google.protobuf.Struct of
 * Values, Timestamps as seconds and nanos, enums and int64s as varints),
 * written in one pass into one scratch buffer, without toBinary's
 * reflection: it turns the filters (a JsonObject) into Struct and Value
 * messages first, and grows its buffer and forks per message. The answer is
 * a gRPC frame (the 5-byte envelope, then the message), so the route copies
 * the bytes once. For what toBinary would refuse or might write otherwise
 * (unknown fields on a message, a message of another type, a value of the
 * wrong type or out of range, filters holding what JSON.parse cannot give:
 * a number that is not finite, undefined, functions, objects that are not
 * plain), these answer undefined and the caller uses toBinary, the
 * reference. job-binary.test.ts compares the two.
 */
import type { JsonValue } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { Job, ReportResult } from "../../gen/reports/v1/job_pb.js";
import type {
  GetJobResponse,
  SubmitReportResponse,
} from "../../gen/reports/v1/report_service_pb.js";

/** Thrown inside this module when the reference writer must take over. */
const refer = Symbol("refer");

/** The gRPC envelope in front of the message: a flags byte and a 32-bit length. */
const envelopeBytes = 5;

// The scratch buffer and the write position: one frame at a time (no await
// while writing), copied out at the end.
const scratchBytes = 16 * 1024;
let buf = Buffer.allocUnsafe(scratchBytes);
let pos = 0;
const i64 = new DataView(new ArrayBuffer(8));
const int64Min = BigInt("-9223372036854775808");
const int64Max = BigInt("9223372036854775807");

/**
 * The gRPC frame (uncompressed envelope, then toBinary's bytes) of a
 * SubmitReportResponse; the message is `frame.subarray(5)`.
 * undefined: use toBinary.
 */
export function submitReportResponseFrame(m: SubmitReportResponse): Buffer | undefined {
  try {
    begin(m, "reports.v1.SubmitReportResponse");
    if (m.jobId !== "") stringField(0x0a, m.jobId);
    if (m.statusUrl !== "") stringField(0x12, m.statusUrl);
    if (present(m, "job", m.job)) jobField(0x1a, m.job);
    const dedup = m.deduplicated;
    if (typeof dedup !== "boolean") throw refer;
    if (dedup) {
      ensure(2);
      buf[pos++] = 0x20;
      buf[pos++] = 1;
    }
    return end();
  } catch {
    // refer, or anything unforeseen: toBinary decides (and throws its own error).
    return undefined;
  }
}

/**
 * The gRPC frame (uncompressed envelope, then toBinary's bytes) of a
 * GetJobResponse; the message is `frame.subarray(5)`. undefined: use toBinary.
 */
export function getJobResponseFrame(m: GetJobResponse): Buffer | undefined {
  try {
    begin(m, "reports.v1.GetJobResponse");
    if (present(m, "job", m.job)) jobField(0x0a, m.job);
    return end();
  } catch {
    return undefined;
  }
}

interface Msg {
  readonly $typeName: string;
  readonly $unknown?: readonly unknown[] | undefined;
}

/** toBinary throws for a message of another type and writes unknown fields: refer both. */
function check(m: Msg, typeName: string): void {
  if (m.$typeName !== typeName) throw refer;
  if (m.$unknown !== undefined && m.$unknown.length > 0) throw refer;
}

function begin(m: Msg, typeName: string): void {
  check(m, typeName);
  pos = envelopeBytes;
}

function end(): Buffer {
  const len = pos - envelopeBytes;
  buf[0] = 0;
  buf.writeUInt32BE(len, 1);
  const out = Buffer.allocUnsafe(pos);
  buf.copy(out, 0, 0, pos);
  // A large answer's scratch is not kept.
  if (buf.length > 4 * scratchBytes) buf = Buffer.allocUnsafe(scratchBytes);
  return out;
}

/** As toBinary's check for a field with explicit presence (a message field). */
function present<V>(m: object, key: string, v: V | undefined): v is V {
  return v !== undefined && Object.hasOwn(m, key);
}

function ensure(n: number): void {
  if (pos + n <= buf.length) return;
  let size = buf.length * 2;
  while (size < pos + n) size *= 2;
  const bigger = Buffer.allocUnsafe(size);
  buf.copy(bigger, 0, 0, pos);
  buf = bigger;
}

/** An unsigned varint of at most 32 bits (tags, lengths, uint32, non-negative int32). */
function varint32(v: number): void {
  ensure(5);
  while (v > 0x7f) {
    buf[pos++] = (v & 0x7f) | 0x80;
    v >>>= 7;
  }
  buf[pos++] = v;
}

function uint32Field(tag: number, v: number): void {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffffffff) throw refer;
  if (v === 0) return;
  varint32(tag);
  varint32(v);
}

/** An enum field (an int32; negative ones take 10 bytes, as toBinary writes them). */
function enumField(tag: number, v: number): void {
  if (typeof v !== "number" || !Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) {
    throw refer;
  }
  if (v === 0) return;
  varint32(tag);
  if (v > 0) {
    varint32(v);
    return;
  }
  ensure(10);
  for (let i = 0; i < 9; i++) {
    buf[pos++] = (v & 0x7f) | 0x80;
    v >>= 7;
  }
  buf[pos++] = 1;
}

/** An int64 field: its two's complement as a varint (protobuf-es's writeVarint64). */
function int64Field(tag: number, v: bigint): void {
  if (typeof v !== "bigint") throw refer;
  const n = Number(v);
  if (n === 0) return; // 0n only: a bigint that rounds to 0 is 0
  if (Number.isSafeInteger(n)) {
    varint32(tag);
    // The low word's bits (ToUint32 is modulo 2^32), the high word's by division.
    varint64(n >>> 0, Math.floor(n / 4294967296) | 0);
    return;
  }
  if (v < int64Min || v > int64Max) throw refer;
  varint32(tag);
  i64.setBigInt64(0, v, true);
  varint64(i64.getInt32(0, true), i64.getInt32(4, true));
}

function varint64(lo: number, hi: number): void {
  ensure(10);
  for (let i = 0; i < 28; i = i + 7) {
    const shift = lo >>> i;
    const hasNext = !(shift >>> 7 === 0 && hi === 0);
    buf[pos++] = (hasNext ? shift | 0x80 : shift) & 0xff;
    if (!hasNext) return;
  }
  const splitBits = ((lo >>> 28) & 0x0f) | ((hi & 0x07) << 4);
  const hasMoreBits = !(hi >> 3 === 0);
  buf[pos++] = (hasMoreBits ? splitBits | 0x80 : splitBits) & 0xff;
  if (!hasMoreBits) return;
  for (let i = 3; i < 31; i = i + 7) {
    const shift = hi >>> i;
    const hasNext = !(shift >>> 7 === 0);
    buf[pos++] = (hasNext ? shift | 0x80 : shift) & 0xff;
    if (!hasNext) return;
  }
  buf[pos++] = (hi >>> 31) & 0x01;
}

/** A string field, written even if empty (the caller checks implicit presence). */
function stringField(tag: number, s: string): void {
  if (typeof s !== "string") throw refer;
  varint32(tag);
  const n = s.length;
  // ASCII (UTF-8 length = UTF-16 length): its length first, then byte by byte.
  if (n < 128) {
    ensure(n + 1);
    const start = pos;
    buf[pos++] = n;
    let i = 0;
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c > 0x7f) break;
      buf[pos++] = c;
    }
    if (i === n) return;
    pos = start;
  }
  // Lone surrogates become U+FFFD in both Buffer#write and TextEncoder.
  const bytes = Buffer.byteLength(s, "utf8");
  varint32(bytes);
  ensure(bytes);
  pos += buf.write(s, pos, bytes, "utf8");
}

/** Starts a length-delimited field: its tag and one byte for its length (most are under 128). */
function fork(tag: number): number {
  varint32(tag);
  ensure(1);
  return pos++;
}

/** Writes the length reserved by fork(), moving the content if the length takes more bytes. */
function join(at: number): void {
  const len = pos - at - 1;
  if (len < 0x80) {
    buf[at] = len;
    return;
  }
  const size = len < 0x4000 ? 2 : len < 0x200000 ? 3 : len < 0x10000000 ? 4 : 5;
  ensure(size - 1);
  buf.copyWithin(at + size, at + 1, pos);
  const save = pos + size - 1;
  pos = at;
  varint32(len);
  pos = save;
}

function jobField(tag: number, j: Job): void {
  check(j, "reports.v1.Job");
  const at = fork(tag);
  if (j.id !== "") stringField(0x0a, j.id);
  if (j.userId !== "") stringField(0x12, j.userId);
  enumField(0x18, j.reportType);
  enumField(0x20, j.state);
  uint32Field(0x28, j.progress);
  uint32Field(0x30, j.attemptsMade);
  uint32Field(0x38, j.maxAttempts);
  if (present(j, "result", j.result)) resultField(0x42, j.result);
  if (j.failureReason !== "") stringField(0x4a, j.failureReason);
  if (present(j, "createdAt", j.createdAt)) timestampField(0x52, j.createdAt);
  if (present(j, "startedAt", j.startedAt)) timestampField(0x5a, j.startedAt);
  if (present(j, "finishedAt", j.finishedAt)) timestampField(0x62, j.finishedAt);
  if (present(j, "filters", j.filters)) {
    const at13 = fork(0x6a);
    structFields(j.filters);
    join(at13);
  }
  enumField(0x70, j.priority);
  if (present(j, "runAt", j.runAt)) timestampField(0x7a, j.runAt);
  // Fields 16 and up: a tag over 127, two bytes as a varint.
  if (present(j, "deadline", j.deadline)) timestampField((16 << 3) | 2, j.deadline);
  if (j.phase !== "") stringField((17 << 3) | 2, j.phase);
  if (j.traceId !== "") stringField((18 << 3) | 2, j.traceId);
  join(at);
}

function resultField(tag: number, r: ReportResult): void {
  check(r, "reports.v1.ReportResult");
  const at = fork(tag);
  if (r.downloadUrl !== "") stringField(0x0a, r.downloadUrl);
  if (r.contentType !== "") stringField(0x12, r.contentType);
  int64Field(0x18, r.sizeBytes);
  join(at);
}

function timestampField(tag: number, t: Timestamp): void {
  check(t, "google.protobuf.Timestamp");
  const at = fork(tag);
  int64Field(0x08, t.seconds);
  enumField(0x10, t.nanos); // an int32, written as an enum is
  join(at);
}

/** A Struct's fields (map<string, Value>, field 1): one entry per own key, in Object.keys order. */
function structFields(o: unknown): void {
  if (!plainObject(o)) throw refer;
  const rec = o as Record<string, JsonValue>;
  const keys = Object.keys(rec);
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i] as string;
    const entry = fork(0x0a);
    stringField(0x0a, key);
    const value = fork(0x12);
    valueFields(rec[key]);
    join(value);
    join(entry);
  }
}

/** A Value's one field (its oneof `kind`), as wktValueToReflect makes it from JSON. */
function valueFields(v: unknown): void {
  switch (typeof v) {
    case "number":
      if (!Number.isFinite(v)) throw refer;
      ensure(9);
      buf[pos++] = 0x11; // number_value = 2, 64-bit
      pos = buf.writeDoubleLE(v, pos);
      return;
    case "string":
      stringField(0x1a, v);
      return;
    case "boolean":
      ensure(2);
      buf[pos++] = 0x20;
      buf[pos++] = v ? 1 : 0;
      return;
    case "object": {
      if (v === null) {
        ensure(2);
        buf[pos++] = 0x08; // null_value = 1: NULL_VALUE (0), written: a oneof has presence
        buf[pos++] = 0;
        return;
      }
      if (Array.isArray(v)) {
        if (Object.getPrototypeOf(v) !== Array.prototype) throw refer;
        const list = fork(0x32);
        // An index loop: a hole reads as undefined, which is referred.
        for (let i = 0; i < v.length; i++) {
          const item = fork(0x0a);
          valueFields(v[i]);
          join(item);
        }
        join(list);
        return;
      }
      const struct = fork(0x2a);
      structFields(v);
      join(struct);
      return;
    }
    default:
      throw refer;
  }
}

function plainObject(o: unknown): boolean {
  if (typeof o !== "object" || o === null || Array.isArray(o)) return false;
  const proto = Object.getPrototypeOf(o);
  return proto === Object.prototype || proto === null;
}
