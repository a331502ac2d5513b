/**
 * What storing a report costs the worker: `ArtifactStore.put` of small
 * reports (a weekly CSV's size), unique jobs, 10 in flight (`--in-flight`), on the file
 * system of the temporary folder, as a drain makes them. Two checkouts'
 * stores take turns in one process, round by round (the order alternates),
 * each into a fresh folder; prints per round and store the process's CPU µs
 * per put (user + system, the thread pool's fsyncs included), the wall
 * time per put (the run's length over its puts) and each put's own p50 and
 * p99, then the medians. `--gap-ms` has each lane wait that long between its
 * puts, as a job's other work spaces them out in a drain. `--deleted N`
 * creates and deletes N files on the same file system just before each
 * measured run (ext4 without a journal then skips those recently deleted
 * inodes at each create: see docs/performance.md "Seventh pass"); stores
 * that hold a report segment open are closed after each run.
 *
 *   npx tsx bench/artifact-put-micro.ts <old root> [new root] [--puts N] [--rounds N] [--in-flight N] [--gap-ms MS] [--deleted N]
 *
 * A root is a checkout whose src/ is measured (an export of another commit
 * with node_modules linked); the new root defaults to this checkout.
 */
import { randomBytes } from "node:crypto";
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const args = process.argv.slice(2);
const option = (name: string, fallback: number) => {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  const value = Number(args[i + 1]);
  args.splice(i, 2);
  return value;
};
const puts = option("--puts", 2000);
const rounds = option("--rounds", 6);
const inFlight = option("--in-flight", 10);
const gapMs = option("--gap-ms", 0);
const deleted = option("--deleted", 0);
const [oldRoot, newRoot = new URL("..", import.meta.url).pathname] = args;
if (oldRoot === undefined) {
  console.error("usage: artifact-put-micro.ts <old root> [new root] [--puts N] [--rounds N]");
  process.exit(2);
}

type StoreModule = typeof import("../src/worker/artifact-store.js");
const load = async (root: string) =>
  (await import(path.join(path.resolve(root), "src/worker/artifact-store.ts"))) as StoreModule;
const trees = [
  { name: "old", module: await load(oldRoot) },
  { name: "new", module: await load(newRoot) },
];

// About what the weekly generator writes for a no-op job.
const content = `date,sessions,users\r\n${Array.from({ length: 7 }, (_, i) => `2026-01-0${i + 1},${i * 13},${i * 7}`).join("\r\n")}\r\n`;

async function run(
  module: StoreModule,
): Promise<{ cpuUs: number; wallUs: number; p50Us: number; p99Us: number }> {
  const root = mkdtempSync(path.join(tmpdir(), "artifact-put-micro-"));
  if (deleted > 0) {
    const scratch = path.join(root, "deleted");
    mkdirSync(scratch);
    for (let i = 0; i < deleted; i++) closeSync(openSync(path.join(scratch, String(i)), "w"));
    rmSync(scratch, { recursive: true });
  }
  const store = module.createArtifactStore(path.join(root, "@bench"));
  const ids = Array.from({ length: puts }, () => randomBytes(16).toString("base64url"));
  let next = 0;
  const took: number[] = [];
  const lane = async () => {
    while (next < ids.length) {
      const id = ids[next++] as string;
      const t0 = performance.now();
      await store.put(id, module.newAttemptTag(1), "weekly.csv", "text/csv", content);
      took.push((performance.now() - t0) * 1000);
      if (gapMs > 0) await new Promise((resolve) => setTimeout(resolve, gapMs));
    }
  };
  const cpu = process.cpuUsage();
  const start = performance.now();
  await Promise.all(Array.from({ length: inFlight }, lane));
  const wallUs = ((performance.now() - start) * 1000) / puts;
  const used = process.cpuUsage(cpu);
  // Stores before segments have no close.
  await (store as { close?: () => Promise<void> }).close?.();
  rmSync(root, { recursive: true, force: true });
  took.sort((a, b) => a - b);
  return {
    cpuUs: (used.user + used.system) / puts,
    wallUs,
    p50Us: took[Math.floor(took.length * 0.5)] ?? 0,
    p99Us: took[Math.floor(took.length * 0.99)] ?? 0,
  };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1
    ? (s[mid] as number)
    : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
};

// One unmeasured round each: JIT and page cache.
for (const tree of trees) await run(tree.module);
const figures = new Map(
  trees.map((t) => [
    t.name,
    { cpu: [] as number[], wall: [] as number[], p50: [] as number[], p99: [] as number[] },
  ]),
);
for (let round = 0; round < rounds; round++) {
  const order = round % 2 === 0 ? trees : [...trees].reverse();
  for (const tree of order) {
    const r = await run(tree.module);
    figures.get(tree.name)?.cpu.push(r.cpuUs);
    figures.get(tree.name)?.wall.push(r.wallUs);
    figures.get(tree.name)?.p50.push(r.p50Us);
    figures.get(tree.name)?.p99.push(r.p99Us);
    console.log(
      `round ${round + 1} ${tree.name}: CPU ${r.cpuUs.toFixed(0)} µs/put, wall ${r.wallUs.toFixed(0)} µs/put, put p50 ${r.p50Us.toFixed(0)} p99 ${r.p99Us.toFixed(0)} µs`,
    );
  }
}
for (const [name, f] of figures) {
  console.log(
    `${name}: median CPU ${median(f.cpu).toFixed(0)} µs/put (${f.cpu.map((x) => x.toFixed(0)).join(", ")}), wall ${median(f.wall).toFixed(0)} µs/put, put p50 ${median(f.p50).toFixed(0)} p99 ${median(f.p99).toFixed(0)} µs`,
  );
}
