/**
 * Parsing of the API key settings: `API_KEYS` (`tenant:key,tenant:key`) and
 * `API_KEYS_FILE` (one `tenant sha256hex(key)` per line, so the file holds no
 * secrets). Only SHA-256 digests of keys leave this module; raw keys are never
 * kept, logged or echoed in a problem line.
 */
import { createHash } from "node:crypto";

/** One accepted key: the tenant it authenticates and the SHA-256 digest of the key. */
export interface ApiKeyEntry {
  tenant: string;
  /** SHA-256 of the key, lowercase hex (64 characters). */
  sha256: string;
}

/**
 * Tenant names become parts of Redis keys (`prefix:idx:<tenant>`), so they are
 * restricted to characters that cannot forge another key's shape (no `:`).
 */
export const tenantPattern = /^[A-Za-z0-9_.-]{1,64}$/;
/** Keys: printable ASCII without spaces or commas (the list separator), at least 16 characters. */
const keyPattern = /^[\x21-\x2b\x2d-\x7e]{16,512}$/;
const digestPattern = /^[0-9a-f]{64}$/;

/** The SHA-256 digest (lowercase hex) of an API key, as API_KEYS_FILE lists it. */
export function hashApiKey(key: string): string {
  return createHash("sha256").update(key, "utf8").digest("hex");
}

/**
 * Parses API_KEYS. Problems go to `problems`, one line each, naming the
 * entry's position and tenant but never the key.
 */
export function parseApiKeys(raw: string, problems: string[]): ApiKeyEntry[] {
  const entries: ApiKeyEntry[] = [];
  raw.split(",").forEach((item, i) => {
    const entry = item.trim();
    if (entry === "") return;
    const colon = entry.indexOf(":");
    const tenant = colon < 0 ? "" : entry.slice(0, colon).trim();
    const key = colon < 0 ? "" : entry.slice(colon + 1).trim();
    if (colon < 0 || !tenantPattern.test(tenant)) {
      problems.push(
        `API_KEYS: entry ${i + 1} must be tenant:key with a tenant of 1-64 characters of A-Z a-z 0-9 _ . -`,
      );
      return;
    }
    if (!keyPattern.test(key)) {
      problems.push(
        `API_KEYS: the key of entry ${i + 1} (tenant ${tenant}) must be 16-512 printable ASCII characters without spaces or commas`,
      );
      return;
    }
    entries.push({ tenant, sha256: hashApiKey(key) });
  });
  return entries;
}

/**
 * Parses the text of API_KEYS_FILE: `tenant sha256hex` per line; blank lines
 * and lines starting with `#` are ignored. One problem line per bad line.
 */
export function parseApiKeysFile(
  text: string,
  fileName: string,
  problems: string[],
): ApiKeyEntry[] {
  const entries: ApiKeyEntry[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#")) return;
    const parts = trimmed.split(/\s+/);
    const [tenant = "", digest = ""] = parts;
    if (
      parts.length !== 2 ||
      !tenantPattern.test(tenant) ||
      !digestPattern.test(digest.toLowerCase())
    ) {
      problems.push(
        `API_KEYS_FILE: ${fileName} line ${i + 1} must be "<tenant> <sha256 hex of the key>" (tenant: 1-64 of A-Z a-z 0-9 _ . -; digest: 64 hex digits)`,
      );
      return;
    }
    entries.push({ tenant, sha256: digest.toLowerCase() });
  });
  return entries;
}

/** True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return (
    h === "localhost" ||
    h === "::1" ||
    /^127(\.\d{1,3}){3}$/.test(h) ||
    /^::ffff:127(\.\d{1,3}){3}$/.test(h)
  );
}
