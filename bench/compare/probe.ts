/**
 * Preloaded (`--import`) into every service process bench:compare starts,
 * ours and the baseline alike. It lets the harness read the process's memory
 * after a full garbage collection (the process runs with --expose-gc) over
 * the IPC channel, without touching the service's code. When the harness
 * goes away the channel closes and the process stops itself (SIGTERM, so a
 * --cpu-prof profile is still written).
 */

/** A memory reading, in bytes. `gc`: whether a full GC ran first. */
export interface ProbeMemory {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  gc: boolean;
}

/** The probe's messages: requests carry `probe: "memory"`, replies add the reading. */
export type ProbeReply = { probe: "memory" } & ProbeMemory;

const gc = (globalThis as { gc?: () => void }).gc;

process.on("message", (message: unknown) => {
  if (typeof message !== "object" || message === null) return;
  if ((message as { probe?: unknown }).probe !== "memory") return;
  // Twice: the first collection may leave garbage that finalizers released.
  gc?.();
  gc?.();
  const m = process.memoryUsage();
  process.send?.({
    probe: "memory",
    rss: m.rss,
    heapUsed: m.heapUsed,
    heapTotal: m.heapTotal,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
    gc: gc !== undefined,
  } satisfies ProbeReply);
});
process.on("disconnect", () => process.kill(process.pid, "SIGTERM"));
