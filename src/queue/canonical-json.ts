/**
 * Deterministic JSON: object keys sorted at every depth, so two requests that
 * differ only in key order have the same fingerprint.
 */
import type { JsonValue } from "../domain/job.js";

/** Serializes `value` with sorted object keys. */
export function canonicalJson(value: JsonValue | undefined): string {
  if (value === null || value === undefined) return "null";
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}
