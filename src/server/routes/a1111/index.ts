// The A1111-compatible API (AUTOMATIC1111's stable-diffusion-webui `--api`), mounted beside the native one:
//
//   POST /sdapi/v1/txt2img, /sdapi/v1/img2img                     generate.ts (schema.ts, inpaint.ts, info.ts)
//   GET  /sdapi/v1/progress; POST /sdapi/v1/interrupt, /skip       status.ts over tasks.ts
//   GET  /sdapi/v1/samplers, /schedulers, /sd-models, /options, /loras; POST /sdapi/v1/options
//
// Errors are FastAPI's and A1111's shapes (errors.ts), unknown /sdapi paths and methods included. With a
// token the routes take it as a bearer token or as the password of HTTP Basic auth (app.ts).

import { Hono } from "hono";
import type { AppEnv, AppState } from "../../context.ts";
import { detailResponse } from "./errors.ts";
import { generateRoutes } from "./generate.ts";
import { methodNotAllowed, statusRoutes } from "./status.ts";
import { A1111Tasks } from "./tasks.ts";

const METHODS: Record<string, string> = {
  "/sdapi/v1/txt2img": "POST",
  "/sdapi/v1/img2img": "POST",
  "/sdapi/v1/progress": "GET",
  "/sdapi/v1/interrupt": "POST",
  "/sdapi/v1/skip": "POST",
  "/sdapi/v1/samplers": "GET",
  "/sdapi/v1/schedulers": "GET",
  "/sdapi/v1/sd-models": "GET",
  "/sdapi/v1/refresh-checkpoints": "POST",
  "/sdapi/v1/options": "GET, POST",
  "/sdapi/v1/loras": "GET",
  "/sdapi/v1/refresh-loras": "POST",
};

export function a1111Routes(state: AppState): Hono<AppEnv> {
  const tasks = new A1111Tasks();
  const app = new Hono<AppEnv>();
  app.route("/", generateRoutes(state, tasks));
  app.route("/", statusRoutes(state, tasks));
  for (const [path, allow] of Object.entries(METHODS)) app.all(path, methodNotAllowed(allow));
  app.all("/sdapi/*", () => detailResponse(404, "Not Found"));
  return app;
}
