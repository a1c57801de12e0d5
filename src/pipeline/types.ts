// The generation API shared by the server and the CLI: a request, the typed events a run yields, and
// the engine that produces them.

import type { ImageFormat } from "../image/codec.ts";
import type { SamplerName } from "../schedulers/names.ts";

export type { ImageFormat, SamplerName };
export { SAMPLER_NAMES } from "../schedulers/names.ts";

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
  /** img2img: an encoded PNG or JPEG image, and how much of the schedule to run (0..1]. */
  initImage?: Uint8Array;
  strength?: number;
  /** Emit a preview every K steps (0 or undefined: none). */
  previewEvery?: number;
  /** cheap: fixed 4→3 latent→RGB map, upscaled; vae: full VAE decode. */
  preview?: "cheap" | "vae";
  previewFormat?: ImageFormat;
  outputFormat?: ImageFormat;
  longPrompt?: "chunk" | "truncate";
}

export interface GenerationTimings {
  totalMs: number;
  textEncoderMs: number;
  denoiseMs: number;
  vaeMs: number;
  stepsPerSecond: number;
}

export type GenerationEvent =
  | { type: "started"; seed: number; steps: number; width: number; height: number }
  | { type: "step"; i: number; n: number; elapsedMs: number }
  | { type: "preview"; i: number; image: Uint8Array; mime: string; width: number; height: number }
  | {
    type: "done";
    image: Uint8Array;
    mime: string;
    seed: number;
    /** A1111-style parameters text (also stored in the PNG's tEXt "parameters" chunk). */
    parameters: string;
    timings: GenerationTimings;
  };

export interface Engine {
  /** The loaded model's name (e.g. the folder name). */
  readonly modelName: string;
  readonly defaultSampler: SamplerName;
  /** Runs one generation; aborting the signal stops it between steps (the iterator then throws AbortError). */
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
