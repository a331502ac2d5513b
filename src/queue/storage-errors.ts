/**
 * Recognizes "Redis is not reachable right now" among the errors ioredis
 * throws, so callers get UNAVAILABLE (retry) rather than INTERNAL.
 */

const unavailableMessages = [
  "Connection is closed",
  "Stream isn't writeable",
  "Reached the max retries per request limit",
  "Command timed out",
  "connect ETIMEDOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "LOADING",
  "MASTERDOWN",
  "READONLY",
  "BUSY ",
  "TRYAGAIN",
  "OOM command not allowed",
  // A Redis Cluster failing over (docs/cluster-notes.md): retried by the
  // client until its redirections ran out, or refused while slots move.
  "Too many Cluster redirections",
  "CLUSTERDOWN",
  "MOVED ",
  "ASK ",
  "Cluster isn't ready",
  "None of startup nodes is available",
  "Failed to refresh slots cache",
];

/** True when `err` means Redis could not serve the command; the operation may be retried. */
export function isStorageUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  // ioredis rejects with redis-errors' AbortError (MaxRetriesPerRequestError
  // is one) the commands it gives up on: those in flight on a connection that
  // closed (a master killed or failing over), those of a cluster client that
  // ended or has no subscriber for a slot. Not a caller's abort (a
  // DOMException, api/error-map.ts): Redis could not serve the command.
  if (err.name === "AbortError" && !(err instanceof DOMException)) return true;
  if (err.name === "MaxRetriesPerRequestError") return true;
  const code = (err as { code?: unknown }).code;
  if (
    typeof code === "string" &&
    /^E(CONNREFUSED|CONNRESET|PIPE|TIMEDOUT|HOSTUNREACH|NOTFOUND)$/.test(code)
  ) {
    return true;
  }
  return unavailableMessages.some((m) => err.message.includes(m));
}

/**
 * Runs `op` again while it fails because Redis could not serve it (see
 * isStorageUnavailable), waiting 100 ms, then twice as long each time up to
 * 2 s (a connection's reconnect pace, connections.ts), until it succeeds, it
 * fails otherwise, `deadlineMs` have passed or `stopped()` says so; then the
 * last error is thrown. For writes that must land once Redis is back, when
 * nothing else would retry them: `op` must be safe to run more than once.
 */
export async function retryWhileUnavailable<T>(
  op: () => Promise<T>,
  options: { deadlineMs: number; stopped?: () => boolean },
): Promise<T> {
  const deadline = Date.now() + options.deadlineMs;
  for (let wait = 100; ; wait = Math.min(2000, wait * 2)) {
    try {
      return await op();
    } catch (err) {
      const left = deadline - Date.now();
      if (!isStorageUnavailable(err) || left <= 0 || options.stopped?.() === true) throw err;
      await new Promise((resolve) => setTimeout(resolve, Math.min(wait, left)));
    }
  }
}
