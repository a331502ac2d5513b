/**
 * Signed download URLs: `result.download_url` carries `expires` (Unix
 * seconds) and `signature` = HMAC-SHA256(secret, tenant, download path (job
 * id and file name), expires), so a browser can fetch the report without an
 * Authorization header, and only that file of that job, until the expiry.
 *
 * Every API replica must share DOWNLOAD_URL_SECRET, or a link handed out by
 * one fails on another; without it each process draws a random secret (links
 * then also die on restart).
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/** Signs and checks download paths. */
export interface DownloadSigner {
  /** `downloadPath` with `?expires=…&signature=…` appended, valid for the configured TTL. */
  sign(tenant: string, downloadPath: string, nowMs?: number): string;
  /**
   * True when `signature` is this server's signature of (tenant, path,
   * expires) and `expires` has not passed. `tenant` undefined (no such job)
   * always fails, after the same work.
   */
  verify(
    tenant: string | undefined,
    downloadPath: string,
    expires: string | null,
    signature: string | null,
    nowMs?: number,
  ): boolean;
}

/**
 * Expiries are rounded up to this step so that a job read twice within it
 * carries the same URL (clients and caches may compare them).
 */
const expiryStepSeconds = 60;

/** Creates a signer; `secret` undefined draws a random one (this process only). */
export function createDownloadSigner(options: { secret?: string; ttlMs: number }): DownloadSigner {
  const key = options.secret !== undefined ? Buffer.from(options.secret, "utf8") : randomBytes(32);
  const mac = (tenant: string, path: string, expires: string) =>
    createHmac("sha256", key).update(`v1\n${tenant}\n${path}\n${expires}`).digest();
  return {
    sign(tenant, downloadPath, nowMs = Date.now()) {
      const raw = Math.ceil((nowMs + options.ttlMs) / 1000);
      const expires = String(Math.ceil(raw / expiryStepSeconds) * expiryStepSeconds);
      const signature = mac(tenant, downloadPath, expires).toString("base64url");
      return `${downloadPath}?expires=${expires}&signature=${signature}`;
    },
    verify(tenant, downloadPath, expires, signature, nowMs = Date.now()) {
      const wellFormed = expires !== null && /^\d{1,12}$/.test(expires) && signature !== null;
      // Compared as text, not decoded bytes: base64url decoding ignores stray
      // characters and unused low bits, so altered text could decode the same.
      const expected = Buffer.from(
        mac(tenant ?? "", downloadPath, wellFormed ? expires : "0").toString("base64url"),
      );
      const given = Buffer.from(wellFormed ? signature : "");
      const same =
        given.length === expected.length
          ? timingSafeEqual(given, expected)
          : // Same work for a wrong length, then fail.
            timingSafeEqual(expected, expected) && false;
      return same && wellFormed && tenant !== undefined && Number(expires) * 1000 > nowMs;
    },
  };
}
