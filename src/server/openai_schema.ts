// Request validation (zod) for the OpenAI Images API: /v1/images/generations (JSON) and /v1/images/edits
// (a multipart form). Either becomes an `OpenAIRequest`: the engine's draft plus what the answer echoes.

import { z } from "zod";
import type { GenerateRequest } from "../pipeline/types.ts";
import type { RequestDraft } from "./defaults.ts";
import { imageSize } from "../image/codec.ts";
import {
  boolField,
  checkLoras,
  checkMaskSize,
  fileImageField,
  formBoolField,
  imageField,
  intField,
  lorasField,
  numberField,
  type RequestLimits,
  samplerField,
  seedField,
  textField,
} from "./schema_fields.ts";

export interface OpenAIRequest {
  /** The n images as one batched job (per-image seeds: image k uses seed + k). */
  request: RequestDraft;
  n: number;
  stream: boolean;
  partialImages: number;
  /** The size asked for; undefined: the model's default (the answer says which, once it ran). */
  size?: string;
  quality: "low" | "medium" | "high" | "auto";
  outputFormat: "png" | "jpeg";
}

/** OpenAI's quality names, folded onto the three levels this server distinguishes. */
const QUALITY_NAMES = {
  low: "low",
  medium: "medium",
  standard: "medium",
  high: "high",
  hd: "high",
  xhigh: "high",
  max: "high",
  auto: "auto",
} as const;

/** Steps for OpenAI's `quality` (times the model's default steps) when the request gives no `steps`. */
const QUALITY_STEPS = { low: 0.5, medium: 1, high: 1.5 } as const;

/**
 * The fields /v1/images/generations and /v1/images/edits share: OpenAI's plus our extensions
 * (negative_prompt, steps, …). `fromForm`: multipart text fields, so numbers and booleans arrive as text.
 */
function openAIFields(limits: RequestLimits, fromForm: boolean) {
  const nullable = <T extends z.ZodType>(t: T) => t.nullish();
  return {
    prompt: textField(limits.maxPromptChars, "prompt").refine(
      (s) => s.trim().length > 0,
      "must not be empty",
    ),
    model: nullable(z.string({ error: "must be a string" })),
    n: nullable(intField(fromForm, 1, limits.maxImages)),
    size: nullable(z.string({ error: "must be a string like 512x512" })),
    response_format: nullable(z.enum(["b64_json", "url"], { error: "must be b64_json" })),
    output_format: nullable(z.enum(["png", "jpeg", "webp", "gif", "svg"], { error: "must be png or jpeg" })),
    output_compression: nullable(intField(fromForm, 0, 100)),
    quality: nullable(
      z.enum(["low", "medium", "high", "xhigh", "max", "auto", "standard", "hd"], {
        error: "must be low, medium, high or auto",
      }),
    ),
    stream: nullable(fromForm ? formBoolField() : boolField()),
    partial_images: nullable(intField(fromForm, 0, 3)),
    background: nullable(z.enum(["transparent", "opaque", "auto"], { error: "must be opaque or auto" })),
    user: nullable(z.string({ error: "must be a string" })),
    // Extensions.
    negative_prompt: nullable(textField(limits.maxPromptChars, "negative_prompt")),
    steps: nullable(intField(fromForm, 1, limits.maxSteps)),
    guidance_scale: nullable(
      numberField(fromForm).pipe(
        z.number().min(0, "must be between 0 and 50").max(50, "must be between 0 and 50"),
      ),
    ),
    sampler: nullable(samplerField),
    seed: nullable(seedField(fromForm)),
    strength: nullable(
      numberField(fromForm).pipe(z.number().gt(0, "must be in (0, 1]").max(1, "must be in (0, 1]")),
    ),
    // A JSON list: in a multipart form, LoRAs come as <lora:NAME:SCALE> tags in the prompt.
    loras: nullable(lorasField),
  };
}

/** The shared fields after validation. */
interface OpenAIValues {
  prompt: string;
  n?: number | null;
  size?: string | null;
  response_format?: string | null;
  output_format?: string | null;
  quality?: keyof typeof QUALITY_NAMES | null;
  stream?: boolean | null;
  partial_images?: number | null;
  background?: string | null;
  negative_prompt?: string | null;
  steps?: number | null;
  guidance_scale?: number | null;
  sampler?: GenerateRequest["sampler"] | null;
  seed?: number | null;
  loras?: { name: string; scale?: number }[] | null;
}

/** The rules across the shared fields (what this server cannot do, the size's syntax and range). */
function refineOpenAI(v: OpenAIValues, ctx: z.RefinementCtx, limits: RequestLimits): void {
  checkLoras(limits, v.prompt, v.loras, ctx);
  if (v.response_format === "url") {
    ctx.addIssue({
      code: "custom",
      path: ["response_format"],
      message: "'url' is not supported by this server (images are not stored); use b64_json",
    });
  }
  if (v.output_format && v.output_format !== "png" && v.output_format !== "jpeg") {
    ctx.addIssue({
      code: "custom",
      path: ["output_format"],
      message: `'${v.output_format}' is not supported; use png or jpeg`,
    });
  }
  if (v.background === "transparent") {
    ctx.addIssue({
      code: "custom",
      path: ["background"],
      message: "transparent backgrounds are not supported",
    });
  }
  if (v.size && v.size !== "auto") {
    const m = /^(\d{1,5})x(\d{1,5})$/.exec(v.size);
    if (!m) {
      ctx.addIssue({
        code: "custom",
        path: ["size"],
        message: "must be WIDTHxHEIGHT, e.g. 512x512, or auto",
      });
      return;
    }
    for (const px of [Number(m[1]), Number(m[2])]) {
      if (px % 8 !== 0) {
        ctx.addIssue({ code: "custom", path: ["size"], message: `${px} is not a multiple of 8` });
      } else if (px < limits.minSize || px > limits.maxSize) {
        ctx.addIssue({
          code: "custom",
          path: ["size"],
          message: `${px} is outside ${limits.minSize}..${limits.maxSize} pixels`,
        });
      }
    }
  }
}

/** The size `size` names, or undefined for auto / none. */
function explicitSize(size: string | null | undefined): [number, number] | undefined {
  return size && size !== "auto" ? size.split("x").map(Number) as [number, number] : undefined;
}

/** The engine request and the response's echo of it; `extra` holds the route's own fields (images). A size
 * of undefined, steps and guidance left out: the model's defaults, filled in when the job starts. */
function openAIRequestOf(
  v: OpenAIValues,
  limits: RequestLimits,
  size: [number, number] | undefined,
  extra: Partial<GenerateRequest>,
): OpenAIRequest {
  const quality = QUALITY_NAMES[v.quality ?? "auto"];
  const outputFormat = v.output_format === "jpeg" ? "jpeg" : "png";
  const partialImages = v.stream ? v.partial_images ?? 0 : 0;
  const n = v.n ?? 1;
  return {
    n,
    stream: v.stream ?? false,
    partialImages,
    size: size && `${size[0]}x${size[1]}`,
    quality,
    outputFormat,
    request: {
      prompt: v.prompt,
      negativePrompt: v.negative_prompt ?? undefined,
      width: size?.[0],
      height: size?.[1],
      steps: v.steps ?? undefined,
      ...(quality === "auto" ? {} : { stepsFactor: QUALITY_STEPS[quality] }),
      guidanceScale: v.guidance_scale ?? undefined,
      sampler: v.sampler ?? undefined,
      seed: v.seed == null || v.seed < 0 ? undefined : v.seed,
      loras: v.loras?.map((l) => ({ name: l.name, scale: l.scale ?? 1 })),
      ...extra,
      // Previews spread over the run: the server forwards the first `partialImages` of them.
      ...(partialImages > 0 ? { autoPreviews: partialImages } : { previewEvery: 0 }),
      preview: limits.taesd ? "taesd" : "cheap",
      previewFormat: outputFormat,
      outputFormat,
      // n images: one batch, image k the single image of seed + k (what n consecutive jobs gave).
      ...(n > 1 ? { numImages: n, seedMode: "per-image" as const } : {}),
    },
  };
}

/** POST /v1/images/generations: OpenAI's fields plus our extensions (negative_prompt, steps, image, …). */
export function openAISchema(limits: RequestLimits) {
  return z.looseObject({ ...openAIFields(limits, false), image: imageField.nullish() }, {
    error: (i) => i.code === "invalid_type" ? "expected a JSON object" : undefined,
  })
    .superRefine((v, ctx) => {
      refineOpenAI(v, ctx, limits);
      if (v.strength != null && v.image == null) {
        ctx.addIssue({ code: "custom", path: ["strength"], message: "only applies with an init image" });
      }
    })
    .transform((v): OpenAIRequest =>
      openAIRequestOf(v, limits, explicitSize(v.size), {
        initImage: v.image ?? undefined,
        strength: v.image ? v.strength ?? 0.75 : undefined,
      })
    );
}

/**
 * POST /v1/images/edits (multipart: the route turns file parts into bytes, `image[]` into `image`): OpenAI's
 * fields and our extensions. The image is edited where the mask's alpha is 0 (OpenAI's definition); without
 * a mask, everywhere (image-to-image: the image guides, `strength` 0.75 by default, 1 with a mask). `size`
 * auto (the default): the image's size, scaled down to fit the size limit, each side rounded down to a
 * multiple of 64 (what SD UNets take).
 */
export function openAIEditSchema(limits: RequestLimits) {
  return z.looseObject({
    ...openAIFields(limits, true),
    image: fileImageField(true),
    mask: fileImageField(false).optional(),
  }, { error: (i) => i.code === "invalid_type" ? "expected a multipart form" : undefined })
    .superRefine((v, ctx) => {
      refineOpenAI(v, ctx, limits);
      if (v.image && !imageSize(v.image)) {
        ctx.addIssue({ code: "custom", path: ["image"], message: "is not a readable PNG or JPEG" });
      } else if (v.image && v.mask) checkMaskSize(v.image, v.mask, ctx);
    })
    .transform((v, ctx): OpenAIRequest => {
      // Reached only without issues: the image is there and its header readable (superRefine).
      const image = v.image && imageSize(v.image);
      if (!image) {
        ctx.addIssue({ code: "custom", path: ["image"], message: "is not a readable PNG or JPEG" });
        return z.NEVER;
      }
      const scale = Math.min(1, limits.maxSize / Math.max(image.width, image.height));
      const fit = (px: number) => Math.max(64, Math.floor((px * scale) / 64) * 64);
      const size = explicitSize(v.size) ?? [fit(image.width), fit(image.height)];
      return openAIRequestOf(v, limits, size, {
        initImage: v.image,
        ...(v.mask ? { mask: v.mask, maskChannel: "alpha" as const } : { maskAll: true }),
        strength: v.strength ?? (v.mask ? 1 : 0.75),
      });
    });
}
