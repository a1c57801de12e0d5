// One rule from events to JSON: camelCase keys become snake_case and bytes become base64, at every depth.
// The event's `type` is not a field: it names the SSE event.

import type { JobEvent, LoggedEvent } from "./queue.ts";
import type { SseMessage } from "./sse.ts";

/** `elapsedMs` → `elapsed_ms`. */
export function snakeCase(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

export function toWire(value: unknown): unknown {
  if (value instanceof Uint8Array) return value.toBase64();
  if (Array.isArray(value)) return value.map(toWire);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [snakeCase(k), toWire(v)]));
  }
  return value;
}

/** An event's JSON payload: its fields but `type`, after `extra` (which comes first on the wire). */
export function wirePayload(
  event: { type: string },
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const { type: _, ...fields } = event;
  return toWire({ ...extra, ...fields }) as Record<string, unknown>;
}

const WITH_JOB_ID: ReadonlySet<JobEvent["type"]> = new Set(["queued", "started", "done"]);

/** A job event's payload on the native API: the job id rides on the events that open and close a job
 * (queued, so a client can cancel it; started; done). */
export function jobEventPayload(ev: JobEvent, jobId: string): Record<string, unknown> {
  const extra = WITH_JOB_ID.has(ev.type) ? { jobId } : {};
  // A batch's answer carries `images` (base64, in batch order) and not `image`, which would repeat the
  // first one; a single image's answer is as it always was.
  if (ev.type === "done" && ev.images) {
    const { image: _, ...rest } = ev;
    return wirePayload(rest, extra);
  }
  return wirePayload(ev, extra);
}

/** One logged event as SSE, with its log id, the same on every stream of the job (what Last-Event-ID names). */
export function jobEventMessage({ id, event }: LoggedEvent, jobId: string): SseMessage {
  return { event: event.type, id: String(id), data: JSON.stringify(jobEventPayload(event, jobId)) };
}
