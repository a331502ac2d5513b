/**
 * Whether the process can do its work now: the one answer behind the API's
 * `/readyz`, the gRPC health service (grpc.health.v1) and the metrics port's
 * `/readyz`, so no two probes ever disagree. Ready means: storage (Redis)
 * answers, shutdown has not begun, and, where the process runs BullMQ
 * workers and the readiness was given them, every worker is running.
 */

/** Why the process is or is not ready; the API's `/readyz` sends it as `status`. */
export type ReadinessStatus = "ready" | "storage unavailable" | "stopping" | "workers stopped";

/** The storage state readiness follows (src/queue/storage-health.ts implements it). */
export interface StorageState {
  readonly healthy: boolean;
  subscribe(listener: (healthy: boolean) => void): () => void;
}

/** What readiness looks at. */
export interface ReadinessDeps {
  storage: StorageState;
  /** Aborted when shutdown begins: never ready again. */
  shutdownSignal: AbortSignal;
  /**
   * Whether the process's BullMQ workers are all running; leave it out where
   * workers do not matter (the API's own probes: its RPCs need Redis, not workers).
   */
  workersRunning?: () => boolean;
}

/** The readiness of a process. */
export interface Readiness {
  /** "ready", or the first reason it is not, checked in the order of ReadinessStatus. */
  status(): ReadinessStatus;
  /**
   * Calls `listener` whenever status() may have changed: storage went up or
   * down, or shutdown began. (Workers only stop during shutdown or by hand, so
   * they notify nobody.) Returns the unsubscribe function.
   */
  subscribe(listener: () => void): () => void;
}

/** Creates the readiness over `deps`. */
export function createReadiness(deps: ReadinessDeps): Readiness {
  const { storage, shutdownSignal, workersRunning } = deps;
  return {
    status() {
      if (!storage.healthy) return "storage unavailable";
      if (shutdownSignal.aborted) return "stopping";
      if (workersRunning !== undefined && !workersRunning()) return "workers stopped";
      return "ready";
    },
    subscribe(listener) {
      const onShutdown = () => listener();
      const unsubscribe = storage.subscribe(() => listener());
      shutdownSignal.addEventListener("abort", onShutdown);
      return () => {
        unsubscribe();
        shutdownSignal.removeEventListener("abort", onShutdown);
      };
    },
  };
}
