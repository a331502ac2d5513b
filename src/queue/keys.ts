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

/** Key builders for one prefix. */
export interface Keys {
  /** The prefix itself (REDIS_PREFIX): it also names the deployment's artifact folder. */
  readonly prefix: string;
  /** BullMQ's own prefix: its keys are `${bullPrefix}:reports:*`; retention set per job (removeOnComplete/removeOnFail). */
  readonly bullPrefix: string;
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
   * keeps its membership (apply-transition.lua); the janitor removes members
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

/** Builds the key set for `prefix`. */
export function createKeys(prefix: string): Keys {
  const bullPrefix = `${prefix}:bull`;
  return {
    prefix,
    bullPrefix,
    job: (id) => `${prefix}:job:${id}`,
    events: (id) => `${prefix}:events:${id}`,
    eventChannel: (id) => `${prefix}:ev:${id}`,
    idempotency: (tenant, digest) => `${prefix}:idem:${tenant}:${digest}`,
    tenantIndex: (tenant) => `${prefix}:idx:${tenant}`,
    userIndex: (tenant, digest) => `${prefix}:idx:${tenant}:user:${digest}`,
    finished: (kind) => `${prefix}:finished:${kind}`,
    submitRate: (tenant) => `${prefix}:rate:${tenant}`,
    tenantBacklog: (tenant) => `${prefix}:backlog:${tenant}`,
    deployment: `${prefix}:deployment`,
    live: `${prefix}:live`,
    liveBackfilled: `${prefix}:live:backfilled`,
    tenants: `${prefix}:tenants`,
    controlChannel: `${prefix}:control`,
    bullJobLock: (type, id) => `${bullPrefix}:${queueNameFor(type)}:${id}:lock`,
  };
}
