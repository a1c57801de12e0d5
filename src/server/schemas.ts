// Request validation (zod) for the native and the OpenAI-compatible endpoints. Each schema turns a body
// into a `GenerateRequest` for the engine; every rejection names the offending field.

import { z } from "zod";
import { type GenerateRequest, PREVIEW_MODES, SAMPLER_NAMES, SEED_MODES } from "../pipeline/types.ts";
import type { RequestDraft } from "./defaults.ts";
import { imageSize, sniffImageMime } from "../image/codec.ts";
import { maskSizeProblem } from "../image/mask.ts";
import { PROMPT_WEIGHTINGS, type PromptWeighting } from "../pipeline/types.ts";
import { type LoraCatalog, loraNameProblem } from "../models/lora/library.ts";
import { splitLoraTags } from "../models/lora/tags.ts";

export interface RequestLimits {
  /** Largest width or height in pixels. */
  maxSize: number;
  /** Smallest width or height in pixels. */
  minSize: number;
  maxSteps: number;
  /** Images per request (OpenAI's `n`, the native `num_images`). */
  maxImages: number;
  maxPromptChars: number;
  /** Width and height when a request names none, overriding the model's default (server/defaults.ts). */
  defaultSize?: number;
  /** Steps when a request names none, overriding the model's default. */
  defaultSteps?: number;
  /** Guidance when a request names none, overriding the model's default. */
  defaultGuidance?: number;
  /** The LoRAs requests may name (the --lora-dir folder); absent: naming one is a 400. */
  loras?: LoraCatalog;
  /** TAESD weights are loaded: preview "taesd" is allowed, and it is the default preview. */
  taesd: boolean;
}

export const DEFAULT_LIMITS: RequestLimits = {
  maxSize: 1024,
  minSize: 8,
  maxSteps: 150,
  maxImages: 4,
  maxPromptChars: 10_000,
  taesd: false,
};

const NO_TAESD =
  "taesd needs TAESD weights, which this server has not loaded (start it with --taesd DIR, or " +
  "put a taesd/ folder in or next to the model folder)";

/** A 400 answer: which field was wrong and why (OpenAI's error shape, so its client reports it). */
export interface FieldError {
  param: string;
  message: string;
}

/** The first zod issue as a FieldError: `steps: must be between 1 and 150`. `input` is what was validated
 * (to tell a missing field from a mistyped one). */
export function fieldErrorFromZod(error: z.core.$ZodError, input?: unknown): FieldError {
  const issue = error.issues[0];
  let param = issue.path.map(String).join(".");
  if (issue.code === "unrecognized_keys") {
    param = [param, issue.keys[0]].filter(Boolean).join(".");
    return { param, message: `${param}: ${issue.message}` };
  }
  if (!param) param = "body";
  let message = issue.message;
  if (issue.code === "invalid_type" && issue.path.length > 0 && lookup(input, issue.path) === undefined) {
    message = "required";
  }
  return { param, message: `${param}: ${message}` };
}

function lookup(value: unknown, path: PropertyKey[]): unknown {
  let v = value;
  for (const key of path) {
    if (v === null || typeof v !== "object" || !Object.hasOwn(v, key)) return undefined;
    v = (v as Record<PropertyKey, unknown>)[key];
  }
  return v;
}

// ---- shared field rules ---------------------------------------------------------------------------

/** JSON numbers, or (for query strings) their text. */
function numberField(fromQuery: boolean): z.ZodType<number> {
  if (!fromQuery) return z.number({ error: (i) => `must be a number, got ${describe(i.input)}` });
  return queryString().refine((v) => NUMBER_TEXT.test(v), {
    error: (i) => `must be a number, got ${describe(i.input)}`,
  }).transform(Number).pipe(z.number({ error: "must be a finite number" }));
}

const NUMBER_TEXT = /^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/;

/** One query-string value (a repeated parameter arrives as an array). */
function queryString(): z.ZodType<string> {
  return z.string({
    error: (i) => Array.isArray(i.input) ? "given more than once" : `must be text, got ${describe(i.input)}`,
  });
}

function intField(fromQuery: boolean, min: number, max: number): z.ZodType<number> {
  return numberField(fromQuery).pipe(
    z.number().refine(Number.isInteger, "must be an integer").refine(
      (v) => v >= min && v <= max,
      `must be between ${min} and ${max}`,
    ),
  );
}

function boolField(): z.ZodType<boolean> {
  return z.boolean({ error: (i) => `must be true or false, got ${describe(i.input)}` });
}

function sizeField(fromQuery: boolean, limits: RequestLimits): z.ZodType<number> {
  return intField(fromQuery, limits.minSize, limits.maxSize).refine(
    (v) => v % 8 === 0,
    "must be a multiple of 8",
  );
}

function textField(max: number, what = "text"): z.ZodType<string> {
  return z.string({ error: (i) => `must be a string, got ${describe(i.input)}` }).max(
    max,
    `${what} is longer than ${max} characters`,
  ).refine((s) => !s.includes("\u0000"), "must not contain NUL characters");
}

const samplerField = z.enum(SAMPLER_NAMES, {
  error: (i) => `unknown sampler ${describe(i.input)}; one of ${SAMPLER_NAMES.join(", ")}`,
});

/** Prompt syntax: "none" (plain text, diffusers) or "a1111" ((word:1.2), [word], BREAK). */
export const promptWeightingField = z.enum(PROMPT_WEIGHTINGS, {
  error: `must be ${PROMPT_WEIGHTINGS.join(" or ")}`,
});

const formatField = z.enum(["png", "jpeg"], {
  error: (i) => `unsupported format ${describe(i.input)}; one of png, jpeg`,
});

/** Base64 (optionally a data: URL) of a PNG or JPEG; decoded to bytes. */
const imageField = z.string({ error: "must be a base64-encoded PNG or JPEG string" }).transform((s, ctx) => {
  const b64 = s.replace(/^data:image\/[a-z+.-]+;base64,/i, "").replace(/\s+/g, "");
  let bytes: Uint8Array;
  try {
    bytes = Uint8Array.fromBase64(b64);
  } catch {
    ctx.addIssue({ code: "custom", message: "is not valid base64" });
    return z.NEVER;
  }
  if (!sniffImageMime(bytes)) {
    ctx.addIssue({ code: "custom", message: "is not a PNG or JPEG image" });
    return z.NEVER;
  }
  return bytes;
});

/** A multipart file part (the route hands it over as bytes): one PNG or JPEG; undefined when absent. */
const fileImageField = (required: boolean) =>
  z.unknown().transform((v, ctx) => {
    if (v === undefined) {
      if (required) ctx.addIssue({ code: "custom", message: "required" });
      return required ? z.NEVER : undefined;
    }
    if (Array.isArray(v)) {
      ctx.addIssue({ code: "custom", message: "only one image is supported" });
      return z.NEVER;
    }
    if (!(v instanceof Uint8Array)) {
      ctx.addIssue({ code: "custom", message: "must be a PNG or JPEG file (a multipart file part)" });
      return z.NEVER;
    }
    if (!sniffImageMime(v)) {
      ctx.addIssue({ code: "custom", message: "is not a PNG or JPEG image" });
      return z.NEVER;
    }
    return v;
  });

/** A mask must fit its image (src/image/mask.ts): sizes from the headers, nothing decoded here. */
function checkMaskSize(image: Uint8Array, mask: Uint8Array, ctx: z.RefinementCtx): void {
  const imageDims = imageSize(image);
  const maskDims = imageSize(mask);
  if (!imageDims) ctx.addIssue({ code: "custom", path: ["image"], message: "is not a readable PNG or JPEG" });
  if (!maskDims) ctx.addIssue({ code: "custom", path: ["mask"], message: "is not a readable PNG or JPEG" });
  const problem = imageDims && maskDims && maskSizeProblem(maskDims, imageDims);
  if (problem) ctx.addIssue({ code: "custom", path: ["mask"], message: problem });
}

/** "true" / "false" from a form. */
function formBoolField(): z.ZodType<boolean> {
  return z.enum(["true", "false"], { error: (i) => `must be true or false, got ${describe(i.input)}` })
    .transform((v) => v === "true");
}

const seedField = (fromQuery: boolean) => intField(fromQuery, -1, Number.MAX_SAFE_INTEGER);

function describe(v: unknown): string {
  if (v === undefined) return "nothing";
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v);
  if (typeof v === "object") return "an object";
  return `${typeof v} ${String(v).slice(0, 40)}`;
}

// ---- LoRAs ----------------------------------------------------------------------------------------

const LORA_SCALE = 10;

/** `loras: [{name, scale}]` (scale default 1). Names are checked against the folder in `checkLoras`. */
const lorasField = z.array(
  z.strictObject({
    name: z.string({ error: "must be a string (a file stem in the LoRA folder)" }),
    scale: numberField(false).pipe(
      z.number().min(-LORA_SCALE, `must be between -${LORA_SCALE} and ${LORA_SCALE}`).max(
        LORA_SCALE,
        `must be between -${LORA_SCALE} and ${LORA_SCALE}`,
      ),
    ).optional(),
  }, { error: (i) => i.code === "invalid_type" ? "must be {name, scale}" : undefined }),
  { error: "must be a list of {name, scale}" },
).max(16, "at most 16 LoRAs");

export interface IssueSink {
  addIssue(issue: { code: "custom"; path: (string | number)[]; message: string }): void;
}

/** Every LoRA a request names (its `loras` and the prompt's <lora:NAME:SCALE> tags) must be a file of the
 * LoRA folder: the HTTP side answers 400 naming it before anything is queued (the worker loads the files). */
export function checkLoras(
  limits: RequestLimits,
  prompt: string,
  loras: readonly { name: string }[] | null | undefined,
  ctx: IssueSink,
): void {
  const problem = (name: string) =>
    loraNameProblem(name) ??
      (!limits.loras
        ? `unknown LoRA ${JSON.stringify(name)}: this server has no LoRA folder (--lora-dir)`
        : !limits.loras.has(name)
        ? `unknown LoRA ${JSON.stringify(name)}; GET /v1/loras lists them`
        : null);
  loras?.forEach((l, i) => {
    const p = problem(l.name);
    if (p) ctx.addIssue({ code: "custom", path: ["loras", i, "name"], message: p });
  });
  let tags;
  try {
    tags = splitLoraTags(prompt).loras;
  } catch (e) {
    ctx.addIssue({ code: "custom", path: ["prompt"], message: (e as Error).message });
    return;
  }
  for (const t of tags) {
    const p = problem(t.name) ??
      (Math.abs(t.scale) > LORA_SCALE ? `LoRA ${t.name}: scale must be between -10 and 10` : null);
    if (p) ctx.addIssue({ code: "custom", path: ["prompt"], message: `${p} (a <lora:…> tag)` });
  }
}

// ---- native endpoint -------------------------------------------------------------------------------

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

// ---- OpenAI Images API -----------------------------------------------------------------------------

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
