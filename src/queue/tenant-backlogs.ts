/**
 * The correction of the per-tenant backlog sets (keys.tenantBacklog) that
 * TENANT_MAX_BACKLOG counts. The submit script adds each new job and every
 * state transition keeps its membership, atomically, so the sets are exact
 * as long as every change goes through those scripts; this pass removes
 * members whose record is gone or says the job no longer waits, so that no
 * drift (a record deleted by hand, data lost with a Redis restart) can hold a
 * tenant at its bound for ever. The janitor runs it on every sweep.
 */

import type { Logger } from "pino";
import { backlogStates } from "../domain/job.js";
import type { RedisClient } from "./connections.js";
import type { Keys } from "./keys.js";
import { loadLuaScript } from "./scripts/load.js";

const correctScript = loadLuaScript("correct-tenant-backlog");

/** Members looked at per script run: keeps each run short. */
const batch = 200;

/** Corrects the tenants' backlog sets. */
export interface TenantBacklogs {
  /**
   * Removes the stale members of every tenant's set; resolves with how many
   * went (and logs a warning naming the tenants when any did: drift has a cause worth finding).
   */
  correct(): Promise<number>;
}

/** Creates the corrector over a command connection. */
export function createTenantBacklogs(deps: {
  redis: RedisClient;
  keys: Keys;
  logger: Logger;
}): TenantBacklogs {
  const { redis, keys, logger } = deps;
  const states = backlogStates.join(",");

  const correctTenant = async (tenant: string): Promise<number> => {
    let removed = 0;
    let cursor = "0";
    do {
      const [next, gone] = (await correctScript.run(
        redis,
        [keys.tenantBacklog(tenant)],
        [cursor, batch, keys.jobPrefix, states],
      )) as [string, number];
      cursor = next;
      removed += gone;
    } while (cursor !== "0");
    return removed;
  };

  return {
    async correct() {
      let removed = 0;
      let cursor = "0";
      do {
        const [next, tenants] = await redis.sscan(keys.tenants, cursor, "COUNT", 500);
        cursor = next;
        for (const tenant of tenants) {
          const gone = await correctTenant(tenant);
          if (gone > 0) {
            logger.warn({ tenant, removed: gone }, "tenant backlog corrected: stale jobs removed");
          }
          removed += gone;
        }
      } while (cursor !== "0");
      return removed;
    },
  };
}
