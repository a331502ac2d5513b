/**
 * Authentication: `Authorization: Bearer <key>` on every protocol. Keys map to
 * tenants; the tenant lands in the request's context (kTenant), where every
 * handler reads it, so isolation follows from authentication alone.
 *
 * Keys are compared as SHA-256 digests with crypto.timingSafeEqual against
 * every configured digest (no early exit, no map lookup on the raw key), so
 * neither the answer's content nor its timing says how close a guess was.
 * A missing and a wrong key get the very same answer.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { type ContextValues, createContextValues, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { type ApiKeyEntry, isLoopbackHost } from "../config/api-keys.js";
import type { ApiConfig, AuthConfig } from "../config/config.js";
import { UnauthenticatedError } from "../domain/errors.js";
import { kAuthenticated, kTenant } from "./context-keys.js";
import { toConnectError } from "./error-map.js";
import type { NodeRequest } from "./node-types.js";

/** The tenant of every caller when no keys are configured (open mode). */
export const openTenant = "default";

/** The one message of every authentication failure (missing key, wrong key, malformed header). */
export const unauthenticatedMessage = new UnauthenticatedError().message;

/** Checks keys. */
export interface Authenticator {
  /** False in open mode (no keys configured): every caller is tenant "default". */
  readonly enabled: boolean;
  /**
   * The tenant a request's Authorization header authenticates.
   * @throws UnauthenticatedError (UNAUTHENTICATED, with `WWW-Authenticate: Bearer`) when auth
   * is enabled and the header is missing, malformed or carries an unknown key.
   */
  tenantOf(authorization: string | null | undefined): string;
}

/** Creates an authenticator over `keys` (digests); no keys means open mode. */
export function createAuthenticator(keys: readonly ApiKeyEntry[]): Authenticator {
  const entries = keys.map((k) => ({ tenant: k.tenant, digest: Buffer.from(k.sha256, "hex") }));
  const enabled = entries.length > 0;
  // Hashed even when the header is missing, so that path costs the same.
  const placeholder = createHash("sha256").update("").digest();
  return {
    enabled,
    tenantOf(authorization) {
      if (!enabled) return openTenant;
      const match = /^Bearer +([\x21-\x7e]{1,512}) *$/i.exec(authorization ?? "");
      const presented = match?.[1]
        ? createHash("sha256").update(match[1], "utf8").digest()
        : placeholder;
      let tenant: string | undefined;
      for (const e of entries) {
        // Every entry is compared: the time does not depend on which (if any) matched.
        if (timingSafeEqual(presented, e.digest) && match?.[1] !== undefined) tenant ??= e.tenant;
      }
      if (tenant === undefined) throw new UnauthenticatedError();
      return tenant;
    },
  };
}

/**
 * The Connect interceptor: authenticates every RPC except those of the
 * `exemptServices` (fully-qualified names: health, reflection) and sets the
 * caller's tenant in the context values. A refusal leaves it as the
 * ConnectError of error-map.ts: interceptors before it (tracing, the request
 * log) and connect-node see only ConnectErrors.
 */
export function createAuthInterceptor(
  auth: Authenticator,
  exemptServices: readonly string[],
  logger: Logger,
): Interceptor {
  const exempt = new Set(exemptServices);
  return (next) => async (req) => {
    if (!exempt.has(req.service.typeName)) {
      let tenant: string;
      try {
        tenant = auth.tenantOf(req.header.get("authorization"));
      } catch (err) {
        throw toConnectError(err, logger);
      }
      req.contextValues.set(kTenant, tenant);
      req.contextValues.set(kAuthenticated, true);
    }
    return next(req);
  };
}

/**
 * The context values of a plain-HTTP request (every `/v1/*` route, the SSE
 * route included): its authenticated tenant. The one check those routes share.
 * @throws UnauthenticatedError (HTTP 401 with `WWW-Authenticate: Bearer`).
 */
export function authenticateHttp(auth: Authenticator, req: NodeRequest): ContextValues {
  const header = req.headers.authorization;
  const tenant = auth.tenantOf(Array.isArray(header) ? header[0] : header);
  return createContextValues().set(kTenant, tenant).set(kAuthenticated, true);
}

/**
 * The tenant a handler acts for.
 * @throws UnauthenticatedError when authentication did not run for the request (fail closed).
 */
export function callerTenant(values: ContextValues): string {
  if (!values.get(kAuthenticated)) throw new UnauthenticatedError();
  return values.get(kTenant);
}

/**
 * Says at start how callers are authenticated: one info line in open mode on
 * loopback, a loud warning when ALLOW_UNAUTHENTICATED opens a reachable port,
 * and a warning when download links are signed with a per-process secret
 * while keys are configured (replicas would reject each other's links).
 */
export function logAuthMode(
  config: {
    auth: Pick<AuthConfig, "apiKeys" | "allowUnauthenticated" | "downloadUrlSecret">;
    api: Pick<ApiConfig, "host">;
  },
  logger: Logger,
): void {
  const { auth, api } = config;
  const tenants = new Set(auth.apiKeys.map((k) => k.tenant));
  if (auth.apiKeys.length > 0) {
    logger.info(
      { tenants: tenants.size, keys: auth.apiKeys.length },
      "API keys required (Authorization: Bearer <key>)",
    );
    if (auth.downloadUrlSecret === undefined) {
      logger.warn(
        "DOWNLOAD_URL_SECRET is not set: download links are signed with a random per-process secret and fail on other replicas and after a restart; set the same DOWNLOAD_URL_SECRET on every API replica",
      );
    }
  } else if (isLoopbackHost(api.host)) {
    logger.info(
      `no API keys configured: serving without authentication on loopback (${api.host}); every caller is tenant "${openTenant}"`,
    );
  } else {
    logger.warn(
      `ALLOW_UNAUTHENTICATED=true: serving WITHOUT AUTHENTICATION on ${api.host}; anyone who can reach this port can submit, read and cancel jobs (tenant "${openTenant}"). Set API_KEYS or API_KEYS_FILE.`,
    );
  }
}
