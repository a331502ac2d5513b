/** MONITOR connections for tests that count the commands a call sends. */
import { Redis } from "ioredis";

/**
 * Opens a MONITOR connection to `url` once the connection it is made from is
 * ready. ioredis' monitor() duplicates a connection; when the original is
 * still running its own ready check (INFO), that INFO can reach the new
 * monitor before MONITOR's "OK", which ioredis takes for a reply out of order
 * ("Command queue state error"). The original is closed once the monitor runs.
 */
export async function openMonitor(url: string): Promise<Redis> {
  const base = new Redis(url);
  try {
    await base.ping();
    return await base.monitor();
  } finally {
    base.disconnect();
  }
}
