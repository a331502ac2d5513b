/**
 * Preloaded (`--import`) into every service process bench:compare starts,
 * ours and the baseline alike. It lets the harness read the process's memory
 * after a full garbage collection (the process runs with --expose-gc), and
 * what it has allocated and collected so far (`ProbeGc`), over the IPC
 * channel, without touching the service's code. When the harness
 * goes away the channel closes and the process stops itself (SIGTERM, so a
 * --cpu-prof profile is still written).
 */
import { GCProfiler, getHeapStatistics } from "node:v8";

/** A memory reading, in bytes. `gc`: whether a full GC ran first. */
export interface ProbeMemory {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  gc: boolean;
}

/**
 * The process's allocation and collections since it started (v8's
 * GCProfiler). `allocatedBytes`: heap bytes allocated, the growth of the used
 * heap between collections (each collection's "before" less the previous
 * one's "after") plus the growth since the last one.
 */
export interface ProbeGc {
  allocatedBytes: number;
  /** Young-generation collections (scavenges). */
  scavenges: number;
  /** Every other collection (mark-compact, incremental marking steps, ...). */
  otherGcs: number;
  /** Time spent in collections, ms. */
  gcMs: number;
}

/** The probe's messages: requests carry `probe: "memory"` or `probe: "gc"`, replies add the reading. */
export type ProbeReply = ({ probe: "memory" } & ProbeMemory) | ({ probe: "gc" } & ProbeGc);

const gc = (globalThis as { gc?: () => void }).gc;

// A profiler records every collection with the heap before and after it; it
// is stopped, read and restarted at each reading (a few per measurement).
const totals: ProbeGc = { allocatedBytes: 0, scavenges: 0, otherGcs: 0, gcMs: 0 };
let profiler = new GCProfiler();
let lastUsed = getHeapStatistics().used_heap_size;
profiler.start();

function readGc(): ProbeGc {
  const stats = profiler.stop()?.statistics ?? [];
  profiler = new GCProfiler();
  profiler.start();
  for (const s of stats) {
    totals.allocatedBytes += Math.max(0, s.beforeGC.heapStatistics.usedHeapSize - lastUsed);
    lastUsed = s.afterGC.heapStatistics.usedHeapSize;
    if (s.gcType === "Scavenge" || s.gcType === "MinorMarkCompact") totals.scavenges++;
    else totals.otherGcs++;
    totals.gcMs += s.cost / 1000;
  }
  const used = getHeapStatistics().used_heap_size;
  totals.allocatedBytes += Math.max(0, used - lastUsed);
  lastUsed = used;
  return { ...totals };
}

process.on("message", (message: unknown) => {
  if (typeof message !== "object" || message === null) return;
  const probe = (message as { probe?: unknown }).probe;
  if (probe === "gc") {
    process.send?.({ probe: "gc", ...readGc() } satisfies ProbeReply);
    return;
  }
  if (probe !== "memory") return;
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
  // Re-bases the allocation count on the heap these collections left.
  readGc();
});
process.on("disconnect", () => process.kill(process.pid, "SIGTERM"));
