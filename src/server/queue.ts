// The generation queue: one GPU worker, first in first out, bounded. Each job carries an AbortController;
// cancelling a waiting job drops it, cancelling the running one aborts the engine between steps, and the
// worker then moves on to the next job. Each job logs its events, so any number of clients can follow it,
// and a client that lost its stream can resume from the last id it saw; finished jobs stay retained for a
// while (retention.ts) for GET /v1/jobs/:id.

import { type Engine, type GenerateRequest, type GenerationEvent, RequestError } from "../pipeline/types.ts";
import { effectiveDefaults, type RequestDraft, resolveRequest } from "./defaults.ts";
import { DEFAULT_LIMITS } from "./schema_fields.ts";
import { DeviceLostError, type EngineHost, errorText, UnavailableError } from "./engine_host.ts";
import type { Metrics } from "./metrics.ts";
import { RetainedJobs, type RetentionLimits } from "./retention.ts";

export type JobErrorCode =
  | "cancelled"
  | "shutting_down"
  | "invalid_request"
  | "unavailable"
  | "device_lost"
  | "engine_error";

/** The HTTP status each job error answers with (499, client closed, is nginx's convention). */
export const JOB_ERROR_STATUS: Record<JobErrorCode, number> = {
  cancelled: 499,
  shutting_down: 503,
  invalid_request: 400,
  unavailable: 503,
  // The server recovers by itself (a fresh device, the model reloaded): retrying later succeeds.
  device_lost: 503,
  engine_error: 500,
};

export interface QueuedEvent {
  type: "queued";
  /** Jobs ahead of this one (the running job included); 0: it starts now. */
  position: number;
}

export interface JobErrorEvent {
  type: "error";
  code: JobErrorCode;
  message: string;
  /** The request field at fault, for invalid_request. */
  param?: string;
}

/** Shared queue only (queue/redis_*.ts): the worker running the job went away, and another one took it and
 * runs it from the start (its `started`, `progress`, … follow again). */
export interface RequeuedEvent {
  type: "requeued";
  /** Which run this is (2 for the first rerun). */
  attempt: number;
  reason: string;
}

/** The engine's events, passed through unchanged, plus the queue's own. Ends with `done` or `error`. */
export type JobEvent = QueuedEvent | GenerationEvent | JobErrorEvent | RequeuedEvent;

/** Too many waiting jobs: the server answers 429 with Retry-After. */
export class QueueFullError extends Error {
  constructor(readonly retryAfterSeconds: number, readonly waiting: number) {
    super(`the queue is full (${waiting} waiting); retry in about ${retryAfterSeconds} s`);
    this.name = "QueueFullError";
  }
}

/** One entry of a job's event log: `id` is its 1-based position, used as the SSE `id:` on every stream. */
export interface LoggedEvent {
  id: number;
  event: JobEvent;
}

export type JobStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled";

export class Job {
  /** Unguessable: knowing the id is what lets a client read or cancel the job (/v1/jobs/:id). */
  readonly id = `job-${crypto.randomUUID()}`;
  readonly createdAt = Date.now();
  state: "queued" | "running" | "finished" = "queued";
  position = -1;
  /** The latest step reported (step 0 once `started`). */
  progress?: { step: number; steps: number };
  readonly #controller = new AbortController();
  /** Every event emitted, in order, so late or returning subscribers can replay what they missed. */
  readonly #log: JobEvent[] = [];
  /** Resolved (and replaced) on each emit: wakes every subscriber waiting for the next event. */
  #changed!: Promise<void>;
  #wake!: () => void;
  #cancelReason: "cancelled" | "shutting_down" = "cancelled";
  #onCancel?: (job: Job) => void;
  #finished: Promise<void>;
  #resolveFinished!: () => void;

  /** The engine's request, once the job has started (the draft with the model's defaults filled in). */
  request?: GenerateRequest;

  constructor(readonly draft: RequestDraft) {
    this.#finished = new Promise((r) => (this.#resolveFinished = r));
    this.#rearm();
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  get cancelReason(): "cancelled" | "shutting_down" {
    return this.#cancelReason;
  }

  /** Resolves once the job has ended (done, error or cancelled), and the GPU is free of it. */
  get finished(): Promise<void> {
    return this.#finished;
  }

  /** Events in the log so far (the last id). */
  get eventCount(): number {
    return this.#log.length;
  }

  /** The `done` or `error` event that ended the job, once it has ended. */
  get outcome(): Extract<JobEvent, { type: "done" | "error" }> | undefined {
    const last = this.#log.at(-1);
    return this.state === "finished" && (last?.type === "done" || last?.type === "error") ? last : undefined;
  }

  get status(): JobStatus {
    const outcome = this.outcome;
    if (!outcome) return this.state === "queued" ? "queued" : "running";
    if (outcome.type === "done") return "succeeded";
    return outcome.code === "cancelled" || outcome.code === "shutting_down" ? "cancelled" : "failed";
  }

  /**
   * The events after `afterId` (replayed from the log), then the live ones, ending after `done` or `error`.
   * Any number of subscribers may read at once; each stops early when its `signal` aborts.
   */
  async *events(afterId = 0, signal?: AbortSignal): AsyncGenerator<LoggedEvent> {
    let id = afterId;
    while (!signal?.aborted) {
      if (id < this.#log.length) {
        id++;
        yield { id, event: this.#log[id - 1] };
      } else if (this.state === "finished") {
        return;
      } else {
        await this.#nextEvent(signal);
      }
    }
  }

  /** Cancels the job: a waiting one is dropped, a running one is aborted between steps. Idempotent. */
  cancel(reason: "cancelled" | "shutting_down" = "cancelled"): void {
    if (this.state === "finished" || this.#controller.signal.aborted) return;
    this.#cancelReason = reason;
    this.#controller.abort(new DOMException(reason, "AbortError"));
    this.#onCancel?.(this);
  }

  /** @internal queue plumbing */
  setCancelHook(hook: (job: Job) => void): void {
    this.#onCancel = hook;
  }

  /** @internal Appends to the log; nothing is appended after the first `done` or `error`. */
  emit(event: JobEvent): void {
    if (this.state === "finished") return;
    this.#log.push(event);
    if (event.type === "started") this.progress = { step: 0, steps: event.steps };
    if (event.type === "progress") this.progress = { step: event.step, steps: event.steps };
    if (event.type === "done" || event.type === "error") {
      this.state = "finished";
      this.#resolveFinished();
    }
    const wake = this.#wake;
    this.#rearm();
    wake();
  }

  #rearm(): void {
    this.#changed = new Promise((r) => (this.#wake = r));
  }

  #nextEvent(signal?: AbortSignal): Promise<void> {
    if (!signal) return this.#changed;
    return new Promise((resolve) => {
      const done = () => {
        signal.removeEventListener("abort", done);
        resolve();
      };
      signal.addEventListener("abort", done, { once: true });
      this.#changed.then(done);
    });
  }
}

export interface QueueOptions extends RetentionLimits {
  /** Jobs allowed to wait behind the running one. */
  maxQueued: number;
  /** Turns a draft into the engine's request when its job starts (default: the engine's defaults under the
   * default limits). */
  resolve?: (draft: RequestDraft, engine: Engine) => GenerateRequest;
}

function defaultResolve(draft: RequestDraft, engine: Engine): GenerateRequest {
  return resolveRequest(draft, effectiveDefaults(engine.defaults, DEFAULT_LIMITS), DEFAULT_LIMITS);
}

export class GenerationQueue {
  #waiting: Job[] = [];
  /** Jobs not yet finished, by id. */
  #active = new Map<string, Job>();
  /** Finished jobs, kept a while for lookup and replay. */
  #retained: RetainedJobs<Job>;
  #running?: Job;
  #closed = false;
  /** Recent job durations (ms, exponential moving average) for Retry-After. */
  #avgJobMs = 5_000;

  constructor(
    private readonly host: EngineHost,
    private readonly options: QueueOptions,
    private readonly metrics: Metrics,
  ) {
    this.#retained = new RetainedJobs(options);
  }

  get waiting(): number {
    return this.#waiting.length;
  }

  get running(): Job | undefined {
    return this.#running;
  }

  /** A waiting or running job, or a finished one still retained. */
  find(id: string): Job | undefined {
    return this.#active.get(id) ?? this.#retained.get(id);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Queues the requests as consecutive jobs (all or none). Throws UnavailableError (no model, load failed,
   * shutting down) or QueueFullError.
   */
  submit(requests: RequestDraft[]): Job[] {
    if (this.#closed) throw new UnavailableError("the server is shutting down");
    const reason = this.host.unavailableReason();
    if (reason) throw new UnavailableError(reason);
    const free = this.options.maxQueued + (this.#running || this.#waiting.length ? 0 : 1) -
      this.#waiting.length;
    if (requests.length > free) {
      this.metrics.jobRejected(requests.length);
      const ahead = this.#waiting.length + (this.#running ? 1 : 0);
      throw new QueueFullError(Math.max(1, Math.ceil((this.#avgJobMs * Math.max(1, ahead)) / 1000)), ahead);
    }
    const jobs = requests.map((r) => new Job(r));
    for (const job of jobs) {
      this.#active.set(job.id, job);
      job.finished.then(() => {
        this.#active.delete(job.id);
        this.#retained.add(job);
      });
    }
    for (const job of jobs) {
      job.setCancelHook((j) => this.#cancelled(j));
      this.#waiting.push(job);
    }
    this.#updatePositions();
    this.#pump();
    return jobs;
  }

  /** Stops accepting jobs, cancels the waiting ones, lets the running one finish for up to `graceMs`, then
   * aborts it; resolves when the worker is idle. */
  async drain(graceMs: number): Promise<void> {
    this.#closed = true;
    this.#retained.close();
    for (const job of [...this.#waiting]) job.cancel("shutting_down");
    const running = this.#running;
    if (!running) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
    await Promise.race([running.finished, timeout]);
    clearTimeout(timer);
    running.cancel("shutting_down");
    await running.finished;
  }

  #cancelled(job: Job): void {
    const i = this.#waiting.indexOf(job);
    if (i >= 0) {
      this.#waiting.splice(i, 1);
      this.metrics.jobFinished("cancelled");
      job.emit(cancelEvent(job));
      this.#updatePositions();
    }
    // A running job notices its aborted signal in #run.
  }

  #updatePositions(): void {
    const base = this.#running ? 1 : 0;
    this.#waiting.forEach((job, i) => {
      const position = base + i;
      if (job.position !== position) {
        job.position = position;
        job.emit({ type: "queued", position });
      }
    });
  }

  #pump(): void {
    if (this.#running || this.#waiting.length === 0) return;
    const job = this.#waiting.shift()!;
    this.#running = job;
    job.state = "running";
    this.#updatePositions();
    this.#run(job).finally(() => {
      this.#running = undefined;
      this.#pump();
    });
  }

  async #run(job: Job): Promise<void> {
    const t0 = performance.now();
    let outcome: "completed" | "failed" | "cancelled" = "failed";
    try {
      const engine = await this.host.engine();
      job.signal.throwIfAborted();
      const request = (this.options.resolve ?? defaultResolve)(job.draft, engine);
      job.request = request;
      let lastElapsedMs = 0;
      let progress = `0/${request.steps}`;
      for await (const ev of engine.generate(request, job.signal)) {
        if (job.signal.aborted) break;
        if (ev.type === "started") {
          progress = `0/${ev.steps}`;
        } else if (ev.type === "progress") {
          this.metrics.stepsDone(1, Math.max(0, ev.elapsedMs - lastElapsedMs) / 1000);
          lastElapsedMs = ev.elapsedMs;
          progress = `${ev.step}/${ev.steps}`;
        } else if (ev.type === "done") {
          this.metrics.jobTimings(ev.timings);
          outcome = "completed";
        }
        job.emit(ev);
      }
      job.signal.throwIfAborted();
      if (outcome !== "completed") {
        throw new Error(`the engine finished without an image (${progress} steps)`);
      }
    } catch (e) {
      if (job.signal.aborted) {
        outcome = "cancelled";
        job.emit(cancelEvent(job));
      } else if (e instanceof RequestError) {
        job.emit({ type: "error", code: "invalid_request", message: e.message, param: e.field });
      } else if (e instanceof DeviceLostError) {
        job.emit({ type: "error", code: "device_lost", message: e.message });
      } else if (e instanceof UnavailableError) {
        job.emit({ type: "error", code: "unavailable", message: e.message });
      } else {
        console.error(`generation ${job.id} failed:`, e);
        job.emit({ type: "error", code: "engine_error", message: errorText(e) });
      }
    } finally {
      this.metrics.jobFinished(outcome);
      if (outcome === "completed") this.#avgJobMs = 0.7 * this.#avgJobMs + 0.3 * (performance.now() - t0);
      // Never leave a subscriber hanging, whatever the engine did.
      job.emit({ type: "error", code: "engine_error", message: "generation ended unexpectedly" });
    }
  }
}

function cancelEvent(job: Job): JobErrorEvent {
  return job.cancelReason === "shutting_down"
    ? { type: "error", code: "shutting_down", message: "the server is shutting down" }
    : { type: "error", code: "cancelled", message: "the generation was cancelled" };
}
