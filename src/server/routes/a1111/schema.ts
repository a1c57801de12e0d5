// The bodies of POST /sdapi/v1/txt2img and /sdapi/v1/img2img: A1111's request models
// (StableDiffusionTxt2ImgProcessingAPI, StableDiffusionImg2ImgProcessingAPI) field by field, with their
// defaults and pydantic 1's lenient types ("20" is an integer, 20.7 is 20, "yes" is true).
//
// Each field is used, a no-op here (saving to disk, the hires options while enable_hr is off), or ignored:
// an ignored field given a value other than its default, and any field A1111 does not know, adds a warning
// ("ignored field: enable_hr") to the answer's `info`. A value of the wrong type, out of this server's range
// or that this server cannot honour is a 422 in FastAPI's shape listing every problem (errors.ts).

import type { SamplerName } from "../../../schedulers/names.ts";
import { sniffImageMime } from "../../../image/codec.ts";
import { checkLoras, type RequestLimits } from "../../schema_fields.ts";
import { bound, coerce, type FieldType } from "./coerce.ts";
import { issue, type ValidationIssue } from "./errors.ts";
import { resolveSampler } from "./samplers.ts";

export type A1111Kind = "txt2img" | "img2img";

/** used: this server acts on it; noop: nothing to do (no warning); ignored: a warning unless default. */
type Treatment = "used" | "noop" | "ignored";

interface FieldSpec {
  type: FieldType;
  default: unknown;
  use: Treatment;
}

const f = (type: FieldType, dflt: unknown, use: Treatment): FieldSpec => ({ type, default: dflt, use });

const COMMON: Record<string, FieldSpec> = {
  prompt: f("str", "", "used"),
  negative_prompt: f("str", "", "used"),
  styles: f("list", null, "ignored"),
  seed: f("int", -1, "used"),
  subseed: f("int", -1, "used"),
  subseed_strength: f("float", 0, "ignored"),
  seed_resize_from_h: f("int", -1, "ignored"),
  seed_resize_from_w: f("int", -1, "ignored"),
  sampler_name: f("str", null, "used"),
  scheduler: f("str", null, "used"),
  batch_size: f("int", 1, "used"),
  n_iter: f("int", 1, "used"),
  steps: f("int", 50, "used"),
  cfg_scale: f("float", 7, "used"),
  width: f("int", 512, "used"),
  height: f("int", 512, "used"),
  restore_faces: f("bool", null, "ignored"),
  tiling: f("bool", null, "ignored"),
  do_not_save_samples: f("bool", false, "noop"),
  do_not_save_grid: f("bool", false, "noop"),
  eta: f("float", null, "used"),
  s_min_uncond: f("float", null, "ignored"),
  s_churn: f("float", null, "ignored"),
  s_tmax: f("float", null, "ignored"),
  s_tmin: f("float", null, "ignored"),
  s_noise: f("float", null, "ignored"),
  override_settings: f("dict", null, "used"),
  override_settings_restore_afterwards: f("bool", true, "noop"),
  refiner_checkpoint: f("str", null, "ignored"),
  refiner_switch_at: f("float", null, "ignored"),
  disable_extra_networks: f("bool", false, "used"),
  comments: f("dict", null, "noop"),
  force_task_id: f("str", null, "used"),
  sampler_index: f("str", "Euler", "used"),
  script_name: f("str", null, "ignored"),
  script_args: f("list", [], "ignored"),
  send_images: f("bool", true, "used"),
  save_images: f("bool", false, "ignored"),
  alwayson_scripts: f("dict", {}, "ignored"),
  infotext: f("str", null, "ignored"),
};

const TXT2IMG: Record<string, FieldSpec> = {
  ...COMMON,
  // Only the hires fix reads these.
  denoising_strength: f("float", null, "noop"),
  enable_hr: f("bool", false, "ignored"),
  firstphase_width: f("int", 0, "noop"),
  firstphase_height: f("int", 0, "noop"),
  hr_scale: f("float", 2, "noop"),
  hr_upscaler: f("str", null, "noop"),
  hr_second_pass_steps: f("int", 0, "noop"),
  hr_resize_x: f("int", 0, "noop"),
  hr_resize_y: f("int", 0, "noop"),
  hr_checkpoint_name: f("str", null, "noop"),
  hr_sampler_name: f("str", null, "noop"),
  hr_scheduler: f("str", null, "noop"),
  hr_prompt: f("str", "", "noop"),
  hr_negative_prompt: f("str", "", "noop"),
  firstpass_image: f("str", null, "ignored"),
};

const IMG2IMG: Record<string, FieldSpec> = {
  ...COMMON,
  init_images: f("list", null, "used"),
  resize_mode: f("int", 0, "ignored"),
  image_cfg_scale: f("float", null, "ignored"),
  mask: f("str", null, "used"),
  mask_blur_x: f("int", 4, "used"),
  mask_blur_y: f("int", 4, "used"),
  mask_blur: f("int", null, "used"),
  mask_round: f("bool", true, "used"),
  inpainting_fill: f("int", 0, "used"),
  inpaint_full_res: f("bool", true, "used"),
  inpaint_full_res_padding: f("int", 0, "noop"),
  inpainting_mask_invert: f("int", 0, "used"),
  initial_noise_multiplier: f("float", null, "ignored"),
  latent_mask: f("str", null, "ignored"),
  denoising_strength: f("float", 0.75, "used"),
  include_init_images: f("bool", false, "noop"),
};

export const A1111_FIELDS: Record<A1111Kind, Readonly<Record<string, FieldSpec>>> = {
  txt2img: TXT2IMG,
  img2img: IMG2IMG,
};

/** Values an ignored field may take without a warning, besides its default and null. */
const NEUTRAL: Record<string, unknown[]> = { initial_noise_multiplier: [1], subseed_strength: [0] };

/** A validated request: what the routes need, plus every field as A1111 echoes it (`parameters`). */
export interface A1111Request {
  kind: A1111Kind;
  /** Every field of A1111's model: the value given (after coercion) or A1111's default. */
  values: Record<string, unknown>;
  /** The fields the body set (not null). */
  given: ReadonlySet<string>;
  /** For `info.warnings`: fields ignored, approximations made. */
  warnings: string[];
  prompt: string;
  negativePrompt: string;
  /** -1: random (drawn by the route). */
  seed: number;
  subseed: number;
  batchSize: number;
  nIter: number;
  /** Undefined: the model's default (the native API's rule, not A1111's fixed defaults). */
  steps?: number;
  cfgScale?: number;
  width?: number;
  height?: number;
  sampler?: SamplerName;
  eta?: number;
  taskId?: string;
  sendImages: boolean;
  /** img2img: the first init image and the mask, decoded from base64 (PNG or JPEG). */
  initImage?: Uint8Array;
  mask?: Uint8Array;
  denoisingStrength: number;
  maskBlurX: number;
  maskBlurY: number;
  maskRound: boolean;
  inpaintingFill: number;
  maskInvert: boolean;
}

export interface A1111Limits extends RequestLimits {
  /** Jobs that may wait (n_iter is at most this plus one: the iterations are queued at once). */
  maxQueued: number;
}

export interface SchemaContext {
  limits: A1111Limits;
  /** Whether `name` names the loaded checkpoint (override_settings.sd_model_checkpoint); undefined: unknown
   * (no model loaded here), accepted. */
  isLoadedCheckpoint(name: string): boolean | undefined;
}

const MAX_SEED = Number.MAX_SAFE_INTEGER - 1_000_000;

/** Validates a parsed JSON body: the request, or every problem found. */
export function parseA1111(
  kind: A1111Kind,
  body: unknown,
  ctx: SchemaContext,
): { ok: true; request: A1111Request } | { ok: false; issues: ValidationIssue[] } {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    return {
      ok: false,
      issues: [{ loc: ["body"], msg: "value is not a valid dict", type: "type_error.dict" }],
    };
  }
  const fields = A1111_FIELDS[kind];
  const issues: ValidationIssue[] = [];
  const warnings: string[] = [];
  const values: Record<string, unknown> = {};
  const given = new Set<string>();
  for (const [key, raw] of Object.entries(body)) {
    if (!Object.hasOwn(fields, key)) {
      warnings.push(`ignored field: ${printable(key)}`);
      continue;
    }
    if (raw === null || raw === undefined) continue;
    const v = coerce(raw, fields[key].type, [key], issues);
    if (v === undefined) continue;
    values[key] = v;
    given.add(key);
  }
  for (const [key, spec] of Object.entries(fields)) {
    if (!given.has(key)) values[key] = structuredClone(spec.default);
    else if (spec.use === "ignored" && !isNeutral(key, values[key], spec.default)) {
      warnings.push(`ignored field: ${key}`);
    }
  }
  const { limits } = ctx;
  const range = (key: string, min: number, max: number) => {
    const v = values[key];
    if (!given.has(key) || typeof v !== "number") return;
    if (v < min) issues.push(bound(key, ">=", min));
    else if (v > max) issues.push(bound(key, "<=", max));
  };
  range("steps", 1, limits.maxSteps);
  range("width", limits.minSize, limits.maxSize);
  range("height", limits.minSize, limits.maxSize);
  range("batch_size", 1, limits.maxImages);
  range("n_iter", 1, limits.maxQueued + 1);
  range("cfg_scale", 0, 50);
  range("seed", -1, MAX_SEED);
  range("subseed", -1, MAX_SEED);
  range("eta", 0, 1);
  for (const key of ["width", "height"]) {
    const v = values[key] as number;
    if (given.has(key) && v % 8 !== 0 && v >= limits.minSize && v <= limits.maxSize) {
      issues.push(issue([key], "must be a multiple of 8"));
    }
  }
  for (const key of ["prompt", "negative_prompt"]) {
    const text = values[key] as string;
    if (text.length > limits.maxPromptChars) {
      issues.push(issue([key], `ensure this value has at most ${limits.maxPromptChars} characters`));
    } else if (text.includes("\u0000")) issues.push(issue([key], "must not contain NUL characters"));
  }

  // The sampler: sampler_name, else sampler_index when given, else the model's (A1111's default is Euler).
  const fromIndex = !given.has("sampler_name") && given.has("sampler_index");
  const samplerName = given.has("sampler_name")
    ? values.sampler_name as string
    : fromIndex
    ? values.sampler_index as string
    : undefined;
  const scheduler = given.has("scheduler") ? values.scheduler as string : undefined;
  let sampler: SamplerName | undefined;
  if (samplerName !== undefined) {
    const choice = resolveSampler(samplerName, scheduler);
    if (choice.ok) {
      sampler = choice.sampler;
    } else {
      const field = choice.field === "sampler_name" && fromIndex ? "sampler_index" : choice.field;
      issues.push(issue([field], choice.message));
    }
  } else if (scheduler !== undefined) {
    // A schedule for the model's own sampler: only the ones that change nothing.
    const choice = resolveSampler("Euler", scheduler);
    if (!choice.ok) {
      const msg = /karras/i.test(scheduler)
        ? "the Karras schedule needs sampler_name DPM++ 2M"
        : choice.message;
      issues.push(issue(["scheduler"], msg));
    }
  }

  checkOverrides(values.override_settings as Record<string, unknown> | null, ctx, issues, warnings);
  let prompt = values.prompt as string;
  if (values.disable_extra_networks === true) prompt = prompt.replace(/<lora:[^>]*>/gi, "");
  checkLoras(limits, prompt, undefined, {
    addIssue: ({ path, message }) => issues.push(issue(path, message)),
  });

  const request: A1111Request = {
    kind,
    values,
    given,
    warnings,
    prompt,
    negativePrompt: values.negative_prompt as string,
    seed: values.seed as number,
    subseed: values.subseed as number,
    batchSize: values.batch_size as number,
    nIter: values.n_iter as number,
    steps: given.has("steps") ? values.steps as number : undefined,
    cfgScale: given.has("cfg_scale") ? values.cfg_scale as number : undefined,
    width: given.has("width") ? values.width as number : undefined,
    height: given.has("height") ? values.height as number : undefined,
    sampler,
    eta: given.has("eta") ? values.eta as number : undefined,
    taskId: given.has("force_task_id") ? values.force_task_id as string : undefined,
    sendImages: values.send_images as boolean,
    denoisingStrength: 1,
    maskBlurX: 0,
    maskBlurY: 0,
    maskRound: true,
    inpaintingFill: 1,
    maskInvert: false,
  };
  if (kind === "img2img") img2imgFields(request, issues);
  if (warnings.length > MAX_WARNINGS) {
    warnings.splice(MAX_WARNINGS - 1, Infinity, `… and ${warnings.length - MAX_WARNINGS + 1} more warnings`);
  }
  return issues.length ? { ok: false, issues } : { ok: true, request };
}

/** Warnings kept per request (a body of a thousand unknown keys gets a short list). */
const MAX_WARNINGS = 32;

/** A client's key as a warning shows it: plain names as they are, anything else quoted and cut. */
function printable(key: string): string {
  return /^[\w.-]{1,64}$/.test(key) ? key : JSON.stringify(key.slice(0, 64));
}

/** img2img's own fields: the images, the strength, the mask's treatment. */
function img2imgFields(r: A1111Request, issues: ValidationIssue[]): void {
  const { values, given } = r;
  const images = values.init_images as unknown[] | null;
  if (!given.has("init_images")) {
    issues.push({ loc: ["body", "init_images"], msg: "field required", type: "value_error.missing" });
  } else if (images!.length !== 1) {
    const msg = images!.length === 0
      ? "ensure this value has at least 1 items"
      : "only one init image is supported (A1111 cycles several over the batch)";
    issues.push(issue(["init_images"], msg));
  } else {
    r.initImage = imageBytes(images![0], ["init_images", 0], issues);
  }
  if (given.has("mask") && values.mask !== "") r.mask = imageBytes(values.mask, ["mask"], issues);
  const strength = values.denoising_strength as number;
  if (given.has("denoising_strength") && !(strength > 0 && strength <= 1)) {
    issues.push(strength <= 0 ? bound("denoising_strength", ">", 0) : bound("denoising_strength", "<=", 1));
  }
  r.denoisingStrength = strength;
  for (const key of ["mask_blur", "mask_blur_x", "mask_blur_y"]) {
    const v = values[key] as number | null;
    if (given.has(key) && v !== null && (v < 0 || v > 64)) {
      issues.push(bound(key, v < 0 ? ">=" : "<=", v < 0 ? 0 : 64));
    }
  }
  const blur = values.mask_blur as number | null;
  r.maskBlurX = blur ?? values.mask_blur_x as number;
  r.maskBlurY = blur ?? values.mask_blur_y as number;
  r.maskRound = values.mask_round as boolean;
  const fill = values.inpainting_fill as number;
  if (fill < 0 || fill > 3) issues.push(bound("inpainting_fill", fill < 0 ? ">=" : "<=", fill < 0 ? 0 : 3));
  r.inpaintingFill = fill;
  const invert = values.inpainting_mask_invert as number;
  if (invert !== 0 && invert !== 1) issues.push(issue(["inpainting_mask_invert"], "must be 0 or 1"));
  r.maskInvert = invert === 1;
  if (r.mask) {
    if ((fill === 2 || fill === 3) && strength < 1) {
      issues.push(
        issue(
          ["inpainting_fill"],
          `inpainting_fill ${fill} (${fill === 2 ? "latent noise" : "latent nothing"}) needs ` +
            "denoising_strength 1 on this server (the masked area then starts from pure noise)",
        ),
      );
    }
    if (values.inpaint_full_res !== false) {
      r.warnings.push(
        'inpaint_full_res: ignored, the whole picture is inpainted (A1111\'s "Whole picture"); ' +
          "send false to silence this",
      );
    }
  }
}

/** A base64 PNG or JPEG (a data: URL too), as A1111 takes images; URLs are not fetched. */
function imageBytes(
  value: unknown,
  path: (string | number)[],
  issues: ValidationIssue[],
): Uint8Array | undefined {
  if (typeof value !== "string") {
    issues.push({ loc: ["body", ...path], msg: "str type expected", type: "type_error.str" });
    return undefined;
  }
  if (/^https?:\/\//i.test(value)) {
    issues.push(issue(path, "image URLs are not fetched by this server; send the image as base64"));
    return undefined;
  }
  const b64 = value.replace(/^data:image\/[a-z+.-]+;base64,/i, "").replace(/\s+/g, "");
  let bytes: Uint8Array;
  try {
    bytes = Uint8Array.fromBase64(b64);
  } catch {
    issues.push(issue(path, "is not valid base64"));
    return undefined;
  }
  if (!sniffImageMime(bytes)) {
    issues.push(issue(path, "is not a PNG or JPEG image"));
    return undefined;
  }
  return bytes;
}

/** override_settings: a checkpoint other than the loaded one is a 422; other settings are ignored. */
function checkOverrides(
  overrides: Record<string, unknown> | null,
  ctx: SchemaContext,
  issues: ValidationIssue[],
  warnings: string[],
): void {
  for (const [key, value] of Object.entries(overrides ?? {})) {
    if (key === "sd_model_checkpoint" && typeof value === "string") {
      if (ctx.isLoadedCheckpoint(value) === false) {
        issues.push(
          issue(
            ["override_settings", key],
            `model ${JSON.stringify(value)} not found: this server serves only the model it loaded ` +
              "(GET /sdapi/v1/sd-models)",
          ),
        );
      }
    } else if (!(key === "CLIP_stop_at_last_layers" && value === 1)) {
      warnings.push(`ignored field: override_settings.${printable(key)}`);
    }
  }
}

function isNeutral(key: string, value: unknown, dflt: unknown): boolean {
  if (value === null || value === undefined || deepEqual(value, dflt)) return true;
  if ((NEUTRAL[key] ?? []).some((n) => deepEqual(n, value))) return true;
  if (dflt !== null) return false;
  // A field without a default: false, empty text, an empty list or object do nothing either.
  return value === false || value === "" ||
    (Array.isArray(value) && value.length === 0) ||
    (typeof value === "object" && !Array.isArray(value) && Object.keys(value as object).length === 0);
}

function deepEqual(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
