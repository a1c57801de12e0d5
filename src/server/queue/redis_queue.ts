// The queue shared through Redis (`serve --redis URL`): any server accepts a request, streams any job's
// events and cancels any job; every server with a model (and without --no-worker) also runs jobs, one at a
// time (redis_worker.ts). The data and every change to it are in redis_scripts.ts.
//
// A job's log is a Redis stream whose entry ids are the log ids, so an SSE stream from any server has the
// ids a local one would, and Last-Event-ID resumes on any server. Readers wake on a pub/sub message and
// otherwise poll, so a message lost while Redis reconnects delays them by a second at most.

import type { RequestDraft } from "../defaults.ts";
import type { SharedQueueContext } from "../app.ts";
import { UnavailableError } from "../engine_host.ts";
import { type JobEvent, type JobStatus, type LoggedEvent, QueueFullError } from "../queue.ts";
import { decode, encode } from "./redis_codec.ts";
import { RedisConnection } from "./redis_connection.ts";
import { RedisWorker } from "./redis_worker.ts";
import type { JobHandle, JobOwner, JobQueue, QueueStats } from "./types.ts";

export interface RedisQueueOptions {
  url: string;
  /** Key prefix (default "sd"): servers sharing a prefix share the queue. */
  prefix?: string;
  /** Take jobs (when there is a model). False: a pure front end (--no-worker). */
  worker: boolean;
  /** A running job whose worker has not been heard from for this long is taken over by another worker and
   * run from the start. Workers renew it while they run a job. */
  visibilityMs: number;
  /** How many runs a job gets (the first and the takeovers) before it fails. */
  maxAttempts?: number;
}

/** How long queued and running jobs are kept without a worker touching them. */
const LIVE_TTL_MS = 24 * 3600_000;
/** How often a reader looks for events without a notification. */
const POLL_MS = 1_000;

/** `createApp({ jobs: redisJobQueue(options) })`. */
export function redisJobQueue(options: RedisQueueOptions): (ctx: SharedQueueContext) => JobQueue {
  return (ctx) => new RedisJobQueue(options, ctx);
}

export class RedisJobQueue implements JobQueue {
  readonly shared = true;
  readonly conn: RedisConnection;
  readonly worker?: RedisWorker;
  #closed = false;
  #stats: QueueStats = { queued: 0, running: 0, workers: 0 };
  /** Connection-owned jobs submitted here and not yet seen to end: cancelled if this server shuts down. */
  #owned = new Set<string>();

  constructor(readonly options: RedisQueueOptions, private readonly ctx: SharedQueueContext) {
    this.conn = new RedisConnection(options.url, options.prefix ?? "sd");
    if (options.worker && ctx.engineHost.hasModel) {
      this.worker = new RedisWorker(this.conn, ctx, {
        visibilityMs: options.visibilityMs,
        maxAttempts: options.maxAttempts ?? 3,
        liveTtlMs: LIVE_TTL_MS,
      });
      this.worker.start();
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  async submit(requests: RequestDraft[], owner: JobOwner): Promise<JobHandle[]> {
    if (this.#closed) throw new UnavailableError("the server is shutting down");
    const ids = requests.map(() => `job-${crypto.randomUUID()}`);
    // The seed is drawn here, not by the engine, so that a rerun after a takeover makes the same image.
    const args = requests.flatMap((r, i) => [
      ids[i],
      encode({ ...r, seed: r.seed ?? Math.floor(Math.random() * 2 ** 32) }),
    ]);
    const o = this.ctx.options;
    const reply = await this.conn.script(
      "sdSubmit",
      o.maxQueued,
      this.options.visibilityMs,
      LIVE_TTL_MS,
      owner,
      requests.length,
      ...args,
    ) as number[];
    if (reply[0] === 0) {
      const [, waiting, running, workers, avgMs] = reply;
      this.ctx.metrics.jobRejected(requests.length);
      const ahead = waiting + running;
      const seconds = Math.ceil((avgMs * Math.max(1, ahead)) / Math.max(1, workers) / 1000);
      throw new QueueFullError(Math.max(1, seconds), ahead);
    }
    const now = Date.now();
    if (owner === "connection") { for (const id of ids) this.#owned.add(id); }
    return ids.map((id, i) =>
      new RedisJob(this, id, {
        status: "queued",
        createdAt: now,
        eventCount: 1,
        position: reply[i + 1],
      })
    );
  }

  async find(id: string): Promise<JobHandle | undefined> {
    // Ids are ours (job-UUID); anything else cannot name a key.
    if (!/^job-[0-9a-f-]{36}$/.test(id)) return undefined;
    const reply = await this.conn.script("sdDescribe", id, this.options.visibilityMs) as
      | [string, string, string, string, number, string]
      | null;
    if (!reply) return undefined;
    const [status, created, events, progress, position, last] = reply;
    const outcome = last ? decode<JobEvent>(last) : undefined;
    return new RedisJob(this, id, {
      status: statusOf(status, outcome),
      createdAt: Number(created),
      eventCount: Number(events),
      position,
      progress: progress ? JSON.parse(progress) : undefined,
      outcome: outcome?.type === "done" || outcome?.type === "error" ? outcome : undefined,
    });
  }

  async stats(): Promise<QueueStats> {
    try {
      const [queued, running, workers] = await this.conn.script(
        "sdStats",
        this.options.visibilityMs,
      ) as number[];
      this.#stats = { queued, running, workers };
    } catch {
      // Redis is away: the last numbers seen, while /healthz says `redis: reconnecting`.
    }
    return this.#stats;
  }

  health(): { ok: boolean; fields: Record<string, unknown> } {
    const redis = this.conn.health;
    return { ok: redis === "ok", fields: { redis, worker: this.worker !== undefined } };
  }

  /** @internal */
  async cancel(id: string, reason: "cancelled" | "shutting_down"): Promise<void> {
    const o = this.ctx.options;
    const result = await this.conn.script(
      "sdCancel",
      id,
      reason,
      this.options.visibilityMs,
      o.retainMs,
      o.retainJobs,
    );
    this.#owned.delete(id);
    // A job dropped before any worker took it is counted where it was dropped, as a local queue does.
    if (result === "queued") this.ctx.metrics.jobFinished("cancelled");
  }

  /** @internal A reader saw the job end. */
  ended(id: string): void {
    this.#owned.delete(id);
  }

  /** Stops taking requests; this server's worker finishes its job within `graceMs` or gives it back to the
   * queue (another worker reruns it); then this server's own connection jobs, whose clients it is about
   * to drop, are cancelled, and the connections close. Detached jobs stay queued for the other servers. */
  async drain(graceMs: number): Promise<void> {
    this.#closed = true;
    await this.worker?.stop(graceMs);
    await this.ctx.queue.drain(0);
    const owned = [...this.#owned];
    await Promise.all(owned.map((id) => this.cancel(id, "shutting_down").catch(() => {})));
    // Let the streams of those jobs read their final event before the connections go.
    const deadline = Date.now() + 2_000;
    while (this.#owned.size && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await this.conn.close();
  }
}

interface Snapshot {
  status: JobStatus;
  createdAt: number;
  eventCount: number;
  position: number;
  progress?: { step: number; steps: number };
  outcome?: Extract<JobEvent, { type: "done" | "error" }>;
}

function statusOf(status: string, outcome: JobEvent | undefined): JobStatus {
  if (status === "queued" || status === "running") return status;
  if (status === "succeeded" || outcome?.type === "done") return "succeeded";
  return status === "cancelled" ? "cancelled" : "failed";
}

class RedisJob implements JobHandle {
  constructor(private readonly queue: RedisJobQueue, readonly id: string, private readonly s: Snapshot) {}

  get createdAt(): number {
    return this.s.createdAt;
  }
  get status(): JobStatus {
    return this.s.status;
  }
  get state(): "queued" | "running" | "finished" {
    return this.s.status === "queued" || this.s.status === "running" ? this.s.status : "finished";
  }
  get position(): number {
    return this.s.position;
  }
  get progress(): { step: number; steps: number } | undefined {
    return this.s.progress;
  }
  get outcome(): Extract<JobEvent, { type: "done" | "error" }> | undefined {
    return this.s.outcome;
  }
  get eventCount(): number {
    return this.s.eventCount;
  }

  cancel(reason: "cancelled" | "shutting_down" = "cancelled"): Promise<void> {
    return this.queue.cancel(this.id, reason);
  }

  async *events(afterId = 0, signal?: AbortSignal): AsyncGenerator<LoggedEvent> {
    const conn = this.queue.conn;
    const key = conn.keys.events(this.id);
    let id = afterId;
    // Ends with the job, with the client, or when this server closes its connections (shutdown).
    while (!signal?.aborted && conn.health !== "closed") {
      const armed = conn.arm(this.id, POLL_MS, signal);
      try {
        let batch: [string, string[]][];
        let gone = false;
        try {
          batch = await conn.command.xrange(key, `(0-${id}`, "+", "COUNT", 100);
          if (batch.length === 0) gone = (await conn.command.exists(conn.keys.job(this.id))) === 0;
        } catch {
          // Redis is away; the stream goes on once it is back (heartbeats keep the client's connection).
          await armed.wait;
          continue;
        }
        for (const [entryId, fields] of batch) {
          id = Number(entryId.slice(2));
          const event = decode<JobEvent>(fields[1]);
          yield { id, event };
          if (event.type === "done" || event.type === "error") {
            this.queue.ended(this.id);
            return;
          }
        }
        // Expired, or dropped past the retention bound: nothing more will come.
        if (gone) return;
        if (batch.length === 0) await armed.wait;
      } finally {
        armed.dispose();
      }
    }
  }
}
