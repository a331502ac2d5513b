/** Context values the interceptors set for handlers. */
import { createContextKey } from "@connectrpc/connect";

/**
 * The caller's tenant. Until authentication exists every caller is in the
 * "default" tenant; handlers read it from here so that adding auth only
 * changes the interceptor that sets it.
 */
export const kTenant = createContextKey<string>("default", { description: "caller tenant" });
