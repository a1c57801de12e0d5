// Finished jobs kept for GET /v1/jobs/:id and for replaying their events: at most `retainJobs` of them, each
// for at most `retainMs`, oldest first out. They hold images, so both bounds are hard: a timer drops expired
// jobs even when no request comes to trigger a sweep.

export interface RetentionLimits {
  /** Finished jobs kept at most (0: none). */
  retainJobs: number;
  /** How long a finished job is kept. */
  retainMs: number;
}

/** What the store needs of a job. */
export interface Retainable {
  readonly id: string;
}

export class RetainedJobs<J extends Retainable> {
  /** In the order the jobs finished, which is also the order they expire in (a monotonic clock). */
  readonly #jobs = new Map<string, { job: J; expiresAt: number }>();
  #timer?: ReturnType<typeof setTimeout>;
  #closed = false;

  constructor(private readonly limits: RetentionLimits) {}

  add(job: J): void {
    this.#jobs.delete(job.id);
    this.#jobs.set(job.id, { job, expiresAt: performance.now() + this.limits.retainMs });
    this.#sweep();
  }

  get(id: string): J | undefined {
    this.#sweep();
    return this.#jobs.get(id)?.job;
  }

  /** Stops the expiry timer (server shutdown); lookups still work, and still honour retainMs. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #sweep(): void {
    const now = performance.now();
    for (const [id, { expiresAt }] of this.#jobs) {
      if (this.#jobs.size <= this.limits.retainJobs && expiresAt > now) break;
      this.#jobs.delete(id);
    }
    this.#arm(now);
  }

  /** One timer, for the oldest job; unref'd so a retained job never keeps the process alive. */
  #arm(now: number): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const oldest = this.#jobs.values().next();
    if (this.#closed || oldest.done) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#sweep();
    }, Math.max(0, oldest.value.expiresAt - now) + 1);
    Deno.unrefTimer(this.#timer);
  }
}
