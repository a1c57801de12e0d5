// The Hono application: one GPU queue behind the route groups in src/server/routes/.
//
//   GET  /                        the web page                                  routes/web.ts
//   GET  /healthz, /metrics, /v1/models                                         routes/status.ts
//   POST /v1/generate, GET /v1/generate?…   native generation (JSON or SSE)     routes/native.ts
//   POST /v1/images/generations   OpenAI Images API (plain or streamed)         routes/openai.ts
//   POST /v1/images/edits         OpenAI image edits (multipart) as inpainting   routes/edits.ts
//   POST /v1/jobs                 queue a job, answer 202 at once               routes/jobs.ts
//   GET  /v1/jobs/:id             its status, progress, result or error
//   GET  /v1/jobs/:id/events      its events as SSE, replayed from Last-Event-ID
//   DELETE /v1/jobs/:id           cancel a job
//   GET  /v1/loras                the LoRAs requests may name                   routes/loras.ts
//   /sdapi/v1/*                   A1111's API: txt2img, img2img, progress, …    routes/a1111/
//
// Errors are OpenAI-shaped (errors.ts), FastAPI/A1111-shaped under /sdapi; /v1/*, /sdapi/* and /metrics
// need the token when one is configured (under /sdapi also as HTTP Basic auth's password). The engine is injected (`createApp({ engine, gpu, options })`): a ready `Engine` or an
// `EngineLoader` that builds one in the background, so tests run the same app on a test double or a tiny
// real model.

import { type Context, Hono } from "hono";
import type { Engine } from "../pipeline/types.ts";
import type { AppEnv, AppState } from "./context.ts";
import { type EngineHost, type EngineLoader, type GpuInfo, LocalEngineHost } from "./engine_host.ts";
import { notFound, onError } from "./errors.ts";
import { effectiveDefaults, type RequestDraft, resolveRequest } from "./defaults.ts";
import { Metrics } from "./metrics.ts";
import { bearerAuth } from "./middleware/auth.ts";
import { clientSignal, countResponses } from "./middleware/request.ts";
import { DEFAULT_SERVER_OPTIONS, type ServerOptions } from "./options.ts";
import { GenerationQueue } from "./queue.ts";
import { LocalJobQueue } from "./queue/local.ts";
import type { JobQueue } from "./queue/types.ts";
import { a1111Routes } from "./routes/a1111/index.ts";
import { detailResponse } from "./routes/a1111/errors.ts";
import { debugRoutes } from "./routes/debug.ts";
import { editRoutes } from "./routes/edits.ts";
import { jobRoutes } from "./routes/jobs.ts";
import { loraRoutes } from "./routes/loras.ts";
import { nativeRoutes } from "./routes/native.ts";
import { openAIRoutes } from "./routes/openai.ts";
import { statusRoutes } from "./routes/status.ts";
import { webRoutes } from "./routes/web.ts";

export { DEFAULT_SERVER_OPTIONS, type ServerOptions };

const EVENTS_PATH = /^\/v1\/jobs\/[^/]+\/events$/;

/** Where the bearer token may come in the query: only on the GETs an EventSource opens, as it cannot send
 * headers. GET /v1/generate's strict query schema knows `access_token` alone. */
function queryTokenParams(c: Context): readonly string[] {
  if (c.req.method !== "GET") return [];
  if (c.req.path === "/v1/generate") return ["access_token"];
  return EVENTS_PATH.test(c.req.path) ? ["token", "access_token"] : [];
}

export interface CreateAppInit {
  /** The engine's host: the real server passes a `WorkerEngineHost` (worker/host.ts). Absent: a
   * `LocalEngineHost` on `engine` and `gpu` below. */
  host?: EngineHost;
  /** A ready engine or a loader (run once, in the background) on this thread: test doubles. Absent (and no
   * host): no model, generation answers 503. */
  engine?: Engine | EngineLoader;
  /** Adapter report for /healthz with `engine`. */
  gpu?: Promise<GpuInfo>;
  options?: Partial<ServerOptions>;
  /** A queue shared with other servers (queue/redis_queue.ts), built on this server's GPU queue, which then
   * runs only what this server takes from it. Absent: the GPU queue is the queue. */
  jobs?: (local: SharedQueueContext) => JobQueue;
}

/** What a shared queue gets to build on. */
export interface SharedQueueContext {
  queue: GenerationQueue;
  engineHost: EngineHost;
  metrics: Metrics;
  options: ServerOptions;
}

export interface ServerApp {
  app: Hono<AppEnv>;
  fetch: (request: Request) => Response | Promise<Response>;
  /** This server's GPU queue. */
  queue: GenerationQueue;
  /** What the routes use: `queue`, or the shared queue. */
  jobs: JobQueue;
  engineHost: EngineHost;
  metrics: Metrics;
  options: ServerOptions;
  /** Stops taking jobs, cancels waiting ones, lets the running one finish for up to `graceMs`, then aborts it;
   * then releases the engine. */
  drain(graceMs: number): Promise<void>;
}

export function createApp(init: CreateAppInit = {}): ServerApp {
  const options: ServerOptions = { ...DEFAULT_SERVER_OPTIONS, ...init.options };
  const metrics = new Metrics();
  const engineHost = init.host ?? new LocalEngineHost({ engine: init.engine, gpu: init.gpu });
  // Missing fields get the model's defaults (under the server's explicit ones) when a job starts.
  const resolve = (draft: RequestDraft, engine: Engine) =>
    resolveRequest(draft, effectiveDefaults(engine.defaults, options), options);
  const queue = new GenerationQueue(engineHost, { ...options, resolve }, metrics);
  const jobs = init.jobs?.({ queue, engineHost, metrics, options }) ?? new LocalJobQueue(queue);
  engineHost.start();
  const state: AppState = { queue, jobs, engineHost, metrics, options };

  const app = new Hono<AppEnv>();
  app.use(countResponses(metrics), clientSignal());
  // Registered before the routes, so it also answers 401 for unknown /v1 paths rather than 404.
  if (options.token) {
    const auth = bearerAuth({
      token: options.token,
      realm: "sd-webgpu",
      queryTokenParams,
    });
    app.use("/v1/*", auth);
    app.use("/metrics", auth);
    // A1111's clients send HTTP Basic credentials (its --api-auth user:password): the password is the token.
    app.use(
      "/sdapi/*",
      bearerAuth({
        token: options.token,
        realm: "sd-webgpu",
        basic: true,
        reject: (why, headers) =>
          detailResponse(
            401,
            why === "missing" ? "Not authenticated" : "Incorrect username or password",
            headers,
          ),
      }),
    );
  }
  app.route("/", webRoutes());
  app.route("/", statusRoutes(state));
  app.route("/", nativeRoutes(state));
  app.route("/", openAIRoutes(state));
  app.route("/", editRoutes(state));
  app.route("/", jobRoutes(state));
  app.route("/", loraRoutes(state));
  app.route("/", a1111Routes(state));
  if (options.testHooks) app.route("/", debugRoutes(state));
  app.notFound(notFound);
  app.onError(onError);

  return {
    app,
    fetch: (request: Request) => app.fetch(request),
    queue,
    jobs,
    engineHost,
    metrics,
    options,
    drain: async (graceMs) => {
      await jobs.drain(graceMs);
      await engineHost.close();
    },
  };
}
