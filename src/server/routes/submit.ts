// Putting generation requests on the queue from a handler, shared by the native and the OpenAI routes.

import type { RequestDraft } from "../defaults.ts";
import { UnavailableError } from "../engine_host.ts";
import { errorResponse } from "../errors.ts";
import { QueueFullError } from "../queue.ts";
import type { JobHandle, JobOwner, JobQueue } from "../queue/types.ts";
import type { NativeRequest } from "../native_schema.ts";

/** A native request whose events are streamed (SSE or a job): previews about every quarter of the run
 * unless preview_every was given. */
export function streamedRequest(parsed: NativeRequest): RequestDraft {
  return parsed.previewEveryGiven ? parsed.request : { ...parsed.request, autoPreviews: "quarter" };
}

/** Queues the requests, or answers 429 / 503 right away. */
export async function submitJobs(
  queue: JobQueue,
  requests: RequestDraft[],
  owner: JobOwner,
): Promise<JobHandle[] | Response> {
  try {
    return await queue.submit(requests, owner);
  } catch (e) {
    if (e instanceof QueueFullError) {
      return errorResponse(429, "queue_full", e.message, undefined, {
        "retry-after": String(e.retryAfterSeconds),
      });
    }
    if (e instanceof UnavailableError) {
      const code = queue.closed ? "shutting_down" : "unavailable";
      return errorResponse(503, code, e.message, undefined, { "retry-after": "10" });
    }
    throw e;
  }
}

/** Cancels the jobs when the client goes away (connection closed or response body cancelled); returns the
 * function that stops watching. */
export function cancelOnAbort(signal: AbortSignal, jobs: JobHandle[]): () => void {
  const cancel = () => cancelAll(jobs);
  if (signal.aborted) cancel();
  signal.addEventListener("abort", cancel, { once: true });
  return () => signal.removeEventListener("abort", cancel);
}

/** Cancels every job; a shared queue's cancel is a request to Redis, whose failure is only logged (the
 * job then ends by itself or expires). */
export function cancelAll(jobs: JobHandle[]): void {
  for (const job of jobs) {
    Promise.resolve(job.cancel()).catch((e) => console.error(`cancelling ${job.id} failed:`, e));
  }
}
