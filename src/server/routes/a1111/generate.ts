// POST /sdapi/v1/txt2img and POST /sdapi/v1/img2img: A1111's generation endpoints.
//
// A request is n_iter consecutive jobs on the queue, submitted at once (all or none, so no other job runs
// between them), each a batch of batch_size images with per-image seeds: image i of iteration k is the image
// a single run of seed + k·batch_size + i gives (A1111's rule; seed -1 draws one). Prompts use A1111's
// weighting syntax. Previews are asked for about PREVIEWS_PER_RUN times a run, for /sdapi/v1/progress's
// current_image. The answer is A1111's {images, parameters, info} once every iteration has ended.

import { type Context, Hono } from "hono";
import { readPngText } from "../../../image/codec.ts";
import type { AppEnv, AppState } from "../../context.ts";
import type { RequestDraft } from "../../defaults.ts";
import { UnavailableError } from "../../engine_host.ts";
import { QueueFullError } from "../../queue.ts";
import type { JobHandle } from "../../queue/types.ts";
import { cancelOnAbort } from "../submit.ts";
import { readJsonBody } from "./body.ts";
import { a1111Error, jobErrorResponse, validationError } from "./errors.ts";
import { buildInfo, echoValues, usedValues } from "./info.ts";
import { a1111InpaintOf, checkInpaintImages } from "./inpaint.ts";
import { isLoadedCheckpoint } from "./models.ts";
import { type A1111Kind, type A1111Request, parseA1111, type SchemaContext } from "./schema.ts";
import { A1111Task, type A1111Tasks, timestamp } from "./tasks.ts";

/** Previews per run (the native stream's are a quarter apart; progress pollers like them more often). */
export const PREVIEWS_PER_RUN = 8;

export function generateRoutes(state: AppState, tasks: A1111Tasks): Hono<AppEnv> {
  const { options, engineHost, jobs: queue } = state;
  const app = new Hono<AppEnv>();
  const schema: SchemaContext = {
    limits: options,
    isLoadedCheckpoint: (name) => isLoadedCheckpoint(engineHost, name),
  };

  for (const kind of ["txt2img", "img2img"] as const) {
    app.post(`/sdapi/v1/${kind}`, (c) => generate(c, kind));
  }

  async function generate(c: Context<AppEnv>, kind: A1111Kind): Promise<Response> {
    const body = await readJsonBody(c, options.maxBodyBytes);
    if (body instanceof Response) return body;
    const parsed = parseA1111(kind, body.value, schema);
    if (!parsed.ok) return validationError(parsed.issues);
    const r = parsed.request;
    if (r.warnings.length) console.warn(`POST /sdapi/v1/${kind}: ${r.warnings.join("; ")}`);
    const seed = r.seed === -1 ? randomSeed() : r.seed;
    const subseed = r.subseed === -1 ? randomSeed() : r.subseed;

    if (r.mask) {
      // Headers only: the engine decodes, blurs and overlays (inpaint.ts).
      const issues = checkInpaintImages(r);
      if (issues.length) return validationError(issues);
    }
    const base = draftOf(r, options.taesd);
    const drafts = Array.from({ length: r.nIter }, (_, k) => ({ ...base, seed: seed + k * r.batchSize }));

    let jobs: JobHandle[];
    try {
      jobs = await queue.submit(drafts, "connection");
    } catch (e) {
      if (e instanceof QueueFullError) {
        return a1111Error(429, "QueueFullError", e.message, { "retry-after": String(e.retryAfterSeconds) });
      }
      if (e instanceof UnavailableError) {
        return a1111Error(503, "UnavailableError", e.message, { "retry-after": "10" });
      }
      throw e;
    }
    const task = new A1111Task(r.taskId ?? taskId(kind), `scripts_${kind}`, jobs);
    tasks.add(task);
    // A client that goes away cancels its iterations (A1111 would finish them for nobody).
    const release = cancelOnAbort(c.get("clientSignal"), jobs);
    let outcome;
    try {
      outcome = await task.run();
    } finally {
      release();
      tasks.remove(task);
    }
    if (outcome.error) return jobErrorResponse(outcome.error);

    const images: Uint8Array[] = [];
    const infotexts: string[] = [];
    for (const done of outcome.done) {
      for (const png of done.images ?? [done.image]) {
        images.push(png);
        infotexts.push(readPngText(png).parameters ?? done.parameters);
      }
    }
    const used = usedValues(infotexts[0]);
    const info = buildInfo(r, {
      seed,
      subseed,
      infotexts,
      used,
      jobTimestamp: timestamp(task.startedAt ?? task.createdAt),
      modelName: engineHost.current?.modelName,
      interrupted: task.interrupted,
      skipped: task.skippedJobs.size,
    });
    return c.json({
      images: r.sendImages ? images.map((png) => png.toBase64()) : [],
      parameters: echoValues(r, used),
      info: JSON.stringify(info),
    });
  }

  return app;
}

/** The engine request of every iteration (the seed is each iteration's own). */
function draftOf(r: A1111Request, taesd: boolean): RequestDraft {
  return {
    prompt: r.prompt,
    negativePrompt: r.negativePrompt || undefined,
    width: r.width,
    height: r.height,
    steps: r.steps,
    guidanceScale: r.cfgScale,
    sampler: r.sampler,
    eta: r.eta,
    promptWeighting: "a1111",
    preview: taesd ? "taesd" : "cheap",
    previewFormat: "png",
    outputFormat: "png",
    autoPreviews: PREVIEWS_PER_RUN,
    ...(r.kind === "img2img"
      ? {
        initImage: r.initImage,
        strength: r.denoisingStrength,
        ...(r.mask ? { mask: r.mask, a1111Inpaint: a1111InpaintOf(r) } : {}),
      }
      : {}),
    ...(r.batchSize > 1 ? { numImages: r.batchSize, seedMode: "per-image" as const } : {}),
  };
}

/** A1111 draws seeds below 2³² − 1. */
function randomSeed(): number {
  return Math.floor(Math.random() * 4294967294);
}

/** A1111's task ids: task(txt2img-XXXXXXX). */
function taskId(kind: A1111Kind): string {
  const chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  const random = crypto.getRandomValues(new Uint8Array(7));
  return `task(${kind}-${[...random].map((b) => chars[b % chars.length]).join("")})`;
}
