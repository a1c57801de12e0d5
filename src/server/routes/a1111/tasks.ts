// A1111 keeps one global state for the generation in progress (`shared.state`): GET /sdapi/v1/progress reads
// it, POST /sdapi/v1/interrupt and /sdapi/v1/skip set its flags. Here every A1111 request this server
// accepted is an `A1111Task`: its n_iter iterations are consecutive queue jobs (each a batch of batch_size
// images), and the task follows their events to keep that state. The task A1111 would call current is the
// one running (the earliest, if several servers share a queue), else the earliest waiting.
//
// interrupt: the task's running and remaining jobs are cancelled; its request answers with the images of the
// iterations that finished (A1111 also decodes the interrupted batch's partly denoised latents, which the
// engine does not hand out). skip: the running iteration's job is cancelled and the next one goes on.

import type { DoneEvent } from "../../../pipeline/types.ts";
import type { JobErrorEvent } from "../../queue.ts";
import type { JobHandle } from "../../queue/types.ts";

export type A1111Job = "scripts_txt2img" | "scripts_img2img";

export class A1111Task {
  readonly createdAt = Date.now();
  /** When the first iteration started on the GPU (A1111's `time_start`). */
  startedAt?: number;
  /** The running iteration (A1111's `job_no`). */
  jobNo = 0;
  samplingStep = 0;
  samplingSteps = 0;
  /** The latest preview (PNG). */
  currentImage?: Uint8Array;
  interrupted = false;
  /** The iterations skipped. */
  readonly skippedJobs = new Set<number>();
  finished = false;

  constructor(readonly id: string, readonly job: A1111Job, readonly jobs: JobHandle[]) {}

  get jobCount(): number {
    return this.jobs.length;
  }

  get skipped(): boolean {
    return this.skippedJobs.has(this.jobNo);
  }

  /** Cancels the running and the remaining iterations. */
  interrupt(): void {
    if (this.finished) return;
    this.interrupted = true;
    for (const job of this.jobs.slice(this.jobNo)) cancel(job);
  }

  /** Cancels the running iteration; the next one goes on. */
  skip(): void {
    if (this.finished) return;
    this.skippedJobs.add(this.jobNo);
    cancel(this.jobs[this.jobNo]);
  }

  /** Follows the iterations in order: the `done` events of those that finished, or the error that ended the
   * request (not the cancels of interrupt and skip). */
  async run(): Promise<{ done: DoneEvent[]; error?: JobErrorEvent }> {
    const done: DoneEvent[] = [];
    try {
      for (let k = 0; k < this.jobs.length && !this.interrupted; k++) {
        this.jobNo = k;
        this.samplingStep = 0;
        for await (const { event } of this.jobs[k].events()) {
          if (event.type === "started") {
            this.startedAt ??= Date.now();
            this.samplingSteps = event.steps;
          } else if (event.type === "progress") {
            this.samplingStep = event.step;
            this.samplingSteps = event.steps;
          } else if (event.type === "preview") {
            this.currentImage = event.data;
          } else if (event.type === "done") {
            done.push(event);
          } else if (event.type === "error") {
            const stopped = event.code === "cancelled" && (this.interrupted || this.skippedJobs.has(k));
            if (!stopped) return { done, error: event };
          }
        }
      }
      return { done };
    } finally {
      this.finished = true;
    }
  }
}

function cancel(job: JobHandle | undefined): void {
  if (!job) return;
  Promise.resolve(job.cancel()).catch((e) => console.error(`cancelling ${job.id} failed:`, e));
}

/** The A1111 tasks of this server, in the order they came. */
export class A1111Tasks {
  #tasks: A1111Task[] = [];

  add(task: A1111Task): void {
    this.#tasks.push(task);
  }

  remove(task: A1111Task): void {
    this.#tasks = this.#tasks.filter((t) => t !== task);
  }

  /** The running task, else the earliest waiting one. */
  current(): A1111Task | undefined {
    const open = this.#tasks.filter((t) => !t.finished);
    return open.find((t) => t.startedAt !== undefined) ?? open[0];
  }

  /** GET /sdapi/v1/progress: A1111's ProgressResponse. */
  progress(skipCurrentImage: boolean): Record<string, unknown> {
    const t = this.current();
    if (!t) {
      return {
        progress: 0,
        eta_relative: 0,
        state: state(undefined),
        current_image: null,
        textinfo: null,
        current_task: null,
      };
    }
    let progress = 0;
    let eta = 0;
    if (t.startedAt !== undefined) {
      // A1111's estimate: 0.01 so it never divides by zero, the iterations done, the running one's steps.
      progress = 0.01 + t.jobNo / t.jobCount +
        (t.samplingSteps > 0 ? t.samplingStep / t.samplingSteps / t.jobCount : 0);
      const elapsed = (Date.now() - t.startedAt) / 1000;
      eta = elapsed / progress - elapsed;
      progress = Math.min(progress, 1);
    }
    const position = t.jobs[t.jobNo]?.position ?? 0;
    return {
      progress,
      eta_relative: eta,
      state: state(t),
      current_image: !skipCurrentImage && t.currentImage ? t.currentImage.toBase64() : null,
      textinfo: t.startedAt === undefined ? `Waiting in queue (position ${position})` : null,
      current_task: t.id,
    };
  }
}

/** A1111's `shared.state.dict()`. */
function state(t: A1111Task | undefined): Record<string, unknown> {
  return {
    skipped: t?.skipped ?? false,
    interrupted: t?.interrupted ?? false,
    stopping_generation: false,
    job: t?.job ?? "",
    job_count: t?.jobCount ?? 0,
    job_timestamp: t ? timestamp(t.startedAt ?? t.createdAt) : "0",
    job_no: t?.jobNo ?? 0,
    sampling_step: t?.samplingStep ?? 0,
    sampling_steps: t?.samplingSteps ?? 0,
  };
}

/** A1111's job_timestamp: %Y%m%d%H%M%S (local time). */
export function timestamp(ms: number): string {
  const d = new Date(ms);
  const two = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}${two(d.getMonth() + 1)}${two(d.getDate())}${two(d.getHours())}${
    two(d.getMinutes())
  }${two(d.getSeconds())}`;
}
