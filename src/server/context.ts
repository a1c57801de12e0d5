// What every route group shares: the Hono environment and the server's state.

import type { EngineHost } from "./engine_host.ts";
import type { Metrics } from "./metrics.ts";
import type { ServerOptions } from "./options.ts";
import type { GenerationQueue } from "./queue.ts";
import type { JobQueue } from "./queue/types.ts";

/** `clientSignal` is the incoming request's signal (aborts when the client disconnects), kept before any
 * middleware replaces `c.req.raw`. */
export type AppEnv = { Variables: { clientSignal: AbortSignal } };

export interface AppState {
  /** This server's GPU queue: the jobs it runs (its metrics are this server's). */
  queue: GenerationQueue;
  /** What the routes submit to and look jobs up in: `queue` itself, or the queue shared through Redis. */
  jobs: JobQueue;
  engineHost: EngineHost;
  metrics: Metrics;
  options: ServerOptions;
}
