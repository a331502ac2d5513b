/**
 * Random tokens for attempts (fencing tokens, file tags) drawn from a pooled
 * buffer: one getrandom() call per 4 KB instead of one per token, as the
 * submitter draws job ids. Each byte is handed out once.
 */
import { randomBytes } from "node:crypto";

const poolSize = 4096;
let pool = Buffer.alloc(0);
let offset = 0;

/** `bytes` fresh random bytes (at most 256) as `encoding` text. */
export function randomText(bytes: number, encoding: "hex" | "base64url"): string {
  if (bytes > 256) return randomBytes(bytes).toString(encoding);
  if (offset + bytes > pool.length) {
    pool = randomBytes(poolSize);
    offset = 0;
  }
  const text = pool.toString(encoding, offset, offset + bytes);
  offset += bytes;
  return text;
}
