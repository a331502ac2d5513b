/**
 * Syncs to disk on the thread pool, and the sharing of concurrent syncs of
 * one folder or file (`coalesceSyncs`): used by the artifact store and its
 * report segments.
 */
import { closeSync, fdatasync, fsync, openSync } from "node:fs";

/** fsync(2) of an open file, on the thread pool. */
export function fsyncFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fsync(fd, (err) => (err ? reject(err) : resolve()));
  });
}

/** fdatasync(2) of an open file (its data, and its size when that grew), on the thread pool. */
export function fdatasyncFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fdatasync(fd, (err) => (err ? reject(err) : resolve()));
  });
}

/**
 * Shares syncs of one key (a folder, a segment) between concurrent callers:
 * a caller needs a sync that starts after its call (its write was made
 * before it). With none of the key running, a caller's starts at once; else
 * the callers of one turn of the event loop share one that starts at the end
 * of that turn (setImmediate), whether or not the running one has ended. At
 * 50 jobs in flight, a segment is then synced about once per turn instead of
 * once per job.
 *
 * An earlier version started the next sync only once the running one had
 * ended: at a steady 200 jobs/s about half the reports waited for the tail
 * of another report's sync and then a whole sync of their own (p90 3.6 ms
 * beyond their file's fsync on a loaded disk, against 0.01 ms for the
 * others). Started at once, a sync waits for the same journal commit as the
 * running one; started after that commit (on ext4) it flushes the disk's
 * cache once more, so a lone caller does not wait for the end of the turn.
 */
export function coalesceSyncs(
  syncOnce: (key: string) => Promise<void>,
): (key: string) => Promise<void> {
  const running = new Map<string, number>();
  // Per key: the sync the callers of this turn share, not started yet.
  const next = new Map<string, Promise<void>>();
  const start = (key: string): Promise<void> => {
    running.set(key, (running.get(key) ?? 0) + 1);
    return syncOnce(key).finally(() => {
      const left = (running.get(key) ?? 1) - 1;
      if (left === 0) running.delete(key);
      else running.set(key, left);
    });
  };
  return (key) => {
    const shared = next.get(key);
    if (shared !== undefined) return shared;
    if (!running.has(key)) return start(key);
    const sync = new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
      next.delete(key);
      return start(key);
    });
    next.set(key, sync);
    return sync;
  };
}

/** fsyncs a folder, so entries created in it survive a crash (where the platform allows). */
export async function syncFolder(folder: string): Promise<void> {
  let fd: number | undefined;
  try {
    fd = openSync(folder, "r");
    await fsyncFd(fd);
  } catch (err) {
    // Some platforms and file systems cannot fsync a folder; the entry is still there.
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "EISDIR" && code !== "EINVAL" && code !== "EPERM" && code !== "EBADF") throw err;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
