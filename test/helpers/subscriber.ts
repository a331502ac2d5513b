/**
 * A connection for tests to SSUBSCRIBE on: the service's own subscriber
 * connection, whose subscribes wait until it is ready (a subscribe sent
 * before that made ioredis drop the connection, and the test miss what was
 * published meanwhile).
 */
import type { Redis } from "ioredis";
import { createRedisConnection } from "../../src/queue/connections.js";
import { createLogger } from "../../src/telemetry/logger.js";

export function openSubscriber(url: string): Redis {
  return createRedisConnection(url, "subscriber", createLogger("silent"), "test");
}
