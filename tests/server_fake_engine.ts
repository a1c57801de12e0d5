// TEST DOUBLE: a fake `Engine` for the server tests. It runs no model: it sleeps a little per "step" and
// paints a deterministic picture (from the seed) with the server's own PNG/JPEG encoder, so every image it
// returns is a real, decodable file of the requested size. It honours the AbortSignal between steps (and
// during its sleeps), like the real engine must.
//
// Special prompts drive the error paths: "[fake:request-error]" throws RequestError("prompt", …) and
// "[fake:crash]" throws a plain Error after the first step. Inpainting follows the real request rules
// (src/pipeline/inpaint.ts; `unetKind: "inpainting"` plays a 9-channel model), the real mask preprocessing
// and A1111's steps around it (src/pipeline/a1111_inpaint.ts): outside the mask the output is the init
// image's pixels, so tests can see what was masked.

import {
  type Engine,
  type GenerateRequest,
  type GenerationEvent,
  type ModelDefaults,
  progressEvent,
  RequestError,
  type SamplerName,
} from "../src/pipeline/types.ts";
import type { EngineLoader, GpuInfo } from "../src/server/engine_host.ts";
import { decodeImage, encodeImage } from "../src/image/codec.ts";
import { preprocessMask } from "../src/image/mask.ts";
import { checkInpaintRequest, type UNetKind } from "../src/pipeline/inpaint.ts";
import { withA1111Inpaint } from "../src/pipeline/a1111_inpaint.ts";

export interface FakeEngineOptions {
  /** Sleep per denoising step. */
  stepDelayMs?: number;
  modelName?: string;
  /** "inpainting": every request needs an image and a mask, as with a 9-channel UNet. */
  unetKind?: UNetKind;
  /** The model's defaults, as a real model reports them (absent: the server's fallback applies). */
  defaults?: ModelDefaults;
}

/** One generate() call as the fake saw it, for assertions (e.g. "stopped within one step"). */
export interface FakeRun {
  request: GenerateRequest;
  stepsDone: number;
  outcome: "running" | "done" | "aborted" | "error";
  startedAt: number;
  endedAt?: number;
}

export class FakeEngine implements Engine {
  readonly modelName: string;
  readonly defaultSampler: SamplerName = "pndm";
  readonly runs: FakeRun[] = [];
  readonly stepDelayMs: number;
  readonly unetKind: UNetKind;
  readonly defaults?: ModelDefaults;

  constructor(options: FakeEngineOptions = {}) {
    this.defaults = options.defaults;
    this.stepDelayMs = options.stepDelayMs ?? 5;
    this.unetKind = options.unetKind ?? "plain";
    this.modelName = options.modelName ?? "fake-sd-test-double";
  }

  gpuBytes(): number {
    return 123_456_789;
  }

  generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
    // A1111's mask steps around the run, as the real pipeline has them: `runs` records the prepared request.
    return withA1111Inpaint(request, (r) => this.#record(r, signal));
  }

  async *#record(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
    const run: FakeRun = { request, stepsDone: 0, outcome: "running", startedAt: performance.now() };
    this.runs.push(run);
    try {
      yield* this.#generate(request, run, signal);
      run.outcome = "done";
    } catch (e) {
      run.outcome = signal?.aborted ? "aborted" : "error";
      throw e;
    } finally {
      run.endedAt = performance.now();
    }
  }

  async *#generate(
    request: GenerateRequest,
    run: FakeRun,
    signal?: AbortSignal,
  ): AsyncGenerator<GenerationEvent> {
    const t0 = performance.now();
    if (request.prompt.includes("[fake:request-error]")) {
      throw new RequestError("prompt", "prompt: the fake engine refuses this prompt");
    }
    checkInpaintRequest(request, this.unetKind);
    let mask: Float32Array | undefined;
    if (request.mask) {
      try {
        mask = preprocessMask(request.mask, request.width, request.height, request.maskChannel);
      } catch (e) {
        throw new RequestError("mask", `mask: cannot be decoded (${(e as Error).message})`);
      }
    }
    let initImage: Uint8Array | undefined;
    if (request.initImage) {
      try {
        const decoded = decodeImage(request.initImage);
        initImage = resizeNearest(decoded.rgba, decoded.width, decoded.height, request.width, request.height);
      } catch (e) {
        throw new RequestError("image", `image: cannot be decoded (${(e as Error).message})`);
      }
    }
    const seed = request.seed ?? Math.floor(Math.random() * 2 ** 32);
    const strength = request.strength ?? (mask || request.maskAll ? 1 : 0.75);
    const steps = request.initImage ? Math.max(1, Math.floor(request.steps * strength)) : request.steps;
    const { width, height } = request;
    const count = request.numImages ?? 1;
    yield { type: "started", seed, steps, width, height, ...(count > 1 ? { numImages: count } : {}) };
    // A batch: image i is painted from seed + i ("per-image", what a single run of that seed paints) or
    // from the seed and its index ("diffusers": one generator for all).
    const perImage = request.seedMode === "per-image";
    const targets = Array.from({ length: count }, (_, i) => {
      const t = perImage || i === 0
        ? paint(width, height, seed + (perImage ? i : 0), request.prompt)
        : paint(width, height, seed, `${request.prompt}#${i}`);
      if (initImage) blendInto(t, initImage, 1 - strength, mask);
      return t;
    });
    const target = targets[0];
    const denoiseStart = performance.now();
    for (let s = 1; s <= steps; s++) {
      await sleep(this.stepDelayMs, signal);
      signal?.throwIfAborted();
      run.stepsDone = s;
      if (s === 1 && request.prompt.includes("[fake:crash]")) {
        throw new Error("fake engine crashed (test double)");
      }
      yield progressEvent(s, steps, performance.now() - denoiseStart);
      if (request.previewEvery && s % request.previewEvery === 0 && s < steps) {
        const preview = noisy(target, seed + s, 1 - s / steps);
        const format = request.previewFormat ?? "jpeg";
        const { bytes, mime } = encodeImage(preview, width, height, format);
        yield { type: "preview", step: s, mime, width, height, data: bytes };
      }
    }
    const denoiseMs = performance.now() - denoiseStart;
    const parameters = `${request.prompt}\n` +
      (request.negativePrompt ? `Negative prompt: ${request.negativePrompt}\n` : "") +
      `Steps: ${steps}, Sampler: ${
        request.sampler ?? this.defaultSampler
      }, CFG scale: ${request.guidanceScale}, ` +
      `Seed: ${seed}, Size: ${width}x${height}, Model: ${this.modelName}`;
    const vaeStart = performance.now();
    const encoded = targets.map((t, i) =>
      encodeImage(t, width, height, request.outputFormat ?? "png", {
        parameters: perImage ? parameters.replace(`Seed: ${seed},`, `Seed: ${seed + i},`) : parameters,
      })
    );
    const { bytes, mime } = encoded[0];
    const vaeMs = performance.now() - vaeStart;
    yield {
      type: "done",
      image: bytes,
      ...(count > 1
        ? {
          images: encoded.map((e) => e.bytes),
          seeds: Array.from({ length: count }, (_, i) => perImage ? seed + i : seed),
        }
        : {}),
      mime,
      seed,
      width,
      height,
      parameters,
      timings: {
        totalMs: performance.now() - t0,
        textEncoderMs: 0,
        denoiseMs,
        vaeMs,
        stepsPerSecond: steps / Math.max(denoiseMs / 1000, 1e-6),
      },
    };
  }
}

/** An EngineLoader for the fake: reports a few progress fractions over `loadDelayMs`. */
export function fakeEngineLoader(options: FakeEngineOptions & { loadDelayMs?: number } = {}): {
  loader: EngineLoader;
  engine: FakeEngine;
} {
  const engine = new FakeEngine(options);
  const loader: EngineLoader = async (onProgress) => {
    const stages = ["text_encoder", "unet", "vae"];
    for (let i = 0; i < stages.length; i++) {
      onProgress({ fraction: i / stages.length, stage: stages[i] });
      await sleep((options.loadDelayMs ?? 0) / stages.length);
    }
    onProgress(1);
    return engine;
  };
  return { loader, engine };
}

export const FAKE_GPU_INFO: GpuInfo = { adapter: "fake adapter (test double)", f16: false };

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function hash(text: string): number {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** A soft sunset-like scene (sky gradient, a sun, hills) whose colours depend on the seed and prompt. */
function paint(width: number, height: number, seed: number, prompt: string): Uint8Array {
  const h = hash(`${seed}:${prompt}`);
  const hue = (h % 360) / 360;
  const sunX = 0.25 + ((h >>> 9) % 50) / 100;
  const out = new Uint8Array(width * height * 3);
  const sky0 = hsl(hue, 0.6, 0.25);
  const sky1 = hsl((hue + 0.1) % 1, 0.7, 0.65);
  const hill = hsl((hue + 0.45) % 1, 0.45, 0.22);
  const sun = hsl((hue + 0.05) % 1, 0.9, 0.8);
  for (let y = 0; y < height; y++) {
    const v = y / Math.max(1, height - 1);
    for (let x = 0; x < width; x++) {
      const u = x / Math.max(1, width - 1);
      let c = mix(sky0, sky1, v);
      const d = Math.hypot(u - sunX, (v - 0.45) * (height / width));
      if (d < 0.12) c = mix(sun, c, Math.min(1, Math.max(0, (d - 0.09) / 0.03)));
      const ridge = 0.68 + 0.06 * Math.sin(u * 9 + (h % 7)) + 0.03 * Math.sin(u * 23 + (h % 11));
      if (v > ridge) c = mix(hill, [0, 0, 0], (v - ridge) * 0.8);
      const o = (y * width + x) * 3;
      out[o] = c[0];
      out[o + 1] = c[1];
      out[o + 2] = c[2];
    }
  }
  return out;
}

/** The target plus `amount` of seeded noise: stands in for a partly denoised preview. */
function noisy(target: Uint8Array, seed: number, amount: number): Uint8Array {
  const out = new Uint8Array(target.length);
  let s = seed >>> 0;
  for (let i = 0; i < target.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const noise = (s >>> 24) - 128;
    out[i] = Math.min(255, Math.max(0, target[i] * (1 - amount) + (128 + noise * 1.5) * amount));
  }
  return out;
}

/** The init image mixed in by `weight`; where a mask says keep (0), the init image itself. */
function blendInto(target: Uint8Array, rgba: Uint8Array, weight: number, mask?: Float32Array): void {
  for (let p = 0; p < target.length / 3; p++) {
    const w = mask && mask[p] === 0 ? 1 : weight;
    for (let k = 0; k < 3; k++) {
      target[p * 3 + k] = target[p * 3 + k] * (1 - w) + rgba[p * 4 + k] * w;
    }
  }
}

function resizeNearest(rgba: Uint8Array, w: number, h: number, ow: number, oh: number): Uint8Array {
  const out = new Uint8Array(ow * oh * 4);
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      const sx = Math.min(w - 1, Math.floor((x * w) / ow));
      const sy = Math.min(h - 1, Math.floor((y * h) / oh));
      out.set(rgba.subarray((sy * w + sx) * 4, (sy * w + sx) * 4 + 4), (y * ow + x) * 4);
    }
  }
  return out;
}

function mix(a: number[], b: number[], t: number): number[] {
  return [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t];
}

function hsl(h: number, s: number, l: number): number[] {
  const f = (n: number) => {
    const k = (n + h * 12) % 12;
    const a = s * Math.min(l, 1 - l);
    return 255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1)));
  };
  return [f(0), f(8), f(4)];
}
