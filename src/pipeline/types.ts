// The generation API shared by the server and the CLI: a request, the typed events a run yields, and
// the engine that produces them.

import type { ImageFormat } from "../image/codec.ts";
import type { MaskChannel } from "../image/mask.ts";
import type { SamplerName } from "../schedulers/names.ts";
import type { LoraRequest } from "../models/lora/tags.ts";
import type { PromptWeighting } from "../text/prompt_weights.ts";
import type { ModelDefaults } from "./defaults.ts";

export type { ImageFormat, MaskChannel, ModelDefaults, PromptWeighting, SamplerName };
export { SAMPLER_NAMES } from "../schedulers/names.ts";
export { PROMPT_WEIGHTINGS } from "../text/prompt_weights.ts";

export const PREVIEW_MODES = ["cheap", "vae", "taesd"] as const;
export type PreviewMode = typeof PREVIEW_MODES[number];

/** What decodes the final image: the model's VAE, or TAESD (faster, lower quality: drafts, CPU-only hosts). */
export const DECODERS = ["vae", "taesd"] as const;
export type DecoderName = typeof DECODERS[number];

export interface GenerateRequest {
  prompt: string;
  negativePrompt?: string;
  /** Pixels; multiples of 8. */
  width: number;
  height: number;
  steps: number;
  /** ≤ 1 disables classifier-free guidance (the UNet then runs on the prompt alone). */
  guidanceScale: number;
  /** Default: the model folder's scheduler. */
  sampler?: SamplerName;
  /** Default: a random seed, reported back in the events. */
  seed?: number;
  eta?: number;
  /** img2img: an encoded PNG or JPEG image, and how much of the schedule to run (0..1]; with a mask the
   * default is 1 (diffusers' inpainting default: the masked area starts from pure noise). */
  initImage?: Uint8Array;
  strength?: number;
  /** Inpainting: an encoded PNG or JPEG mask of initImage's aspect ratio, stretched to width × height;
   * white (≥ 128 after resizing) repaints, black keeps. Needs initImage. */
  mask?: Uint8Array;
  /** "alpha": the mask's transparent pixels repaint instead (OpenAI's edits). Default "luminance". */
  maskChannel?: MaskChannel;
  /** Inpainting with a mask that repaints every pixel, instead of `mask` (OpenAI's edits without a mask;
   * the only way an inpainting model edits a whole image). */
  maskAll?: boolean;
  /** Inpainting AUTOMATIC1111's way around this run (a1111_inpaint.ts): `mask` is then A1111's (any size,
   * stretched; alpha where it has transparent pixels, else luminance; `maskChannel` does not apply), and the
   * engine, not its caller, prepares the image and mask and lays each output over the original, so that
   * the server's HTTP thread decodes no pixels. Needs `initImage` and `mask`. */
  a1111Inpaint?: A1111Inpaint;
  /** Emit a preview every K steps (0 or undefined: none). */
  previewEvery?: number;
  /** cheap: fixed 4→3 latent→RGB map, upscaled; vae: full VAE decode; taesd: TAESD decode at half size
   * (needs TAESD weights). Default: taesd when the engine has TAESD weights, else cheap. */
  preview?: PreviewMode;
  previewFormat?: ImageFormat;
  outputFormat?: ImageFormat;
  longPrompt?: "chunk" | "truncate";
  /** LoRAs merged for this run, by name in the LoRA folder, each at its own scale (added to the prompt's
   * `<lora:NAME:SCALE>` tags). */
  loras?: LoraRequest[];
  /** "none" (the default: plain text, as diffusers) or "a1111": (word:1.2), [word], BREAK. */
  promptWeighting?: PromptWeighting;
  /** Images from this one request, run as one UNet batch where memory allows (default 1). */
  numImages?: number;
  /** How a batch draws its noise (default "diffusers"); see SeedMode. */
  seedMode?: SeedMode;
}

/** A1111's mask steps around inpainting (their img2img fields in brackets); left out: no effect. */
export interface A1111Inpaint {
  /** Gaussian σ of the mask's blur along x and y, in the mask's own pixels, 0..64 (`mask_blur_x`,
   * `mask_blur_y`; default 0). */
  blurX?: number;
  blurY?: number;
  /** Round the mask to black and white first, above 128 → white (`mask_round`; default true). */
  round?: boolean;
  /** Repaint where the mask is black (`inpainting_mask_invert`; default false). */
  invert?: boolean;
  /** `inpainting_fill`: 0 paints the area to repaint from its surroundings before encoding; 1 (default)
   * starts from the original; 2 (latent noise) and 3 (latent nothing) need strength 1, where the area
   * starts from pure noise (what both come to at full strength). */
  fill?: 0 | 1 | 2 | 3;
  /** Lay each output over the original through the blurred mask doubled and clipped (A1111's overlay, so
   * kept pixels are the original's exactly and the edge is soft; default true). */
  overlay?: boolean;
}

/**
 * "diffusers": one generator seeded with `seed` makes every random draw of the whole batch, each draw taken
 * at once for all images (the initial latents are one `randn([N, 4, h, w])`), as diffusers'
 * `num_images_per_prompt` does. "per-image": image i has its own generator seeded with `seed + i` and is
 * the image a single-image run with that seed gives (A1111's batches, OpenAI's `n`).
 */
export type SeedMode = "diffusers" | "per-image";
export const SEED_MODES: readonly SeedMode[] = ["diffusers", "per-image"];

export interface GenerationTimings {
  totalMs: number;
  textEncoderMs: number;
  denoiseMs: number;
  vaeMs: number;
  stepsPerSecond: number;
}

// The events a run yields carry the names and fields the server sends on the wire; the server only adds its
// own (queued, error), writes keys in snake_case and base64-encodes the bytes. Events are built with their
// fields in the order listed here, which is the order of the wire's JSON.

export interface StartedEvent {
  type: "started";
  seed: number;
  steps: number;
  width: number;
  height: number;
  /** Only for a batch (more than one image). */
  numImages?: number;
}

/** `step` counts denoising steps finished (1..steps); `etaMs` extrapolates the mean step time so far. */
export interface ProgressEvent {
  type: "progress";
  step: number;
  steps: number;
  elapsedMs: number;
  etaMs: number;
}

/** A partly denoised image after `step` steps (of a batch: its first image). */
export interface PreviewEvent {
  type: "preview";
  step: number;
  mime: string;
  width: number;
  height: number;
  data: Uint8Array;
}

export interface DoneEvent {
  type: "done";
  /** The image; of a batch, the first one (on the wire a batch answer carries `images` instead). */
  image: Uint8Array;
  /** A batch's images in batch order (only when more than one was asked for; `images[0]` is `image`). */
  images?: Uint8Array[];
  /** A batch's seeds, one per image: `seed + i` in "per-image" mode, `seed` repeated in "diffusers" mode. */
  seeds?: number[];
  mime: string;
  seed: number;
  width: number;
  height: number;
  /** A1111-style parameters text (also stored in the PNG's tEXt "parameters" chunk). */
  parameters: string;
  timings: GenerationTimings;
}

export type GenerationEvent = StartedEvent | ProgressEvent | PreviewEvent | DoneEvent;

/** The progress event after `step` of `steps`, `elapsedMs` after the run started (whole milliseconds). */
export function progressEvent(step: number, steps: number, elapsedMs: number): ProgressEvent {
  const perStep = elapsedMs / Math.max(1, step);
  return {
    type: "progress",
    step,
    steps,
    elapsedMs: Math.round(elapsedMs),
    etaMs: Math.round(perStep * Math.max(0, steps - step)),
  };
}

export interface Engine {
  /** The loaded model's name (e.g. the folder name). */
  readonly modelName: string;
  readonly defaultSampler: SamplerName;
  /** The model's defaults for fields a request leaves out (pipeline/defaults.ts); absent: the server's. */
  readonly defaults?: ModelDefaults;
  /** Runs one generation; aborting the signal stops it within a fraction of a step (the iterator then throws
   * an AbortError). */
  generate(request: GenerateRequest, signal?: AbortSignal): AsyncIterable<GenerationEvent>;
  /** Bytes held on the GPU (weights + activations). */
  gpuBytes(): number;
}

/** Thrown for requests the engine cannot run (bad size, unknown sampler…): the server maps it to 400. */
export class RequestError extends Error {
  constructor(readonly field: string, message: string) {
    super(message);
    this.name = "RequestError";
  }
}

/** A generation stopped by its signal between steps. */
export class AbortError extends Error {
  constructor() {
    super("generation cancelled");
    this.name = "AbortError";
  }
}
