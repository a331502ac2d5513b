/**
 * Every Redis key this service writes, in one place, each with its retention.
 * Keys are `:`-separated under one prefix so a deployment (or a test) owns a
 * namespace and `SCAN prefix:*` finds all of it.
 */

import type { ReportType } from "../domain/job.js";

/**
 * The BullMQ queue of a report type. One queue per type, so that each type
 * has its own worker concurrency and rate limit.
 */
export function queueNameFor(type: ReportType): string {
  return `reports-${type}`;
}

/**
 * Key builders for one queue shard of one prefix. A sharded key set (one
 * with a `tag`) puts `{tag}` right after the prefix in every key, BullMQ's
 * included, so that all keys of a shard share a Redis Cluster slot; the
 * unsharded one (QUEUE_SHARDS=1 on a single Redis) has the layout of before
 * sharding. The builders that take a job id (job, events, eventChannel,
 * bullJobLock) follow the shard the id names (shardTagOf), whatever shard
 * the key set is for, so any key set finds any job's keys.
 */
export interface Keys {
  /** The prefix itself (REDIS_PREFIX): it also names the deployment's artifact folder. */
  readonly prefix: string;
  /** The shard's hash tag (without braces); undefined for the unsharded layout. */
  readonly tag: string | undefined;
  /** BullMQ's own prefix: its keys are `${bullPrefix}:reports:*`; retention set per job (removeOnComplete/removeOnFail). */
  readonly bullPrefix: string;
  /** The key set of the shard job `id` lives in (see shardTagOf). */
  of(id: string): Keys;
  /** `job(id)` without the id, for scripts that make record keys of this shard's ids. */
  readonly jobPrefix: string;
  /** Hash: the job record GetJob reads in one HGETALL. No TTL while live; on a terminal state it expires with the job's retention. */
  job(id: string): string;
  /** Stream: the job's event log, capped at EVENT_STREAM_MAXLEN entries; expires with the job record. */
  events(id: string): string;
  /** Pub/sub channel: each event appended to events(id) is also published here, for the watch hub. Holds nothing. */
  eventChannel(id: string): string;
  /**
   * Hash {job, fp, until}: the idempotency record of (tenant, key). No TTL
   * while its job is live; when the job ends it expires with the job's
   * retention, or at `until` (IDEMPOTENCY_TTL after the submit) if that is
   * later, so a key never makes a second job while its first is kept.
   */
  idempotency(tenant: string, keyDigest: string): string;
  /** Sorted set (score: created ms): a tenant's jobs, for ListJobs. Members leave when their job expires (janitor). */
  tenantIndex(tenant: string): string;
  /** Sorted set like tenantIndex, for one user of the tenant. Same retention. */
  userIndex(tenant: string, userDigest: string): string;
  /**
   * Sorted set (score: finished ms) of jobs that ended SUCCEEDED, or FAILED or
   * CANCELLED ("failed"), for count-based retention. Members leave when their
   * job expires, is trimmed by count (janitor) or is retried.
   */
  finished(kind: "succeeded" | "failed"): string;
  /**
   * Sorted set (score: ms of the job's latest transition) of live jobs
   * (queued, running, retrying), for the reconciler. Every transition keeps
   * it: a job enters on submit and leaves on its terminal state, so it holds
   * only live jobs and needs no retention of its own.
   */
  readonly live: string;
  /**
   * String: set once live jobs made before the live index existed have been
   * entered in it (the reconciler's one backfill per deployment). One key, kept.
   */
  readonly liveBackfilled: string;
  /**
   * Hash {tokens, ts}: the tenant's SubmitReport token bucket (TENANT_SUBMIT_RATE).
   * Expires once it would be full again (burst / rate), so idle tenants leave nothing.
   */
  submitRate(tenant: string): string;
  /**
   * Set of job ids: the tenant's jobs that are queued or retrying, whose count
   * TENANT_MAX_BACKLOG bounds. The submit script adds a job, every transition
   * keeps its membership (apply-transition.lua, apply-attempt.lua); the janitor removes members
   * whose record says otherwise. Redis drops it when it empties.
   */
  tenantBacklog(tenant: string): string;
  /**
   * String: this deployment's marker, a random id also kept beside the
   * reports (ARTIFACT_DIR). Its absence means Redis is not the one the
   * reports were written with (it restarted empty): the janitor then deletes
   * no report. No TTL.
   */
  readonly deployment: string;
  /** Set of tenants that have an index, for the janitor. Kept while any tenant index exists. */
  readonly tenants: string;
  /** Pub/sub channel: cancel requests for running jobs (message: job id), heard by every worker. Holds nothing. */
  readonly controlChannel: string;
  /**
   * String: BullMQ's lock of an active job (`<bullPrefix>:<queue>:<id>:lock`),
   * holding the lock token of the worker fetch that runs it. BullMQ's own key:
   * it sets, renews (PX lockDuration) and deletes it; the transition script
   * only reads it, to fence an attempt's writes.
   */
  bullJobLock(type: ReportType, id: string): string;
}

/** Length of the random part of a job id (128 bits in base64url). */
const randomIdLength = 22;

/** A shard tag as shard-tags.ts makes them: never a brace, never the id separator. */
const tagPattern = /^[a-z0-9]{1,32}$/;

/**
 * The shard tag a job id names: ids of a sharded layout are
 * `<tag>_<22 random base64url characters>`; an id of the unsharded layout
 * (22 characters) names none.
 */
export function shardTagOf(id: string): string | undefined {
  const cut = id.length - randomIdLength - 1;
  if (cut < 1 || id.charCodeAt(cut) !== 0x5f /* _ */) return undefined;
  const tag = id.slice(0, cut);
  return tagPattern.test(tag) ? tag : undefined;
}

/** The id of a new job of shard `tag` (undefined: the unsharded layout), from its random part. */
export function shardJobId(tag: string | undefined, random: string): string {
  return tag === undefined ? random : `${tag}_${random}`;
}

/** How a key set is laid out. */
export interface KeyLayout {
  /**
   * On a Redis Cluster: every key set is tagged, and a job id that names no
   * shard (made before sharding) gets keys of a slot of its own, where no
   * job lives, instead of the unsharded keys that would span several slots.
   */
  cluster?: boolean;
}

/**
 * Builds the key set of shard `tag` of `prefix` (undefined: the unsharded
 * layout). @throws RangeError for a tag shard-tags.ts would not make.
 */
export function createKeys(prefix: string, tag?: string, layout: KeyLayout = {}): Keys {
  if (tag !== undefined && !tagPattern.test(tag)) {
    throw new RangeError(`a shard tag is 1-32 characters of a-z 0-9 (got ${JSON.stringify(tag)})`);
  }
  return buildKeys(prefix, tag, tag === undefined ? prefix : `${prefix}:{${tag}}`, layout);
}

// Key sets of other shards, made once: transitions route every job this way.
// Bounded: tags come from job ids, and a stray id must not grow it for ever.
const shardKeySets = new Map<string, Keys>();
function shardKeys(prefix: string, tag: string, layout: KeyLayout): Keys {
  const name = `${prefix}\u0000${tag}\u0000${layout.cluster === true}`;
  let keys = shardKeySets.get(name);
  if (keys === undefined) {
    if (shardKeySets.size >= 4096) shardKeySets.clear();
    keys = createKeys(prefix, tag, layout);
    shardKeySets.set(name, keys);
  }
  return keys;
}

function buildKeys(prefix: string, tag: string | undefined, base: string, layout: KeyLayout): Keys {
  const cluster = layout.cluster === true;
  const bullPrefix = `${base}:bull`;
  // The prefix of job `id`'s keys: its own shard's, not necessarily this one's.
  const baseOf = (id: string): string => {
    const idTag = shardTagOf(id);
    if (idTag === tag && (tag !== undefined || !cluster)) return base;
    if (idTag !== undefined) return `${prefix}:{${idTag}}`;
    return cluster ? `${prefix}:{${id}}` : prefix;
  };
  const keys: Keys = {
    prefix,
    tag,
    bullPrefix,
    of(id) {
      const idTag = shardTagOf(id);
      if (idTag === tag && (tag !== undefined || !cluster)) return keys;
      if (idTag !== undefined) return shardKeys(prefix, idTag, layout);
      // An unsharded id: its keys on a single Redis; on a cluster, a slot of its own.
      return cluster
        ? buildKeys(prefix, undefined, `${prefix}:{${id}}`, layout)
        : createKeys(prefix);
    },
    jobPrefix: `${base}:job:`,
    job: (id) => `${baseOf(id)}:job:${id}`,
    events: (id) => `${baseOf(id)}:events:${id}`,
    eventChannel: (id) => `${baseOf(id)}:ev:${id}`,
    idempotency: (tenant, digest) => `${base}:idem:${tenant}:${digest}`,
    tenantIndex: (tenant) => `${base}:idx:${tenant}`,
    userIndex: (tenant, digest) => `${base}:idx:${tenant}:user:${digest}`,
    finished: (kind) => `${base}:finished:${kind}`,
    submitRate: (tenant) => `${base}:rate:${tenant}`,
    tenantBacklog: (tenant) => `${base}:backlog:${tenant}`,
    deployment: `${base}:deployment`,
    live: `${base}:live`,
    liveBackfilled: `${base}:live:backfilled`,
    tenants: `${base}:tenants`,
    controlChannel: `${base}:control`,
    bullJobLock: (type, id) => `${baseOf(id)}:bull:${queueNameFor(type)}:${id}:lock`,
  };
  return keys;
}
