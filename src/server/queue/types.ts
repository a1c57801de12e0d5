// What the routes need of a job queue, so that one set of routes serves both queues:
//
// - the in-process queue (queue/local.ts over ../queue.ts): one server, its own GPU;
// - the shared Redis queue (queue/redis_queue.ts): many servers, any of them accepts, streams and cancels
//   any job, and every server with a model takes jobs one at a time.
//
// A `JobHandle` is what a route holds of one job. Its fields are a snapshot (the in-process `Job` keeps
// them live; a Redis handle reads them once, when found or submitted); `events()` always follows the live
// log.

import type { RequestDraft } from "../defaults.ts";
import type { JobEvent, JobStatus, LoggedEvent } from "../queue.ts";

/** Who ends a job besides itself: `connection` jobs (/v1/generate, the OpenAI routes) are cancelled when
 * their client goes away; `detached` ones (POST /v1/jobs) only by DELETE. */
export type JobOwner = "connection" | "detached";

export interface JobHandle {
  readonly id: string;
  /** Milliseconds since the epoch. */
  readonly createdAt: number;
  readonly state: "queued" | "running" | "finished";
  readonly status: JobStatus;
  /** Jobs ahead of this one while it waits (0: it starts now). */
  readonly position: number;
  /** The latest step reported (step 0 once `started`). */
  readonly progress?: { step: number; steps: number };
  /** The `done` or `error` event that ended the job, once it has ended. */
  readonly outcome?: Extract<JobEvent, { type: "done" | "error" }>;
  /** Events in the log so far (the last id). */
  readonly eventCount: number;
  /** The events after `afterId`, replayed, then live, ending after `done` or `error` (or when `signal`
   * aborts). */
  events(afterId?: number, signal?: AbortSignal): AsyncGenerator<LoggedEvent>;
  /** Cancels the job wherever it runs (a waiting one is dropped). Idempotent. */
  cancel(reason?: "cancelled" | "shutting_down"): void | Promise<void>;
}

/** The queue's numbers for /healthz and /metrics. */
export interface QueueStats {
  /** Jobs waiting for a worker. */
  queued: number;
  /** Jobs running (on this server's GPU, or anywhere for a shared queue). */
  running: number;
  /** Servers taking jobs (shared queue only). */
  workers?: number;
}

export interface JobQueue {
  /** True for a queue shared between servers. */
  readonly shared: boolean;
  /** Set once draining has begun: submissions answer 503. */
  readonly closed: boolean;
  /** Queues the requests as consecutive jobs (all or none). Rejects with UnavailableError or
   * QueueFullError. */
  submit(requests: RequestDraft[], owner: JobOwner): Promise<JobHandle[]>;
  /** A waiting or running job, or a finished one still retained. */
  find(id: string): Promise<JobHandle | undefined>;
  stats(): Promise<QueueStats>;
  /** Extra fields for /healthz (a shared queue reports its connection). `ok` false answers 503. */
  health(): { ok: boolean; fields: Record<string, unknown> };
  /** Stops accepting jobs and lets the running one finish for up to `graceMs`; resolves when this server
   * runs nothing more. */
  drain(graceMs: number): Promise<void>;
}
