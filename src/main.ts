/**
 * The one entry: `tsx src/main.ts [api|worker|all]`. Validates the
 * configuration (one line per problem), finds or starts Redis, starts the
 * parts for the mode, and on SIGTERM/SIGINT closes them in order and exits 0.
 */
import cluster from "node:cluster";
import { stopMessage, superviseApiProcesses } from "./api-processes.js";
import { createApp } from "./app.js";
import { type Config, ConfigError, loadConfig } from "./config/config.js";
import {
  hasRedisServer,
  isListening,
  type PrivateRedis,
  startPrivateRedis,
} from "./queue/private-redis.js";
import { createLogger } from "./telemetry/logger.js";
import { currentTelemetry } from "./telemetry/telemetry.js";

async function main(): Promise<number> {
  let config: Config;
  try {
    config = loadConfig(process.env, process.argv[2]);
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const p of err.problems) process.stderr.write(`config: ${p}\n`);
      return 2;
    }
    throw err;
  }
  const { processes, processIndex } = config.api;
  const logger = createLogger(
    config.telemetry.logLevel,
    { mode: config.mode, ...(processIndex === undefined ? {} : { api_process: processIndex }) },
    { format: config.telemetry.logFormat },
  );

  let privateRedis: PrivateRedis | undefined;
  if (
    config.redis.urlDefaulted &&
    config.redis.clusterNodes.length === 0 &&
    !(await isListening("127.0.0.1", 6379))
  ) {
    if (config.mode !== "all") {
      process.stderr.write(
        `No Redis at 127.0.0.1:6379: set REDIS_URL (an ${config.mode} process must share Redis with the other parts; only \`npm start\` starts a private one).\n`,
      );
      return 1;
    }
    if (!hasRedisServer()) {
      process.stderr.write(
        "No Redis at 127.0.0.1:6379 and no redis-server on the PATH: install it (apt-get install redis-server, brew install redis) or set REDIS_URL.\n",
      );
      return 1;
    }
    privateRedis = await startPrivateRedis("./.data/redis");
    config = { ...config, redis: { ...config.redis, url: privateRedis.url } };
    logger.info(
      `no Redis on 127.0.0.1:6379: started a private redis-server at ${privateRedis.url} (data in ${privateRedis.dir})`,
    );
  }

  if (processes > 1 && cluster.isPrimary) {
    // API_PROCESSES: this process only runs and stops the API processes.
    return superviseApiProcesses(processes, logger);
  }

  const app = createApp(config, { logger });
  let stopping = false;
  const stop = new Promise<number>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        logger.warn({ signal }, "second signal: exiting now");
        process.exit(1);
      }
      stopping = true;
      logger.info({ signal }, "stopping");
      app
        .close()
        .then(() => privateRedis?.stop())
        .then(() => currentTelemetry()?.shutdown())
        .then(
          () => resolve(0),
          () => resolve(1),
        );
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
    if (cluster.isWorker) {
      // One of API_PROCESSES: the primary's stop is a SIGTERM. Only a real
      // second signal forces the exit (Ctrl-C reaches every process of the
      // group, as well as the primary, which then sends its stop too).
      process.on("message", (message: unknown) => {
        if (message === stopMessage && !stopping) onSignal("SIGTERM");
      });
      // The IPC channel alone must not keep a stopped process alive.
      process.channel?.unref();
    }
  });
  try {
    await app.start();
  } catch (err) {
    logger.error(err instanceof Error ? err.message : String(err));
    await app.close();
    await privateRedis?.stop();
    return 1;
  }
  return stop;
}

main().then(
  (code) => {
    process.exitCode = code;
    // Anything still holding the event loop after an orderly close is a bug;
    // do not let it keep a stopping process alive.
    setTimeout(() => process.exit(code), 2000).unref();
  },
  (err: unknown) => {
    process.stderr.write(`fatal: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
