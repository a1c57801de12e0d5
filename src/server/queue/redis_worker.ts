// A server's worker on the shared queue: while its engine is ready it takes one job at a time from the
// consumer group, runs it on this server's GPU queue (../queue.ts, which does the engine's error mapping
// and the per-server metrics), and appends the job's events to the job's log in Redis.
//
// - Takeover: an entry pending for longer than the visibility timeout belongs to a worker that died or
//   lost Redis; the next idle worker claims it (XAUTOCLAIM) and runs the job from the start. A running
//   worker renews its claim every quarter of the timeout, so only a silent one loses its job.
// - Fencing: every append names the run (attempt) it comes from, and the scripts refuse a stale run's
//   events, and any event after the final one. So a job is reported done once, even when a worker thought
//   dead comes back.
// - Cancel: a published cancel (or the `cancel` field, read on each renewal) aborts the local run, which
//   stops the engine within a fraction of a step; its `error: cancelled` is then the final event.

import { errorText } from "../engine_host.ts";
import type { SharedQueueContext } from "../app.ts";
import type { Job, JobEvent } from "../queue.ts";
import { decode, encode } from "./redis_codec.ts";
import type { RedisConnection } from "./redis_connection.ts";
import { GROUP } from "./redis_scripts.ts";

export interface RedisWorkerOptions {
  visibilityMs: number;
  maxAttempts: number;
  liveTtlMs: number;
}

interface Running {
  id: string;
  entry: string;
  attempt: string;
  local: Job;
  /** This run may no longer write to the job (another worker took it, or it has ended). */
  fenced: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class RedisWorker {
  readonly consumer = `${Deno.hostname()}:${Deno.pid}:${crypto.randomUUID().slice(0, 8)}`;
  #running?: Running;
  #stopping = false;
  #releasing = false;
  #loop?: Promise<void>;
  #heartbeat?: ReturnType<typeof setInterval>;

  constructor(
    private readonly conn: RedisConnection,
    private readonly ctx: SharedQueueContext,
    private readonly options: RedisWorkerOptions,
  ) {}

  get running(): string | undefined {
    return this.#running?.id;
  }

  start(): void {
    // Connected now, so that it is ready when the engine is.
    void this.conn.blocking;
    this.conn.onCancel((id) => {
      if (this.#running?.id === id) this.#cancelLocal(this.#running, "cancelled");
    });
    const every = Math.min(5_000, Math.max(100, this.options.visibilityMs / 4));
    this.#heartbeat = setInterval(() => this.#beat(), every);
    this.#loop = this.#run();
  }

  /** Takes no more jobs; the running one gets `graceMs` to finish, then goes back to the queue. */
  async stop(graceMs: number): Promise<void> {
    this.#stopping = true;
    const running = this.#running;
    if (running) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([running.local.finished, new Promise((r) => (timer = setTimeout(r, graceMs)))]);
      clearTimeout(timer);
      if (this.#running === running) {
        this.#releasing = true;
        running.local.cancel("shutting_down");
      }
    }
    // Unblocks a pending XREADGROUP at once.
    this.conn.closeBlocking();
    await this.#loop;
    clearInterval(this.#heartbeat);
    await this.conn.script("sdHeartbeat", this.consumer, "0", this.options.visibilityMs).catch(() => {});
  }

  #ready(): boolean {
    const host = this.ctx.engineHost;
    return this.conn.ready && this.conn.blocking.status === "ready" && host.status().status === "ready" &&
      host.current !== undefined;
  }

  async #run(): Promise<void> {
    let announced = false;
    while (!this.#stopping) {
      if (!this.#ready()) {
        await sleep(200);
        continue;
      }
      if (!announced) {
        // Counted among the workers (for positions and the queue bound) before reading.
        await this.#beat();
        announced = true;
      }
      try {
        const claim = await this.#next();
        if (claim) await this.#execute(claim.id, claim.entry, claim.reclaimed);
      } catch (e) {
        if (this.#stopping) break;
        if (/NOGROUP/.test(errorText(e))) {
          // Redis came back empty (no persistence): the group is made again.
          await this.conn.command.xgroup("CREATE", this.conn.keys.queue, GROUP, "0", "MKSTREAM").catch(
            () => {},
          );
        } else if (this.conn.ready && this.conn.blocking.status === "ready") {
          // (Errors while a connection is down are the reconnect's, logged once by the connection.)
          console.error("shared queue worker:", errorText(e));
        }
        await sleep(500);
      }
    }
  }

  /** A job abandoned by a silent worker first, else the next new one (waiting up to a second). */
  async #next(): Promise<{ id: string; entry: string; reclaimed: boolean } | undefined> {
    const { queue } = this.conn.keys;
    const [, claimed, deleted] = await this.conn.command.xautoclaim(
      queue,
      GROUP,
      this.consumer,
      this.options.visibilityMs,
      "0-0",
      "COUNT",
      1,
    ) as [string, [string, string[]][], string[]];
    // Entries removed from the stream while pending: nothing to run, only to forget.
    if (deleted?.length) await this.conn.command.xack(queue, GROUP, ...deleted);
    if (claimed.length) return { entry: claimed[0][0], id: claimed[0][1][1], reclaimed: true };
    const read = await this.conn.blocking.xreadgroup(
      "GROUP",
      GROUP,
      this.consumer,
      "COUNT",
      1,
      "BLOCK",
      1_000,
      "STREAMS",
      queue,
      ">",
    ) as [string, [string, string[]][]][] | null;
    const entry = read?.[0]?.[1]?.[0];
    return entry ? { entry: entry[0], id: entry[1][1], reclaimed: false } : undefined;
  }

  async #execute(id: string, entry: string, reclaimed: boolean): Promise<void> {
    const o = this.ctx.options;
    const reason = reclaimed ? "the worker running it stopped responding" : "the worker running it shut down";
    const reply = await this.conn.script(
      "sdClaim",
      id,
      entry,
      this.consumer,
      this.options.maxAttempts,
      this.options.liveTtlMs,
      o.retainMs,
      o.retainJobs,
      reason,
    ) as [string, number?, string?];
    if (reply[0] !== "run") return;
    const attempt = String(reply[1]);
    if (this.#stopping) {
      // Taken just as this server began shutting down: another worker runs it.
      await this.conn.script("sdRelease", id, entry, attempt, "the worker running it shut down").catch(
        () => {},
      );
      return;
    }
    if (reply[1]! > 1) this.ctx.metrics.jobRequeued();
    let local: Job;
    try {
      [local] = this.ctx.queue.submit([decode(reply[2]!)]);
    } catch (e) {
      // This server cannot run it after all (its model failed): back to the queue for another worker.
      await this.conn.script("sdRelease", id, entry, attempt, errorText(e)).catch(() => {});
      return;
    }
    const running: Running = { id, entry, attempt, local, fenced: false };
    this.#running = running;
    const t0 = performance.now();
    try {
      for await (const { event } of local.events()) {
        // The shared log has its own `queued`, written when the job was submitted.
        if (event.type === "queued" || running.fenced) continue;
        const final = event.type === "done" || event.type === "error";
        if (final && this.#releasing && event.type === "error" && event.code === "shutting_down") {
          // Shutting down mid-job: another worker reruns it rather than the job failing.
          await this.conn.script("sdRelease", id, entry, attempt, "the worker running it shut down")
            .catch(() => {});
          break;
        }
        await this.#append(running, event, final ? performance.now() - t0 : undefined);
      }
    } finally {
      await local.finished;
      this.#running = undefined;
    }
  }

  /** Appends one event of this run; retries while Redis is away (the run goes on meanwhile). */
  async #append(running: Running, event: JobEvent, jobMs?: number): Promise<void> {
    const o = this.ctx.options;
    const final = event.type === "done"
      ? "succeeded"
      : event.type === "error"
      ? (event.code === "cancelled" || event.code === "shutting_down" ? "cancelled" : "failed")
      : "";
    const progress = event.type === "started"
      ? JSON.stringify({ step: 0, steps: event.steps })
      : event.type === "progress"
      ? JSON.stringify({ step: event.step, steps: event.steps })
      : "";
    const text = encode(event);
    while (true) {
      try {
        const n = await this.conn.script(
          "sdAppend",
          running.id,
          running.attempt,
          text,
          final,
          progress,
          o.retainMs,
          o.retainJobs,
          event.type === "done" && jobMs !== undefined ? Math.round(jobMs) : "",
        ) as number;
        if (n < 0) this.#fence(running);
        return;
      } catch (e) {
        if (this.conn.ready) {
          console.error(`shared queue: appending to ${running.id} failed:`, errorText(e));
          return;
        }
        // Shutting down with Redis away: give up; the job's entry was never acknowledged, so another
        // worker takes it over after the visibility timeout.
        if (this.#stopping) return;
        await sleep(250);
      }
    }
  }

  /** Renews this worker's presence and its running job's claim; reads a cancel the pub/sub missed. */
  async #beat(): Promise<void> {
    if (!this.conn.ready) return;
    const running = this.#running;
    const args: (string | number)[] = [this.consumer, this.#ready() && !this.#stopping ? "1" : "0"];
    args.push(this.options.visibilityMs);
    if (running && !running.fenced) {
      args.push(running.id, running.entry, running.attempt, this.options.liveTtlMs);
    }
    try {
      const reply = await this.conn.script("sdHeartbeat", ...args) as string[];
      if (!running || running.fenced) return;
      if (reply[0] === "lost") this.#fence(running);
      else if (reply[0] === "ok" && reply[1]) {
        this.#cancelLocal(running, reply[1] === "shutting_down" ? "shutting_down" : "cancelled");
      }
    } catch {
      // Redis is away: the next beat tries again.
    }
  }

  /** Another worker has the job now (or it ended): stop computing it, write nothing more. */
  #fence(running: Running): void {
    if (running.fenced) return;
    running.fenced = true;
    running.local.cancel();
  }

  #cancelLocal(running: Running, reason: "cancelled" | "shutting_down"): void {
    running.local.cancel(reason);
  }
}
