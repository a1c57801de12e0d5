// What every route group shares: the Hono environment and the server's state.

import type { EngineHost } from "./engine_host.ts";
import type { Metrics } from "./metrics.ts";
import type { ServerOptions } from "./options.ts";
import type { GenerationQueue } from "./queue.ts";

/** `clientSignal` is the incoming request's signal (aborts when the client disconnects), kept before any
 * middleware replaces `c.req.raw`. */
export type AppEnv = { Variables: { clientSignal: AbortSignal } };

export interface AppState {
  queue: GenerationQueue;
  engineHost: EngineHost;
  metrics: Metrics;
  options: ServerOptions;
}
