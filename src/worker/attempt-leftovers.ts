/**
 * Files that attempts wrote and never published: the files (or, stored
 * before, the entries in the job's folder) of attempts that died (SIGKILL, a
 * crash) or lost their lock before removing them, and of attempts of a job
 * that ended CANCELLED (its worker removes only its own file). They are never served (the record names the one published file) and
 * are removed once their job has ended, when no attempt can publish any more.
 * The janitor runs this on every sweep; files of jobs without a record are
 * the janitor's own business.
 */
import { publishedEntry } from "../domain/artifact-paths.js";
import { terminalStates } from "../domain/job.js";
import type { RedisClient } from "../queue/connections.js";
import { recordField } from "../queue/job-record.js";
import type { Keys } from "../queue/keys.js";
import { perJobPipeline } from "../queue/per-job-pipeline.js";
import type { ArtifactStore } from "./artifact-store.js";

/** Removes leftovers of finished jobs under ARTIFACT_DIR; resolves with how many entries went. */
export type LeftoverSweep = () => Promise<number>;

/** The states after which no attempt publishes. */
const ended: ReadonlySet<string | null> = terminalStates;

/** Creates the sweep over the job records of `keys` and the files of `artifacts`. */
export function createLeftoverSweep(deps: {
  redis: RedisClient;
  keys: Keys;
  artifacts: ArtifactStore;
}): LeftoverSweep {
  const { redis, keys, artifacts } = deps;
  return async () => {
    const stored = await artifacts.list();
    const ids = [...stored.keys()];
    let removed = 0;
    for (let i = 0; i < ids.length; i += 200) {
      const chunk = ids.slice(i, i + 200);
      // Listed before the records are read: whatever is listed belongs to an
      // attempt that began before the read, and none can publish once the
      // record says the job ended (a re-run after RetryJob writes elsewhere).
      const listed = await Promise.all(chunk.map((id) => artifacts.entries(id, stored.get(id))));
      const replies = await perJobPipeline(redis, keys, chunk, (p, id) =>
        p.hmget(keys.job(id), recordField.state, recordField.resultPath),
      );
      for (const [j, id] of chunk.entries()) {
        const [err, fields] = replies[j] ?? [];
        if (err || !Array.isArray(fields)) continue;
        const [state, resultPath] = fields as Array<string | null>;
        if (state === undefined || !ended.has(state)) continue;
        const keep = resultPath ? publishedEntry(resultPath) : undefined;
        const extra = (listed[j] ?? []).filter((entry) => entry !== keep);
        if (extra.length === 0) continue;
        await artifacts.removeEntries(id, extra);
        removed += extra.length;
      }
    }
    return removed;
  };
}
