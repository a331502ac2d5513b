/**
 * A preload (`--import`) that records where a process allocates, garbage
 * included: V8's sampling heap profiler with the objects that minor and major
 * GCs collected kept in the profile (`--heap-prof` keeps only what is live at
 * exit, which says nothing about garbage). Bench-only; nothing in src/ knows.
 * The profile (.heapprofile, for Chrome DevTools' Memory panel or speedscope)
 * is written when the process exits, e.g. at the SIGTERM submit-ab.ts sends:
 *
 *   npx tsx bench/submit-ab.ts --rounds 2 \
 *     "A=.@NODE_OPTIONS=--import=tsx --import=./bench/heap-sampling.ts,HEAP_SAMPLING_DELAY_MS=3000"
 *
 * (tsx first: NODE_OPTIONS' imports run before the command line's.)
 *
 * HEAP_SAMPLING_DELAY_MS (default 0) skips the start-up; HEAP_SAMPLING_OUT
 * (default `heap`) prefixes the file's name, `<prefix>-<pid>.heapprofile`;
 * HEAP_SAMPLING_INTERVAL is the mean bytes between samples (default 1024).
 */
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";

const session = new Session();
session.connect();
const start = () =>
  session.post("HeapProfiler.startSampling", {
    samplingInterval: Number(process.env.HEAP_SAMPLING_INTERVAL ?? 1024),
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
const delayMs = Number(process.env.HEAP_SAMPLING_DELAY_MS ?? 0);
if (delayMs > 0) setTimeout(start, delayMs).unref();
else start();
process.on("exit", () => {
  // An in-process session answers synchronously, so this runs before the exit.
  session.post("HeapProfiler.stopSampling", (err, result) => {
    if (err !== null) return;
    writeFileSync(
      `${process.env.HEAP_SAMPLING_OUT ?? "heap"}-${process.pid}.heapprofile`,
      JSON.stringify(result.profile),
    );
  });
});
