// What an A1111 generation answers besides its images: `parameters` (the request echoed with A1111's names
// and defaults) and `info` (a JSON string: A1111's Processed.js(), with `infotexts` — each image's
// parameters text as the engine wrote it into the PNG — and this server's `warnings`).
//
// Seeds follow A1111's rule: image i of iteration k has seed + k·batch_size + i (and likewise the subseeds),
// whatever ran; `infotexts` covers the images produced (fewer after an interrupt or a skip).

import { A1111_SAMPLERS, a1111SamplerName } from "./samplers.ts";
import type { A1111Request } from "./schema.ts";

/** The values a run used, as its infotext says them (the fields a request left to the model's defaults). */
export interface UsedValues {
  steps?: number;
  cfgScale?: number;
  width?: number;
  height?: number;
  /** A1111's sampler name and schedule. */
  sampler?: { name: string; scheduler: string };
  model?: string;
}

/** The `key: value` fields of an infotext's last line (Steps, Sampler, CFG scale, Seed, Size, Model, …). */
export function infotextFields(text: string): Record<string, string> {
  const last = text.split("\n").at(-1) ?? "";
  const out: Record<string, string> = {};
  for (const m of last.matchAll(/(?:^|, )([A-Za-z][\w ]*?): ([^,]*)/g)) out[m[1]] = m[2].trim();
  return out;
}

/** The values an infotext names. */
export function usedValues(text: string | undefined): UsedValues {
  if (!text) return {};
  const fields = infotextFields(text);
  const num = (key: string) => {
    const v = Number(fields[key]);
    return fields[key] !== undefined && Number.isFinite(v) ? v : undefined;
  };
  const size = /^(\d+)x(\d+)$/.exec(fields.Size ?? "");
  return {
    steps: num("Steps"),
    cfgScale: num("CFG scale"),
    width: size ? Number(size[1]) : undefined,
    height: size ? Number(size[2]) : undefined,
    sampler: fields.Sampler ? samplerOfText(fields.Sampler) : undefined,
    model: fields.Model,
  };
}

/** "DPM++ 2M Karras", "Euler a" or one of our names → A1111's name and schedule. */
function samplerOfText(text: string): { name: string; scheduler: string } {
  const karras = / karras$/i.test(text);
  const base = karras ? text.slice(0, -7) : text;
  const known = A1111_SAMPLERS.find((s) => s.name.toLowerCase() === base.toLowerCase());
  if (known) return { name: known.name, scheduler: karras ? "Karras" : "Automatic" };
  return a1111SamplerName(text);
}

export interface RunSummary {
  /** The seeds drawn by the route (-1 resolved). */
  seed: number;
  subseed: number;
  /** Each produced image's infotext, in order. */
  infotexts: string[];
  used: UsedValues;
  jobTimestamp: string;
  modelName?: string;
  interrupted: boolean;
  skipped: number;
}

/** A1111's `info` object. */
export function buildInfo(r: A1111Request, s: RunSummary): Record<string, unknown> {
  const total = r.batchSize * r.nIter;
  const all = <T>(f: (i: number) => T) => Array.from({ length: total }, (_, i) => f(i));
  const p = echoValues(r, s.used);
  const scheduler = s.used.sampler?.scheduler;
  return {
    prompt: r.values.prompt,
    all_prompts: all(() => r.values.prompt),
    negative_prompt: r.negativePrompt,
    all_negative_prompts: all(() => r.negativePrompt),
    seed: s.seed,
    all_seeds: all((i) => s.seed + i),
    subseed: s.subseed,
    all_subseeds: all((i) => s.subseed + i),
    subseed_strength: 0,
    width: p.width,
    height: p.height,
    sampler_name: s.used.sampler?.name ?? p.sampler_name,
    cfg_scale: p.cfg_scale,
    steps: p.steps,
    batch_size: r.batchSize,
    n_iter: r.nIter,
    restore_faces: false,
    face_restoration_model: null,
    sd_model_name: s.used.model ?? s.modelName ?? null,
    sd_model_hash: null,
    sd_vae_name: null,
    sd_vae_hash: null,
    seed_resize_from_w: -1,
    seed_resize_from_h: -1,
    denoising_strength: r.kind === "img2img" ? r.denoisingStrength : null,
    extra_generation_params: scheduler && scheduler !== "Automatic" ? { "Schedule type": scheduler } : {},
    index_of_first_image: 0,
    infotexts: s.infotexts,
    styles: [],
    job_timestamp: s.jobTimestamp,
    clip_skip: 1,
    is_using_inpainting_conditioning: false,
    version: "sd-webgpu",
    ...(s.interrupted ? { interrupted: true } : {}),
    ...(s.skipped ? { skipped_iterations: s.skipped } : {}),
    warnings: r.warnings,
  };
}

/** `parameters`: every field of A1111's model as given, or its default; the fields left to the model's
 * defaults say what was used. The images are left out unless include_init_images. */
export function echoValues(r: A1111Request, used: UsedValues): Record<string, unknown> {
  const out: Record<string, unknown> = { ...r.values };
  const fill = (key: string, value: unknown) => {
    if (!r.given.has(key) && value !== undefined) out[key] = value;
  };
  fill("steps", used.steps);
  fill("cfg_scale", used.cfgScale);
  fill("width", used.width);
  fill("height", used.height);
  if (!r.given.has("sampler_name") && used.sampler) out.sampler_name = used.sampler.name;
  if (r.kind === "img2img" && r.values.include_init_images !== true) {
    out.init_images = null;
    out.mask = null;
  }
  return out;
}
