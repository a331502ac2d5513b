import { describe, expect, it } from "vitest";
import { createReadiness, type StorageState } from "../../src/api/readiness.js";

/** A storage state set by hand: the pure-logic stand-in for src/queue/storage-health.ts. */
function storageState(healthy: boolean) {
  const listeners = new Set<(healthy: boolean) => void>();
  const state = {
    healthy,
    subscribe(listener: (healthy: boolean) => void) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    set(next: boolean) {
      state.healthy = next;
      for (const l of listeners) l(next);
    },
    get listeners() {
      return listeners.size;
    },
  };
  return state satisfies StorageState;
}

describe("createReadiness()", () => {
  it("is ready while storage answers and shutdown has not begun", () => {
    const storage = storageState(true);
    const shutdown = new AbortController();
    const readiness = createReadiness({ storage, shutdownSignal: shutdown.signal });
    expect(readiness.status()).toBe("ready");
    storage.set(false);
    expect(readiness.status()).toBe("storage unavailable");
    storage.set(true);
    shutdown.abort();
    expect(readiness.status()).toBe("stopping");
  });

  it("names storage first when it is down during shutdown", () => {
    const shutdown = new AbortController();
    shutdown.abort();
    const readiness = createReadiness({
      storage: storageState(false),
      shutdownSignal: shutdown.signal,
    });
    expect(readiness.status()).toBe("storage unavailable");
  });

  it("counts workers only where it was given them", () => {
    const storage = storageState(true);
    const signal = new AbortController().signal;
    let running = true;
    const withWorkers = createReadiness({
      storage,
      shutdownSignal: signal,
      workersRunning: () => running,
    });
    const api = createReadiness({ storage, shutdownSignal: signal });
    expect(withWorkers.status()).toBe("ready");
    running = false;
    expect(withWorkers.status()).toBe("workers stopped");
    expect(api.status()).toBe("ready");
  });

  it("notifies on every storage change and when shutdown begins, until unsubscribed", () => {
    const storage = storageState(true);
    const shutdown = new AbortController();
    const readiness = createReadiness({ storage, shutdownSignal: shutdown.signal });
    const seen: string[] = [];
    const unsubscribe = readiness.subscribe(() => seen.push(readiness.status()));
    storage.set(false);
    storage.set(true);
    shutdown.abort();
    expect(seen).toEqual(["storage unavailable", "ready", "stopping"]);
    unsubscribe();
    expect(storage.listeners).toBe(0);
    storage.set(false);
    expect(seen).toHaveLength(3);
  });
});
