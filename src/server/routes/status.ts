// The server's state: GET /healthz (open), GET /metrics (Prometheus text), GET /v1/models (OpenAI list).
//
//   /healthz  starting | downloading {progress, bytes, totalBytes, file} | loading {progress, stage} |
//             ready {model, adapter, f16, defaults} | recovering | failed {reason}, with the queue

import { Hono } from "hono";
import type { Engine } from "../../pipeline/types.ts";
import type { AppEnv, AppState } from "../context.ts";
import { methodNotAllowed } from "../errors.ts";
import { defaultsJson, effectiveDefaults } from "../defaults.ts";

export function statusRoutes({ engineHost, queue, jobs, metrics, options }: AppState): Hono<AppEnv> {
  /** What a request leaving out size, steps, guidance or sampler gets (the model's under the server's). */
  const defaults = (engine: Engine) => defaultsJson(effectiveDefaults(engine.defaults, options));

  const app = new Hono<AppEnv>();

  app.get("/healthz", async (c) => {
    const state = engineHost.status();
    const gpu = engineHost.gpuInfo();
    // With a shared queue: its numbers (every server's), and the connection to it (`redis`: ok or not).
    const queueInfo = await jobs.stats();
    const shared = jobs.health();
    if (state.status !== "ready") return c.json({ ...state, ...shared.fields, queue: queueInfo }, 503);
    const engine = engineHost.current;
    return c.json({
      status: "ready",
      model: state.model,
      ...(gpu ?? {}),
      ...(engine ? { defaults: defaults(engine) } : {}),
      ...(state.model === null && !jobs.shared
        ? { note: "no model (--no-model): generation answers 503; start with --model DIR" }
        : {}),
      ...shared.fields,
      queue: queueInfo,
    }, shared.ok ? 200 : 503);
  });

  app.get("/metrics", async (c) => {
    const engine = engineHost.current;
    const body = metrics.render({
      // The shared queue's length where there is one; running is always this server's own GPU.
      queueLength: jobs.shared ? (await jobs.stats()).queued : queue.waiting,
      running: queue.running ? 1 : 0,
      gpuBytes: engine ? safeGpuBytes(engine) : 0,
      modelReady: engine !== undefined,
      residentBytes: Deno.memoryUsage().rss,
    });
    return c.body(body, 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
  });

  const startedAt = Date.now();
  app.get("/v1/models", (c) => {
    const engine = engineHost.current;
    const created = Math.floor(startedAt / 1000);
    return c.json({
      object: "list",
      data: engine
        ? [{
          id: engine.modelName,
          object: "model",
          created,
          owned_by: "sd-webgpu",
          defaults: defaults(engine),
        }]
        : [],
    });
  });

  for (const path of ["/healthz", "/metrics", "/v1/models"]) app.all(path, methodNotAllowed("GET"));
  return app;
}

/** A scrape must not fail because the engine cannot count its bytes. */
function safeGpuBytes(engine: Engine): number {
  try {
    return engine.gpuBytes();
  } catch {
    return 0;
  }
}
