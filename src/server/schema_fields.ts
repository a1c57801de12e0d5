// The pieces the request schemas share (native_schema.ts, openai_schema.ts, routes/a1111/schema.ts): the
// server's request limits, zod issues as 400 field errors, and the field rules (numbers that may arrive as
// query or form text, sizes, prompts, images, LoRAs). Every rejection names the offending field.

import { z } from "zod";
import { PROMPT_WEIGHTINGS, SAMPLER_NAMES } from "../pipeline/types.ts";
import { imageSize, sniffImageMime } from "../image/codec.ts";
import { maskSizeProblem } from "../image/mask.ts";
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

export const NO_TAESD =
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
export function numberField(fromQuery: boolean): z.ZodType<number> {
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

export function intField(fromQuery: boolean, min: number, max: number): z.ZodType<number> {
  return numberField(fromQuery).pipe(
    z.number().refine(Number.isInteger, "must be an integer").refine(
      (v) => v >= min && v <= max,
      `must be between ${min} and ${max}`,
    ),
  );
}

export function boolField(): z.ZodType<boolean> {
  return z.boolean({ error: (i) => `must be true or false, got ${describe(i.input)}` });
}

export function sizeField(fromQuery: boolean, limits: RequestLimits): z.ZodType<number> {
  return intField(fromQuery, limits.minSize, limits.maxSize).refine(
    (v) => v % 8 === 0,
    "must be a multiple of 8",
  );
}

export function textField(max: number, what = "text"): z.ZodType<string> {
  return z.string({ error: (i) => `must be a string, got ${describe(i.input)}` }).max(
    max,
    `${what} is longer than ${max} characters`,
  ).refine((s) => !s.includes("\u0000"), "must not contain NUL characters");
}

export const samplerField = z.enum(SAMPLER_NAMES, {
  error: (i) => `unknown sampler ${describe(i.input)}; one of ${SAMPLER_NAMES.join(", ")}`,
});

/** Prompt syntax: "none" (plain text, diffusers) or "a1111" ((word:1.2), [word], BREAK). */
export const promptWeightingField = z.enum(PROMPT_WEIGHTINGS, {
  error: `must be ${PROMPT_WEIGHTINGS.join(" or ")}`,
});

export const formatField = z.enum(["png", "jpeg"], {
  error: (i) => `unsupported format ${describe(i.input)}; one of png, jpeg`,
});

/** Base64 (optionally a data: URL) of a PNG or JPEG; decoded to bytes. */
export const imageField = z.string({ error: "must be a base64-encoded PNG or JPEG string" }).transform(
  (s, ctx) => {
    const b64 = s.replace(/^data:image\/[a-z+.-]+;base64,/i, "").replace(/\s+/g, "");
    let bytes: Uint8Array;
    try {
      bytes = Uint8Array.fromBase64(b64);
    } catch {
      return refuse(ctx, "is not valid base64");
    }
    return pngOrJpeg(bytes, ctx);
  },
);

/** A multipart file part (the route hands it over as bytes): one PNG or JPEG; undefined when absent. */
export const fileImageField = (required: boolean) =>
  z.unknown().transform((v, ctx) => {
    if (v === undefined) return required ? refuse(ctx, "required") : undefined;
    if (Array.isArray(v)) return refuse(ctx, "only one image is supported");
    if (!(v instanceof Uint8Array)) return refuse(ctx, "must be a PNG or JPEG file (a multipart file part)");
    return pngOrJpeg(v, ctx);
  });

/** The bytes, when their header says PNG or JPEG. */
function pngOrJpeg(bytes: Uint8Array, ctx: z.RefinementCtx): Uint8Array {
  return sniffImageMime(bytes) ? bytes : refuse(ctx, "is not a PNG or JPEG image");
}

/** Records the issue on the value being transformed, and returns what a failed transform must. */
function refuse(ctx: z.RefinementCtx, message: string): never {
  ctx.addIssue({ code: "custom", message });
  return z.NEVER;
}

/** A mask must fit its image (src/image/mask.ts): sizes from the headers, nothing decoded here. */
export function checkMaskSize(image: Uint8Array, mask: Uint8Array, ctx: z.RefinementCtx): void {
  const imageDims = imageSize(image);
  const maskDims = imageSize(mask);
  if (!imageDims) ctx.addIssue({ code: "custom", path: ["image"], message: "is not a readable PNG or JPEG" });
  if (!maskDims) ctx.addIssue({ code: "custom", path: ["mask"], message: "is not a readable PNG or JPEG" });
  const problem = imageDims && maskDims && maskSizeProblem(maskDims, imageDims);
  if (problem) ctx.addIssue({ code: "custom", path: ["mask"], message: problem });
}

/** "true" / "false" from a form. */
export function formBoolField(): z.ZodType<boolean> {
  return z.enum(["true", "false"], { error: (i) => `must be true or false, got ${describe(i.input)}` })
    .transform((v) => v === "true");
}

export const seedField = (fromQuery: boolean) => intField(fromQuery, -1, Number.MAX_SAFE_INTEGER);

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
export const lorasField = z.array(
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
