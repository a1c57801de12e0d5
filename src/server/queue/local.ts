// The in-process queue (../queue.ts) behind the JobQueue interface: one server, its own GPU. Its jobs are
// `Job` objects, which are JobHandles as they are; nothing here changes how that queue behaves.

import type { RequestDraft } from "../defaults.ts";
import type { GenerationQueue, Job } from "../queue.ts";
import type { JobQueue, QueueStats } from "./types.ts";

export class LocalJobQueue implements JobQueue {
  readonly shared = false;

  constructor(private readonly queue: GenerationQueue) {}

  get closed(): boolean {
    return this.queue.closed;
  }

  submit(requests: RequestDraft[]): Promise<Job[]> {
    try {
      return Promise.resolve(this.queue.submit(requests));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  find(id: string): Promise<Job | undefined> {
    return Promise.resolve(this.queue.find(id));
  }

  stats(): Promise<QueueStats> {
    return Promise.resolve({ queued: this.queue.waiting, running: this.queue.running ? 1 : 0 });
  }

  health(): { ok: boolean; fields: Record<string, unknown> } {
    return { ok: true, fields: {} };
  }

  drain(graceMs: number): Promise<void> {
    return this.queue.drain(graceMs);
  }
}
