/**
 * A SubmitReportRequest read from the protobuf binary most callers send,
 * without protobuf's reflection: idempotency_key, user_id, report_type,
 * filters and priority, each at most once and by field number (as
 * protobuf-es's toBinary and other encoders write them), enum values the
 * schema knows, and filters as a Struct of Values (each entry a key then a
 * value, each Value one kind). For such bytes the result equals what
 * fromBinary gives; for any other (run_at or deadline, unknown fields,
 * fields repeated or out of order, another wire type, an enum value the
 * schema lacks, malformed UTF-8, a duplicate or `__proto__` key in filters,
 * a map entry or Value that is not complete, bytes cut short) it answers
 * undefined and the caller parses with fromBinary, which stays the reference
 * and words every error. submit-binary-reader.test.ts compares the two.
 */
import { isUtf8 } from "node:buffer";
import { create, type DescEnum, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { JobPrioritySchema, ReportTypeSchema } from "../../gen/reports/v1/job_pb.js";
import {
  type SubmitReportRequest,
  SubmitReportRequestSchema,
} from "../../gen/reports/v1/report_service_pb.js";

/** Thrown inside this module when fromBinary must take over. */
const refer = Symbol("refer");

const knownValues = (desc: DescEnum): Set<number> => new Set(desc.values.map((v) => v.number));
const reportTypes = knownValues(ReportTypeSchema);
const priorities = knownValues(JobPrioritySchema);

// The message being read and the read position.
const none = Buffer.alloc(0);
let buf: Buffer = none;
let pos = 0;

/** The request in `bytes`, or undefined when fromBinary must parse it (see above). */
export function readSubmitReportBinary(bytes: Uint8Array): SubmitReportRequest | undefined {
  buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  pos = 0;
  try {
    const end = buf.length;
    let idempotencyKey = "";
    let userId = "";
    let reportType = 0;
    let priority = 0;
    let filters: JsonObject | undefined;
    let last = 0;
    while (pos < end) {
      const tag = varint();
      const no = tag >>> 3;
      if (no <= last) throw refer; // repeated or out of order: fromBinary merges
      last = no;
      switch (tag) {
        case 0x0a:
          idempotencyKey = string();
          break;
        case 0x12:
          userId = string();
          break;
        case 0x18:
          reportType = enumValue(reportTypes);
          break;
        case 0x22:
          filters = struct(length());
          break;
        case 0x28:
          priority = enumValue(priorities);
          break;
        default:
          throw refer;
      }
    }
    return create(SubmitReportRequestSchema, {
      idempotencyKey,
      userId,
      reportType,
      priority,
      ...(filters !== undefined ? { filters } : {}),
    });
  } catch {
    // refer, or anything unforeseen: fromBinary decides.
    return undefined;
  } finally {
    buf = none;
  }
}

/** A varint of at most 32 bits (5 bytes, the fifth under 0x10); longer ones are referred. */
function varint(): number {
  let v = 0;
  for (let shift = 0; shift < 35; shift += 7) {
    if (pos >= buf.length) throw refer;
    const b = buf[pos++] as number;
    if (shift === 28 && b > 0x0f) throw refer;
    v += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) return v;
  }
  throw refer;
}

/** A length prefix; the end of the bytes it announces. */
function length(): number {
  const n = varint();
  const end = pos + n;
  if (end > buf.length) throw refer;
  return end;
}

function enumValue(known: Set<number>): number {
  const v = varint();
  if (!known.has(v)) throw refer;
  return v;
}

function string(): string {
  const end = length();
  const start = pos;
  pos = end;
  let i = start;
  while (i < end && (buf[i] as number) < 0x80) i++;
  if (i === end) {
    // ASCII: short text by char codes (a native call per string costs more).
    if (end - start <= 32) {
      let t = "";
      for (let j = start; j < end; j++) t += String.fromCharCode(buf[j] as number);
      return t;
    }
    return buf.toString("latin1", start, end);
  }
  if (!isUtf8(buf.subarray(start, end))) throw refer;
  return buf.toString("utf8", start, end);
}

/** A Struct up to `end`: map<string, Value> fields = 1, each entry a key (1) then a value (2). */
function struct(end: number): JsonObject {
  const o: JsonObject = {};
  while (pos < end) {
    if (buf[pos++] !== 0x0a) throw refer;
    const entryEnd = length();
    if (entryEnd > end || pos >= entryEnd || buf[pos++] !== 0x0a) throw refer;
    const key = string();
    if (key === "__proto__" || Object.hasOwn(o, key)) throw refer;
    if (pos >= entryEnd || buf[pos++] !== 0x12) throw refer;
    const valueEnd = length();
    if (valueEnd !== entryEnd) throw refer;
    o[key] = value(valueEnd);
  }
  if (pos !== end) throw refer;
  return o;
}

/** A Value up to `end`: exactly one of its kinds. */
function value(end: number): JsonValue {
  if (pos >= end) throw refer; // no kind: fromBinary gives null, but an encoder writes one
  let v: JsonValue;
  switch (buf[pos++]) {
    case 0x08: // null_value
      if (varint() !== 0) throw refer;
      v = null;
      break;
    case 0x11: // number_value
      if (pos + 8 > end) throw refer;
      v = buf.readDoubleLE(pos);
      pos += 8;
      break;
    case 0x1a: // string_value
      v = string();
      break;
    case 0x20: {
      // bool_value
      const b = varint();
      if (b > 1) throw refer;
      v = b === 1;
      break;
    }
    case 0x2a: // struct_value
      v = struct(length());
      break;
    case 0x32: {
      // list_value: repeated Value values = 1
      const listEnd = length();
      const list: JsonValue[] = [];
      while (pos < listEnd) {
        if (buf[pos++] !== 0x0a) throw refer;
        const itemEnd = length();
        if (itemEnd > listEnd) throw refer;
        list.push(value(itemEnd));
      }
      v = list;
      break;
    }
    default:
      throw refer;
  }
  if (pos !== end) throw refer;
  return v;
}
