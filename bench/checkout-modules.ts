/**
 * The transition applier's modules of one checkout (a tree of this repository
 * at `root`, e.g. an export of main), loaded from its own src/, so that the
 * transition benches can run several checkouts side by side in one process.
 */
import path from "node:path";

/** The modules of checkout `root` that the transition benches use. */
export async function transitionModulesOf(root: string) {
  const src = (module: string) => path.join(root, "src", module);
  const [
    { createTransitionApplier },
    { createRedisConnection },
    { createKeys },
    { encodeNewRecord },
  ] = (await Promise.all([
    import(src("queue/transition-applier.ts")),
    import(src("queue/connections.ts")),
    import(src("queue/keys.ts")),
    import(src("queue/job-record.ts")),
  ])) as [
    typeof import("../src/queue/transition-applier.js"),
    typeof import("../src/queue/connections.js"),
    typeof import("../src/queue/keys.js"),
    typeof import("../src/queue/job-record.js"),
  ];
  return { createTransitionApplier, createRedisConnection, createKeys, encodeNewRecord };
}
