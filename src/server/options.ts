// The server's settings (request limits, queue length, body size, token, heartbeat, finished-job retention)
// and their defaults.

import type { RetentionLimits } from "./retention.ts";
import { DEFAULT_LIMITS, type RequestLimits } from "./schema_fields.ts";

/** `retainJobs` / `retainMs`: finished jobs kept for GET /v1/jobs/:id and event replay (they hold images). */
export interface ServerOptions extends RequestLimits, RetentionLimits {
  /** Jobs allowed to wait behind the running one; more answer 429. */
  maxQueued: number;
  /** Largest accepted request body (JSON with a base64 init image). */
  maxBodyBytes: number;
  /** When set, every /v1 route and /metrics need `Authorization: Bearer TOKEN`. */
  token?: string;
  /** SSE comment heartbeat interval; keep it under common proxy idle timeouts (nginx: 60 s). */
  heartbeatMs: number;
  /** Mount the test hooks (routes/debug.ts). */
  testHooks?: boolean;
}

export const DEFAULT_SERVER_OPTIONS: ServerOptions = {
  ...DEFAULT_LIMITS,
  maxQueued: 8,
  maxBodyBytes: 20 * 1024 * 1024,
  heartbeatMs: 15_000,
  retainJobs: 100,
  retainMs: 10 * 60_000,
};
