/**
 * Whether the Redis this process talks to is the one the reports in
 * ARTIFACT_DIR were written with. The janitor deletes a report whose job has
 * no record; if Redis restarted empty (no AOF) or REDIS_URL now names another
 * server, every job "has no record", and a sweep would delete every report.
 *
 * So a deployment carries a marker: a random id kept both in Redis
 * (keys.deployment) and in a file beside the reports. The first worker of a
 * deployment writes both; afterwards the two must match. A folder without the
 * file adopts Redis's marker (or a new one); Redis without the key, or with
 * another id, while the file exists, means Redis is not the one the reports
 * belong to: check() says so loudly and answers false until an operator
 * restores Redis or deletes the file (accepting that Redis starts over).
 */
import { randomBytes } from "node:crypto";
import { link, mkdir, readFile, unlink, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";
import type { RedisClient } from "../queue/connections.js";

/** The check. */
export interface DeploymentMarker {
  /** The marker file's path. */
  readonly file: string;
  /**
   * True when Redis and the folder hold the same marker (writing both for a
   * fresh deployment); false, with an error log line, when they disagree.
   * @throws when Redis or the folder cannot be read.
   */
  check(): Promise<boolean>;
}

/** The marker file of `key` in `artifactDir`: a dot file, which no job folder can be. */
export function deploymentMarkerFile(artifactDir: string, key: string): string {
  return path.join(artifactDir, `.marker-${key.replaceAll(":", "-")}`);
}

/** Creates the check for marker key `key` and the folder `artifactDir`. */
export function createDeploymentMarker(deps: {
  redis: RedisClient;
  key: string;
  artifactDir: string;
  logger: Logger;
}): DeploymentMarker {
  const { redis, key, logger } = deps;
  const file = deploymentMarkerFile(deps.artifactDir, key);

  const readFileMarker = async (): Promise<string | undefined> => {
    try {
      return (await readFile(file, "utf8")).trim();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  };

  /** Writes `id` as the file unless one exists (link is atomic: no reader sees half a file). */
  const writeFileMarker = async (id: string): Promise<string | undefined> => {
    await mkdir(path.dirname(file), { recursive: true });
    const tmp = `${file}.${randomBytes(6).toString("hex")}.tmp`;
    await writeFile(tmp, `${id}\n`);
    try {
      await link(tmp, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
    return readFileMarker();
  };

  return {
    file,
    async check() {
      let onDisk = await readFileMarker();
      let inRedis = await redis.get(key);
      if (onDisk === undefined) {
        // A fresh folder: adopt Redis's marker, or make the deployment's first.
        if (inRedis === null) {
          await redis.set(key, randomBytes(16).toString("base64url"), "NX");
          inRedis = await redis.get(key);
        }
        if (inRedis === null) return false;
        onDisk = await writeFileMarker(inRedis);
      }
      if (onDisk === inRedis) return true;
      logger.error(
        { marker_file: file, marker_key: key, in_redis: inRedis !== null },
        inRedis === null
          ? `Redis has lost this deployment's marker (${key}) that ${file} holds: it restarted empty (no AOF?) or is not the Redis these reports were written with. Report files of jobs Redis does not know are kept, not deleted; restore Redis, or delete ${file} to accept that their jobs are gone`
          : `Redis holds another deployment's marker (${key}) than ${file}: REDIS_URL, REDIS_PREFIX or ARTIFACT_DIR points elsewhere than the reports were written with. Report files of jobs Redis does not know are kept, not deleted; fix the setting, or delete ${file} to adopt this Redis`,
      );
      return false;
    },
  };
}
