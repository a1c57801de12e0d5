// The Hono application. Routes are added as the product grows; this file wires them to the engine state.

import { Hono } from "hono";
import type { Gpu } from "../gpu/device.ts";

export interface ServerState {
  /** Resolves once the GPU is up (or rejects with the reason). */
  gpu: Promise<Gpu>;
  gpuError?: string;
  gpuReady?: Gpu;
}

export function createApp(state: ServerState): Hono {
  const app = new Hono();

  app.get("/healthz", (c) => {
    if (state.gpuError) return c.json({ status: "failed", reason: state.gpuError }, 503);
    const gpu = state.gpuReady;
    if (!gpu) return c.json({ status: "starting" }, 503);
    return c.json({
      status: "ready",
      adapter: gpu.report.adapter.description || gpu.report.adapter.vendor,
      adapterInfo: gpu.report.adapter,
      f16: gpu.report.f16,
      f16SelfTest: gpu.report.f16SelfTest,
      limits: gpu.report.limits,
    });
  });

  app.notFound((c) =>
    c.json({ error: { code: "not_found", message: `no route for ${c.req.method} ${c.req.path}` } }, 404)
  );
  app.onError((err, c) => {
    console.error(err);
    return c.json({ error: { code: "internal", message: err.message } }, 500);
  });
  return app;
}
