// Filling in what a request leaves out. The schemas keep missing fields undefined (a `RequestDraft`); the
// queue resolves a draft into a `GenerateRequest` when its job starts, once the engine is loaded and its
// model's defaults are known (pipeline/defaults.ts: SD-Turbo 1 step without guidance, SD 2.x 768-v 768², …).
// The server's explicit --default-size / --default-steps (and the `defaultGuidance` option) win over the
// model's; an engine that reports no defaults (test doubles) gets FALLBACK_DEFAULTS.

import type { GenerateRequest } from "../pipeline/types.ts";
import type { ModelDefaults } from "../pipeline/defaults.ts";
import type { RequestLimits } from "./schema_fields.ts";

/** For an engine without defaults of its own: what the server used before models had any. */
export const FALLBACK_DEFAULTS: ModelDefaults = {
  width: 512,
  height: 512,
  steps: 20,
  guidanceScale: 7.5,
  source: "server fallback",
};

/** A request as validated: the fields with model defaults may be missing, with rules to derive others. */
export interface RequestDraft extends Omit<GenerateRequest, "width" | "height" | "steps" | "guidanceScale"> {
  width?: number;
  height?: number;
  steps?: number;
  guidanceScale?: number;
  /** Previews when `previewEvery` is not given: "quarter" about every quarter of the steps (native
   * streams); a number K spreads K previews evenly over the steps that run (OpenAI's partial_images). */
  autoPreviews?: "quarter" | number;
  /** OpenAI's `quality`: the default steps times this, when `steps` is not given. */
  stepsFactor?: number;
}

/** The model's defaults under the server's explicit overrides, within the server's limits. */
export function effectiveDefaults(model: ModelDefaults | undefined, limits: RequestLimits): ModelDefaults {
  const d = model ?? FALLBACK_DEFAULTS;
  const size = limits.defaultSize;
  const fit = (px: number) => Math.max(limits.minSize, Math.min(limits.maxSize, px));
  return {
    width: fit(size ?? d.width),
    height: fit(size ?? d.height),
    steps: Math.min(limits.maxSteps, limits.defaultSteps ?? d.steps),
    guidanceScale: limits.defaultGuidance ?? d.guidanceScale,
    ...(d.sampler ? { sampler: d.sampler } : {}),
    source: [
      d.source,
      size !== undefined && "--default-size",
      limits.defaultSteps !== undefined && "--default-steps",
    ]
      .filter(Boolean).join(", "),
  };
}

/** The engine request of a draft under these (effective) defaults. */
export function resolveRequest(
  draft: RequestDraft,
  d: ModelDefaults,
  limits: RequestLimits,
): GenerateRequest {
  const { autoPreviews, stepsFactor, ...rest } = draft;
  const steps = draft.steps ??
    Math.min(limits.maxSteps, Math.max(1, Math.round(d.steps * (stepsFactor ?? 1))));
  let previewEvery = draft.previewEvery;
  if (previewEvery === undefined && autoPreviews === "quarter") {
    previewEvery = Math.max(1, Math.ceil(steps / 4));
  } else if (previewEvery === undefined && typeof autoPreviews === "number" && autoPreviews > 0) {
    // img2img and inpainting run about strength × steps (diffusers' get_timesteps): spread over those.
    const strength = draft.initImage ? draft.strength ?? 1 : 1;
    const runSteps = Math.max(1, Math.floor(steps * strength));
    previewEvery = Math.max(1, Math.floor(runSteps / (autoPreviews + 1)));
  }
  return {
    ...rest,
    width: draft.width ?? d.width,
    height: draft.height ?? d.height,
    steps,
    guidanceScale: draft.guidanceScale ?? d.guidanceScale,
    previewEvery: previewEvery ?? 0,
  };
}

/** The defaults as the API shows them (/v1/models, /healthz): snake_case like the requests. */
export function defaultsJson(d: ModelDefaults): Record<string, unknown> {
  return {
    width: d.width,
    height: d.height,
    steps: d.steps,
    guidance_scale: d.guidanceScale,
    ...(d.sampler ? { sampler: d.sampler } : {}),
    source: d.source,
  };
}
