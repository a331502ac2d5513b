/**
 * The chaos run's faults, one at a time at random: SIGKILL of a worker or an
 * API process (started again after a moment), SIGSTOP/SIGCONT of one (a GC
 * pause, a VM migration, a partition), a Redis restart (SIGKILL or an orderly
 * SHUTDOWN via SIGTERM, then started again on its port with its AOF), a
 * frozen Redis (SIGSTOP/SIGCONT), and an orderly stop (SIGTERM) of a worker
 * or an API, started again once it exited. Each fault heals before its loop
 * injects the next; with several loops (CHAOS_FAULT_LOOPS) faults overlap.
 */
import type { RedisProcess, ServiceProcess } from "./processes.js";
import type { Rng } from "./rng.js";

/** The kinds of fault, as CHAOS_FAULTS names them. */
export const faultKinds = [
  "worker-kill",
  "worker-freeze",
  "worker-stop",
  "api-kill",
  "api-freeze",
  "api-stop",
  "redis-restart",
  "redis-freeze",
] as const;

/** One kind of fault. */
export type FaultKind = (typeof faultKinds)[number];

const weights: Record<FaultKind, number> = {
  "worker-kill": 3,
  "worker-freeze": 3,
  "worker-stop": 1,
  "api-kill": 2,
  "api-freeze": 2,
  "api-stop": 1,
  "redis-restart": 1.5,
  "redis-freeze": 1.5,
};

/** Injects faults until `untilMs`; resolves once the last one has healed. Returns counts by kind. */
export async function injectFaults(options: {
  rng: Rng;
  kinds: readonly FaultKind[];
  untilMs: number;
  /** Pause between two faults, in ms: [min, max]. */
  gapMs: readonly [number, number];
  redis: RedisProcess;
  apis: readonly ServiceProcess[];
  workers: readonly ServiceProcess[];
  log: (line: string) => void;
}): Promise<Map<FaultKind, number>> {
  const { rng, redis, apis, workers, log } = options;
  const counts = new Map<FaultKind, number>();
  const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const enabled = Object.fromEntries(options.kinds.map((k) => [k, weights[k]])) as Record<
    FaultKind,
    number
  >;
  if (options.kinds.length === 0) return counts;
  for (;;) {
    await pause(rng.int(options.gapMs[0], options.gapMs[1]));
    if (Date.now() >= options.untilMs) return counts;
    const kind = rng.weighted(enabled);
    counts.set(kind, (counts.get(kind) ?? 0) + 1);
    switch (kind) {
      case "worker-kill":
      case "api-kill": {
        const p = rng.pick(kind === "api-kill" ? apis : workers);
        const down = rng.int(200, 3000);
        log(`fault ${kind} ${p.name}: SIGKILL, back after ${down} ms`);
        await p.kill("SIGKILL");
        await pause(down);
        await p.start();
        log(`healed ${kind} ${p.name}`);
        break;
      }
      case "worker-stop":
      case "api-stop": {
        const p = rng.pick(kind === "api-stop" ? apis : workers);
        log(`fault ${kind} ${p.name}: SIGTERM, started again once it exited`);
        await p.kill("SIGTERM");
        await p.start();
        log(`healed ${kind} ${p.name}`);
        break;
      }
      case "worker-freeze":
      case "api-freeze": {
        const p = rng.pick(kind === "api-freeze" ? apis : workers);
        // Workers: up to 12 s, past the 8 s lock (their jobs move on; the frozen attempts are fenced).
        const ms = kind === "worker-freeze" ? rng.int(1000, 12_000) : rng.int(1000, 6000);
        log(`fault ${kind} ${p.name}: SIGSTOP for ${ms} ms`);
        p.freeze();
        await pause(ms);
        p.thaw();
        log(`healed ${kind} ${p.name}`);
        break;
      }
      case "redis-restart": {
        const signal = rng.chance(0.5) ? "SIGKILL" : "SIGTERM";
        const down = rng.int(200, 2500);
        log(`fault redis-restart: ${signal}, back after ${down} ms`);
        await redis.kill(signal);
        await pause(down);
        await redis.start();
        log("healed redis-restart");
        break;
      }
      case "redis-freeze": {
        const ms = rng.int(1000, 5000);
        log(`fault redis-freeze: SIGSTOP for ${ms} ms`);
        redis.freeze();
        await pause(ms);
        redis.thaw();
        log("healed redis-freeze");
        break;
      }
    }
  }
}
