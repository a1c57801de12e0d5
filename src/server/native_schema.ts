// Request validation (zod) for the native endpoint, POST /v1/generate (JSON) and GET /v1/generate?… (a
// query string): the body becomes a `RequestDraft` for the engine.

import { z } from "zod";
import { PREVIEW_MODES, type PromptWeighting, SEED_MODES } from "../pipeline/types.ts";
import type { RequestDraft } from "./defaults.ts";
import {
  checkLoras,
  checkMaskSize,
  formatField,
  imageField,
  intField,
  lorasField,
  NO_TAESD,
  numberField,
  promptWeightingField,
  type RequestLimits,
  samplerField,
  seedField,
  sizeField,
  textField,
} from "./schema_fields.ts";

export interface NativeRequest {
  /** Model defaults are filled in when the job starts (server/defaults.ts). */
  request: RequestDraft;
  /** Whether the caller set preview_every (else a streamed run gets a default). */
  previewEveryGiven: boolean;
}

/** Defaults a route chooses for fields its requests leave out. */
export interface RouteDefaults {
  /** "none" on the native API (diffusers' behaviour); A1111-compatible routes pass "a1111". */
  promptWeighting?: PromptWeighting;
}

/** POST /v1/generate (JSON) or GET /v1/generate?… (query strings: `fromQuery`). */
export function nativeSchema(limits: RequestLimits, fromQuery: boolean, defaults: RouteDefaults = {}) {
  const shape = {
    prompt: textField(limits.maxPromptChars, "prompt").refine(
      (s) => s.trim().length > 0,
      "must not be empty",
    ),
    negative_prompt: textField(limits.maxPromptChars, "negative_prompt").optional(),
    width: sizeField(fromQuery, limits).optional(),
    height: sizeField(fromQuery, limits).optional(),
    steps: intField(fromQuery, 1, limits.maxSteps).optional(),
    guidance_scale: numberField(fromQuery).pipe(
      z.number().min(0, "must be between 0 and 50").max(50, "must be between 0 and 50"),
    ).optional(),
    sampler: samplerField.optional(),
    seed: seedField(fromQuery).optional(),
    eta: numberField(fromQuery).pipe(z.number().min(0, "must be in [0, 1]").max(1, "must be in [0, 1]"))
      .optional(),
    preview_every: intField(fromQuery, 0, limits.maxSteps).optional(),
    preview: z.enum(PREVIEW_MODES, { error: `must be ${PREVIEW_MODES.join(", ")}` }).optional(),
    preview_format: formatField.optional(),
    output_format: formatField.optional(),
    long_prompt: z.enum(["chunk", "truncate"], { error: "must be chunk or truncate" }).optional(),
    num_images: intField(fromQuery, 1, limits.maxImages).optional(),
    seed_mode: z.enum(SEED_MODES, { error: `must be ${SEED_MODES.join(" or ")}` }).optional(),
    prompt_weighting: promptWeightingField.optional(),
    image: imageField.optional(),
    mask: imageField.optional(),
    strength: numberField(fromQuery).pipe(
      z.number().gt(0, "must be in (0, 1]").max(1, "must be in (0, 1]"),
    ).optional(),
    // A query string cannot carry this list: there, LoRAs come as <lora:NAME:SCALE> tags in the prompt.
    loras: lorasField.optional(),
    // EventSource cannot send headers: the bearer token may come as ?access_token= (checked by the auth
    // middleware), and `_` is the usual cache-buster.
    ...(fromQuery ? { access_token: z.string().optional(), _: z.string().optional() } : {}),
  };
  const allowed = Object.keys(shape).filter((k) => k !== "access_token" && k !== "_").join(", ");
  return z.strictObject(shape, {
    error: (i) =>
      i.code === "invalid_type"
        ? "expected a JSON object"
        : i.code === "unrecognized_keys"
        ? `unknown field; the fields are ${allowed}`
        : undefined,
  })
    .superRefine((v, ctx) => {
      if (v.strength !== undefined && v.image === undefined) {
        ctx.addIssue({ code: "custom", path: ["strength"], message: "only applies with an init image" });
      }
      if (v.mask !== undefined && v.image === undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["mask"],
          message: "only applies with an image (the picture to repaint)",
        });
      }
      if (v.image && v.mask) checkMaskSize(v.image, v.mask, ctx);
      if (v.preview === "taesd" && !limits.taesd) {
        ctx.addIssue({ code: "custom", path: ["preview"], message: NO_TAESD });
      }
      checkLoras(limits, v.prompt, v.loras, ctx);
    })
    .transform((v): NativeRequest => ({
      previewEveryGiven: v.preview_every !== undefined,
      request: {
        prompt: v.prompt,
        negativePrompt: v.negative_prompt,
        width: v.width,
        height: v.height,
        steps: v.steps,
        guidanceScale: v.guidance_scale,
        sampler: v.sampler,
        seed: v.seed === undefined || v.seed < 0 ? undefined : v.seed,
        eta: v.eta,
        initImage: v.image,
        mask: v.mask,
        // Inpainting defaults to diffusers' strength 1 (the masked area from pure noise).
        strength: v.image ? v.strength ?? (v.mask ? 1 : 0.75) : undefined,
        previewEvery: v.preview_every,
        preview: v.preview ?? (limits.taesd ? "taesd" : "cheap"),
        previewFormat: v.preview_format ?? "png",
        outputFormat: v.output_format ?? "png",
        longPrompt: v.long_prompt,
        loras: v.loras?.map((l) => ({ name: l.name, scale: l.scale ?? 1 })),
        promptWeighting: v.prompt_weighting ?? defaults.promptWeighting ?? "none",
        ...(v.num_images !== undefined && v.num_images > 1 ? { numImages: v.num_images } : {}),
        ...(v.seed_mode ? { seedMode: v.seed_mode } : {}),
      },
    }));
}
