// A1111's other endpoints: progress and its controls, the sampler, scheduler, model and LoRA lists, options.
//
//   GET  /sdapi/v1/progress[?skip_current_image=true]   ProgressResponse of the current A1111 task (tasks.ts)
//   POST /sdapi/v1/interrupt, /sdapi/v1/skip             its controls ({} and null, as A1111 answers)
//   GET  /sdapi/v1/samplers, /sdapi/v1/schedulers        what sampler_name and scheduler take (samplers.ts)
//   GET  /sdapi/v1/sd-models                             the loaded model (models.ts)
//   GET  /sdapi/v1/options                               a few settings, sd_model_checkpoint among them
//   POST /sdapi/v1/options                               sd_model_checkpoint must name the loaded model (422
//                                                        otherwise: this server cannot switch); the other
//                                                        settings are not kept (logged)
//   GET  /sdapi/v1/loras, POST /sdapi/v1/refresh-loras   the LoRA folder (A1111's Lora extension)
//   POST /sdapi/v1/refresh-checkpoints                   nothing to refresh: null

import { type Context, Hono } from "hono";
import type { AppEnv, AppState } from "../../context.ts";
import { readJsonBody } from "./body.ts";
import { BOOL_TEXT } from "./coerce.ts";
import { a1111Error, detailResponse, issue, validationError } from "./errors.ts";
import { isLoadedCheckpoint, listLoras, loadedCheckpoint } from "./models.ts";
import { A1111_SCHEDULERS, samplerList } from "./samplers.ts";
import type { A1111Tasks } from "./tasks.ts";

export function statusRoutes(state: AppState, tasks: A1111Tasks): Hono<AppEnv> {
  const { engineHost, options } = state;
  const app = new Hono<AppEnv>();

  app.get("/sdapi/v1/progress", (c) => {
    const raw = c.req.query("skip_current_image");
    const key = raw?.trim().toLowerCase() ?? "false";
    const skip = Object.hasOwn(BOOL_TEXT, key) ? BOOL_TEXT[key] : undefined;
    if (skip === undefined) {
      return validationError([{
        loc: ["query", "skip_current_image"],
        msg: "value could not be parsed to a boolean",
        type: "type_error.bool",
      }]);
    }
    return c.json(tasks.progress(skip));
  });

  app.post("/sdapi/v1/interrupt", (c) => {
    tasks.current()?.interrupt();
    return c.json({});
  });

  app.post("/sdapi/v1/skip", (c) => {
    const task = tasks.current();
    if (task?.startedAt !== undefined) task.skip();
    return c.json(null);
  });

  app.get("/sdapi/v1/samplers", (c) => c.json(samplerList()));
  app.get("/sdapi/v1/schedulers", (c) => c.json(A1111_SCHEDULERS));

  app.get("/sdapi/v1/sd-models", (c) => {
    const cp = loadedCheckpoint(engineHost);
    return c.json(cp ? [cp] : []);
  });
  app.post("/sdapi/v1/refresh-checkpoints", (c) => c.json(null));

  app.get("/sdapi/v1/options", (c) => {
    const cp = loadedCheckpoint(engineHost);
    return c.json({
      sd_model_checkpoint: cp?.title ?? null,
      sd_checkpoint_hash: cp?.sha256 ?? null,
      sd_vae: "Automatic",
      samples_format: "png",
      CLIP_stop_at_last_layers: 1,
      eta_noise_seed_delta: 0,
      live_previews_enable: true,
      show_progress_type: options.taesd ? "TAESD" : "Approx cheap",
    });
  });

  app.post("/sdapi/v1/options", (c) => setOptions(c));

  async function setOptions(c: Context<AppEnv>): Promise<Response> {
    const read = await readJsonBody(c, options.maxBodyBytes);
    if (read instanceof Response) return read;
    const body = read.value;
    if (body === null || typeof body !== "object" || Array.isArray(body)) {
      return validationError([{ loc: ["body"], msg: "value is not a valid dict", type: "type_error.dict" }]);
    }
    const settings = body as Record<string, unknown>;
    const checkpoint = settings.sd_model_checkpoint;
    if (checkpoint !== undefined && checkpoint !== null) {
      if (typeof checkpoint !== "string") {
        return validationError([{
          loc: ["body", "sd_model_checkpoint"],
          msg: "str type expected",
          type: "type_error.str",
        }]);
      }
      if (isLoadedCheckpoint(engineHost, checkpoint) === false) {
        const loaded = loadedCheckpoint(engineHost)?.title;
        return validationError([
          issue(
            ["sd_model_checkpoint"],
            `model ${JSON.stringify(checkpoint)} not found: this server serves only ${
              JSON.stringify(loaded)
            } and cannot switch models (start another server with --model)`,
          ),
        ]);
      }
    }
    const ignored = Object.keys(settings).filter((k) => k !== "sd_model_checkpoint");
    if (ignored.length) console.warn(`POST /sdapi/v1/options: settings not kept: ${ignored.join(", ")}`);
    return c.json(null);
  }

  app.get("/sdapi/v1/loras", async (c) => {
    try {
      return c.json(await listLoras(options.loras));
    } catch (e) {
      return a1111Error(500, "OSError", `cannot list the LoRA folder: ${(e as Error).message}`);
    }
  });
  app.post("/sdapi/v1/refresh-loras", (c) => c.json(null));

  return app;
}

/** FastAPI's 405 for a known path. */
export function methodNotAllowed(allow: string) {
  return () => detailResponse(405, "Method Not Allowed", { allow });
}
