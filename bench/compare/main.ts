/**
 * `npm run bench:compare`: this service against the naive Express + BullMQ
 * baseline, side by side, interleaved, on fresh private redis-servers. Prints
 * a table of medians and ratios (ours / baseline), then one JSON line with
 * every figure; progress goes to stderr. Exits 1 when any measurement had
 * errors, 2 on a bad command line. See `--help` and docs/performance.md.
 */
import { performance } from "node:perf_hooks";
import { parseCompareArgs, usage } from "./options.js";
import { formatJson, formatTable } from "./report.js";
import { runCompare } from "./run-compare.js";

let parsed: ReturnType<typeof parseCompareArgs>;
try {
  parsed = parseCompareArgs(process.argv.slice(2));
} catch (err) {
  process.stderr.write(
    `bench:compare: ${err instanceof Error ? err.message : String(err)}\n\n${usage}`,
  );
  process.exit(2);
}
if (parsed === "help") {
  process.stdout.write(usage);
  process.exit(0);
}
const options = parsed;
try {
  const began = performance.now();
  const run = await runCompare(options, (line) =>
    process.stderr.write(
      `bench:compare [${((performance.now() - began) / 1000).toFixed(1).padStart(5)} s] ${line}\n`,
    ),
  );
  process.stdout.write(
    `${formatTable(run.results, options, run.info, run.errors)}\n${formatJson(run.results, options, run.info, run.errors)}\n`,
  );
  process.exitCode = run.errors.length > 0 ? 1 : 0;
} catch (err) {
  process.stderr.write(
    `bench:compare: failed: ${err instanceof Error ? err.stack : String(err)}\n`,
  );
  process.exitCode = 1;
}
// Client keep-alive sockets and timers must not hold a finished run open.
setTimeout(() => process.exit(), 2000).unref();
