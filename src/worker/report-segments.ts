/**
 * Report segments: files that each hold many reports, appended by one
 * worker process, so a report costs no new inode. On ext4 a new inode is the
 * dearest part of storing a small report (more CPU than the fsyncs, and the
 * shared folder's lock is contended by concurrent creates; on a file system
 * without a journal the allocator skips recently deleted inodes and reads
 * inode-table blocks for each: see docs/performance.md "Seventh pass").
 *
 * A process has at most one open segment, in the deployment's `@segments`
 * folder (domain/artifact-paths.ts), under a fresh name no other process
 * uses. `append` reserves the next offset in-process, writes the bytes there
 * (a positional write: concurrent appends never interleave) and waits for an
 * fdatasync of the segment that started after its write; the appends of one
 * turn of the event loop share one (`coalesceSyncs`). The segment's entry is
 * made durable (its folder fsynced) once, when it is created. The record of
 * the SUCCEEDED transition then names the segment, offset and length: what
 * it names is durable first, as for a file of its own.
 *
 * Nothing reads a segment except at a place a record names, so bytes that no
 * record names are harmless: an attempt whose SUCCEEDED was refused, or a
 * half-written tail after a crash (the next process writes a segment of its
 * own). They go when the segment goes.
 *
 * A segment takes appends until it holds `maxBytes` or is `maxAgeMs` old,
 * whichever comes first; then the next append opens a new one. So no append
 * ever lands in a segment older than `maxAgeMs` (by its name's creation
 * time), whatever its writer does: the janitor removes a segment once it is
 * older than that plus the longest record retention plus a grace
 * (`removeExpired`), when no record can name it any more.
 */
import { close, closeSync, mkdirSync, open, writeSync } from "node:fs";
import { readdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import {
  newSegmentName,
  parseSegmentName,
  segmentFile,
  segmentFolder,
} from "../domain/artifact-paths.js";
import type { SegmentLocation } from "../domain/job.js";
import { coalesceSyncs, fdatasyncFd, syncFolder } from "./file-syncs.js";
import { randomText } from "./random-text.js";

/** How a process's segments roll. */
export interface SegmentLimits {
  /** A segment takes no append that would make it larger than this (unless it is empty). */
  readonly maxBytes: number;
  /** A segment takes no append once this old (ms since its creation). */
  readonly maxAgeMs: number;
}

/** The defaults: 64 MiB or 10 minutes. */
export const defaultSegmentLimits: SegmentLimits = {
  maxBytes: 64 * 1024 * 1024,
  maxAgeMs: 10 * 60_000,
};

/** Appends reports to this process's open segment. */
export interface SegmentWriter {
  /** Appends `content` durably (fdatasync) and answers where it is. */
  append(content: string | Uint8Array): Promise<SegmentLocation>;
  /** The name of the open segment, if any (the janitor never removes it). */
  openName(): string | undefined;
  /** Seals the open segment (closes it once its appends are durable); later appends open a new one. */
  close(): Promise<void>;
}

/** One open segment. */
interface Segment {
  readonly name: string;
  readonly fd: number;
  readonly createdAt: number;
  /** The next free offset. */
  end: number;
  /** Appends not yet durable: the descriptor stays open until they are. */
  pending: number;
  sealed: boolean;
  /** Resolves once the descriptor is closed (set when sealed). */
  closed?: Promise<void>;
  closeNow?: () => void;
}

/** Creates the writer of segments in the deployment's folder `dir`. */
export function createSegmentWriter(
  dir: string,
  limits: SegmentLimits = defaultSegmentLimits,
  now: () => number = Date.now,
): SegmentWriter {
  const folder = segmentFolder(dir);
  let current: Segment | undefined;
  let opening: Promise<Segment> | undefined;
  let ageTimer: NodeJS.Timeout | undefined;
  const byName = new Map<string, Segment>();
  const sync = coalesceSyncs((name) => {
    const segment = byName.get(name);
    return segment === undefined ? Promise.resolve() : fdatasyncFd(segment.fd);
  });

  const seal = (segment: Segment): Promise<void> => {
    if (segment.closed !== undefined) return segment.closed;
    segment.sealed = true;
    if (current === segment) {
      current = undefined;
      clearTimeout(ageTimer);
    }
    segment.closed = new Promise<void>((resolve) => {
      segment.closeNow = () => {
        byName.delete(segment.name);
        close(segment.fd, () => resolve());
      };
    });
    if (segment.pending === 0) segment.closeNow?.();
    return segment.closed;
  };

  const openSegment = async (): Promise<Segment> => {
    const createdAt = now();
    const name = newSegmentName(createdAt, randomText(8, "hex"));
    const file = path.join(folder, name);
    // The folder, once per deployment (and its parents): their entries made durable too.
    const made = mkdirSync(folder, { recursive: true });
    const fd = await openFd(file);
    // The new entry's folder, and when folders were made, the folders holding them.
    const folders = [folder];
    if (made !== undefined) {
      for (let d = folder; d !== path.dirname(made) && d !== path.dirname(d); ) {
        d = path.dirname(d);
        folders.push(d);
      }
    }
    try {
      await Promise.all(folders.map(syncFolder));
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    const segment: Segment = { name, fd, createdAt, end: 0, pending: 0, sealed: false };
    byName.set(name, segment);
    return segment;
  };

  /** Whether segment `s` takes `size` more bytes now. */
  const takes = (s: Segment, size: number) =>
    (s.end === 0 || s.end + size <= limits.maxBytes) && now() - s.createdAt < limits.maxAgeMs;

  /** The open segment that takes `size` more bytes now, opened when needed. */
  const segmentFor = async (size: number): Promise<Segment> => {
    for (;;) {
      const s = current;
      if (s !== undefined) {
        if (takes(s, size)) return s;
        void seal(s);
      }
      if (opening === undefined) {
        opening = openSegment().finally(() => {
          opening = undefined;
        });
        const opened = await opening;
        current = opened;
        clearTimeout(ageTimer);
        // An idle segment is closed once it takes no more appends.
        ageTimer = setTimeout(() => void seal(opened), limits.maxAgeMs);
        ageTimer.unref();
      } else {
        await opening;
      }
    }
  };

  return {
    async append(content) {
      const bytes = typeof content === "string" ? Buffer.from(content) : content;
      const open = current;
      // Most appends go to the open segment: no await before the write.
      const segment =
        open !== undefined && takes(open, bytes.byteLength)
          ? open
          : await segmentFor(bytes.byteLength);
      const offset = segment.end;
      segment.end += bytes.byteLength;
      segment.pending += 1;
      try {
        try {
          let done = 0;
          while (done < bytes.byteLength) {
            done += writeSync(segment.fd, bytes, done, bytes.byteLength - done, offset + done);
          }
        } catch (err) {
          // Whatever the failure left in the segment, the next append goes to another.
          void seal(segment);
          throw err;
        }
        await sync(segment.name).catch((err: unknown) => {
          // After a failed sync the file's cached pages cannot be trusted: no more appends.
          void seal(segment);
          throw err;
        });
      } finally {
        segment.pending -= 1;
        if (segment.sealed && segment.pending === 0) segment.closeNow?.();
      }
      return { name: segment.name, offset };
    },
    openName() {
      return current?.name;
    },
    async close() {
      clearTimeout(ageTimer);
      await opening?.catch(() => undefined);
      await Promise.all([...byName.values()].map(seal));
    },
  };
}

/**
 * Removes the segments in the deployment's folder `dir` that no record can
 * name any more: those whose last append (at most `maxAgeMs` after their
 * creation, and no later than their last modification) was more than
 * `keepMs` ago; never `open` (a live writer's). Answers how many went.
 */
export async function removeExpiredSegments(
  dir: string,
  keepMs: number,
  open: ReadonlySet<string>,
  limits: SegmentLimits = defaultSegmentLimits,
  nowMs: number = Date.now(),
): Promise<number> {
  const folder = segmentFolder(dir);
  const names = await readdir(folder).catch(() => [] as string[]);
  let removed = 0;
  for (const name of names) {
    const createdAt = parseSegmentName(name);
    const file = segmentFile(dir, name);
    if (createdAt === undefined || file === undefined || open.has(name)) continue;
    if (createdAt + limits.maxAgeMs + keepMs > nowMs) continue;
    const info = await stat(file).catch(() => undefined);
    if (info === undefined || info.mtimeMs + keepMs > nowMs) continue;
    await rm(file, { force: true });
    removed += 1;
  }
  return removed;
}

/** Creates a new file for appending (it must not exist), on the thread pool. */
function openFd(file: string): Promise<number> {
  return new Promise((resolve, reject) => {
    open(file, "wx", (err, fd) => (err === null ? resolve(fd) : reject(err)));
  });
}
