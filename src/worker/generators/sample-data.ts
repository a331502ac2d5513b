/**
 * Deterministic sample activity for the built-in generators: the same user,
 * type and filters always give the same rows, so a re-run (retry, crashed
 * worker) writes the same file.
 */
import { createHash } from "node:crypto";
import type { JsonObject } from "../../domain/job.js";
import { canonicalJson } from "../../queue/canonical-json.js";

/** One day of activity. */
export interface DailyRow {
  date: string;
  sessions: number;
  orders: number;
  revenueCents: number;
}

/** A seeded PRNG (mulberry32) from any string. */
export function seededRandom(seed: string): () => number {
  let a = createHash("sha256").update(seed).digest().readUInt32LE(0);
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `days` rows ending on `endDate` (UTC, inclusive), seeded by user and filters. */
export function dailyActivity(
  userId: string,
  filters: JsonObject,
  days: number,
  endDate: Date,
): DailyRow[] {
  const rand = seededRandom(`${userId}\n${canonicalJson(filters)}`);
  const rows: DailyRow[] = [];
  const end = Date.UTC(endDate.getUTCFullYear(), endDate.getUTCMonth(), endDate.getUTCDate());
  for (let i = days - 1; i >= 0; i--) {
    const sessions = 50 + Math.floor(rand() * 950);
    const orders = Math.floor(sessions * (0.01 + rand() * 0.05));
    rows.push({
      date: new Date(end - i * 86_400_000).toISOString().slice(0, 10),
      sessions,
      orders,
      revenueCents: orders * (1500 + Math.floor(rand() * 8500)),
    });
  }
  return rows;
}

/** Renders rows as RFC 4180 CSV with a header line. */
export function toCsv(rows: readonly DailyRow[]): string {
  const lines = ["date,sessions,orders,revenue"];
  for (const r of rows)
    lines.push(`${r.date},${r.sessions},${r.orders},${(r.revenueCents / 100).toFixed(2)}`);
  return `${lines.join("\r\n")}\r\n`;
}

/** The report's end date: `filters.end_date` (YYYY-MM-DD) or today (UTC). */
export function endDateOf(filters: JsonObject): Date | undefined {
  const v = filters.end_date ?? filters.endDate;
  if (v === undefined) return new Date();
  if (typeof v !== "string" || !/^\d{4}-\d{2}-\d{2}$/.test(v)) return undefined;
  const d = new Date(`${v}T00:00:00Z`);
  return Number.isNaN(d.getTime()) ? undefined : d;
}
