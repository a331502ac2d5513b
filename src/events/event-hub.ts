/**
 * Fans job events out to every watcher in this process over one Redis
 * subscriber connection, whatever the number of watchers: a job's channel is
 * subscribed while at least one watcher wants it. When the connection drops,
 * messages published meanwhile are lost, so after re-subscribing the hub asks
 * every listener to resync from the event log (see watchJobEvents).
 *
 * Channels are sharded pub/sub ones (SSUBSCRIBE; the scripts SPUBLISH), on a
 * single Redis as on a cluster: there a channel lives in its job's slot, and
 * the subscriber (an ioredis Cluster with shardedSubscribers) holds one
 * connection per master serving a subscribed channel, so an API process uses
 * at most one subscriber connection per master, whatever its watchers.
 */

import type { Cluster, Redis } from "ioredis";
import type { Logger } from "pino";
import { ShuttingDownError, StorageUnavailableError } from "../domain/errors.js";
import type { JobEventView } from "../domain/job.js";
import { decodeEvent } from "./event-codec.js";

/** Receives one job's live events. */
export interface EventListener {
  onEvent(event: JobEventView): void;
  /** Live events may have been missed; re-read the log from the last id seen. */
  onResync(): void;
}

/** The process-wide event fan-out. */
export interface EventHub {
  /** Subscribes `listener` to `jobId`; resolves once live events are flowing. Returns the unsubscribe. */
  subscribe(jobId: string, listener: EventListener): Promise<() => void>;
  /** Listeners currently subscribed. */
  readonly listenerCount: number;
  /** Unsubscribes everything. The connection itself belongs to the caller. */
  close(): Promise<void>;
}

interface Channel {
  listeners: Set<EventListener>;
  ready: Promise<void>;
}

/** Names a job's event channel: queue/keys.ts's `Keys` is one. */
export interface EventChannels {
  eventChannel(jobId: string): string;
}

/**
 * Creates a hub over `subscriber`, a connection used for nothing else (it is
 * put into subscriber mode). The channel names are handed in, so that
 * events/ does not import queue/ (which imports events/ for the codec).
 */
export function createEventHub(deps: {
  subscriber: Redis | Cluster;
  keys: EventChannels;
  logger: Logger;
}): EventHub {
  const { subscriber, keys, logger } = deps;
  const channels = new Map<string, Channel>();
  let listenerCount = 0;
  let closed = false;
  let wasReady = subscriber.status === "ready";

  const onMessage = (channel: string, message: string) => {
    const entry = channels.get(channel);
    if (entry === undefined) return;
    let event: JobEventView;
    try {
      const [id, fields] = JSON.parse(message) as [string, string[]];
      event = decodeEvent(id, fields);
    } catch (err) {
      logger.warn({ err, channel }, "dropping malformed event message");
      return;
    }
    for (const l of entry.listeners) l.onEvent(event);
  };

  // After a reconnect, subscribe again ourselves (autoResubscribe is off) and
  // only then tell listeners to resync, so no event falls between the two.
  const onReady = () => {
    if (!wasReady) {
      wasReady = true;
      return;
    }
    const names = [...channels.keys()];
    if (names.length === 0) return;
    subscriber
      .ssubscribe(...names)
      .then(() => resyncAll(names))
      .catch((err: unknown) =>
        logger.warn({ err }, "re-subscribe failed; will retry on next reconnect"),
      );
  };
  const resyncAll = (names: string[]) => {
    for (const name of names) for (const l of channels.get(name)?.listeners ?? []) l.onResync();
  };
  // A cluster's subscriber group re-subscribes by itself when a master's
  // connection was replaced (a failover), then says `subscribersReady`;
  // messages of the gap are lost, so every listener resyncs. The group may
  // churn while a master is down: one resync per quiet 200 ms.
  let resyncTimer: NodeJS.Timeout | undefined;
  const onSubscribersReady = () => {
    clearTimeout(resyncTimer);
    resyncTimer = setTimeout(() => resyncAll([...channels.keys()]), 200);
    resyncTimer.unref();
  };

  if (subscriber.isCluster) {
    subscriber.on("subscribersReady", onSubscribersReady);
  } else {
    (subscriber as Redis).options.autoResubscribe = false;
    subscriber.on("ready", onReady);
  }
  subscriber.on("smessage", onMessage);

  return {
    get listenerCount() {
      return listenerCount;
    },

    async subscribe(jobId, listener) {
      if (closed) throw new ShuttingDownError();
      // Fail fast while Redis is away rather than queueing the SUBSCRIBE.
      if (subscriber.status !== "ready") throw new StorageUnavailableError();
      const name = keys.eventChannel(jobId);
      let entry = channels.get(name);
      if (entry === undefined) {
        const ready = subscriber.ssubscribe(name).then(() => undefined);
        entry = { listeners: new Set(), ready };
        channels.set(name, entry);
        // A failed subscribe must not poison later watchers of the same job.
        ready.catch(() => {
          if (channels.get(name) === entry && entry?.listeners.size === 0) channels.delete(name);
        });
      }
      const current = entry;
      current.listeners.add(listener);
      listenerCount++;
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        listenerCount--;
        current.listeners.delete(listener);
        if (current.listeners.size === 0 && channels.get(name) === current) {
          channels.delete(name);
          if (!closed) subscriber.sunsubscribe(name).catch(() => undefined);
        }
      };
      try {
        await current.ready;
      } catch (err) {
        release();
        throw err;
      }
      return release;
    },

    async close() {
      if (closed) return;
      closed = true;
      subscriber.off("smessage", onMessage);
      subscriber.off("ready", onReady);
      subscriber.off("subscribersReady", onSubscribersReady);
      clearTimeout(resyncTimer);
      const names = [...channels.keys()];
      channels.clear();
      listenerCount = 0;
      if (names.length > 0 && subscriber.status === "ready") {
        // One call per channel: on a cluster, channels of one call must share a slot.
        await Promise.all(names.map((n) => subscriber.sunsubscribe(n).catch(() => undefined)));
      }
    },
  };
}
