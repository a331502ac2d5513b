/** Context values the interceptors set for handlers. */
import { createContextKey } from "@connectrpc/connect";

/**
 * The caller's tenant, set by authentication (src/api/auth.ts): the key's
 * tenant, or "default" in open mode. Handlers read it with callerTenant(),
 * which also checks kAuthenticated.
 */
export const kTenant = createContextKey<string>("default", { description: "caller tenant" });
/**
 * True once authentication (the interceptor, or authenticateHttp) has set
 * kTenant. Handlers refuse requests without it, so a handler reached without
 * the auth step fails closed (UNAUTHENTICATED) instead of serving tenant "default".
 */
export const kAuthenticated = createContextKey<boolean>(false, {
  description: "auth ran for this request",
});
