/** Reading a test Redis's keys. */
import type { Redis } from "ioredis";

/** Every key matching `pattern`, via SCAN (never KEYS), each once. */
export async function scanKeys(redis: Redis, pattern: string): Promise<string[]> {
  const found = new Set<string>();
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1000);
    cursor = next;
    for (const k of keys) found.add(k);
  } while (cursor !== "0");
  return [...found];
}
