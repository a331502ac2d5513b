/**
 * Deterministic JSON: object keys sorted at every depth, so two requests that
 * differ only in key order have the same fingerprint.
 */
import type { JsonValue } from "../domain/job.js";

/** Serializes `value` with sorted object keys. */
export function canonicalJson(value: JsonValue | undefined): string {
  if (value === null || value === undefined) return "null";
  if (typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) {
    let out = "[";
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ",";
      out += canonicalJson(value[i]);
    }
    return `${out}]`;
  }
  const keys = Object.keys(value).sort();
  let out = "{";
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i] as string;
    if (i > 0) out += ",";
    out += `${JSON.stringify(k)}:${canonicalJson(value[k])}`;
  }
  return `${out}}`;
}

/** The fields of a submit that its fingerprint covers. */
export interface FingerprintFields {
  userId: string;
  reportType: string;
  filters: JsonValue;
  priority: string;
  runAt: number | null;
  deadline: number | null;
}

/**
 * canonicalJson(fields), with the object's keys sorted once here instead of
 * per submit (the test compares the two).
 */
export function fingerprintJson(f: FingerprintFields): string {
  return `{"deadline":${canonicalJson(f.deadline)},"filters":${canonicalJson(f.filters)},"priority":${canonicalJson(f.priority)},"reportType":${canonicalJson(f.reportType)},"runAt":${canonicalJson(f.runAt)},"userId":${canonicalJson(f.userId)}}`;
}
