// The generation pipeline (diffusers' StableDiffusionPipeline / StableDiffusionImg2ImgPipeline /
// StableDiffusionInpaintPipeline, the last in inpaint.ts) as an async iterator of typed events. One seeded
// torch-compatible generator per run supplies every random draw in diffusers' order, so a seed reproduces
// diffusers' image.

import type { Gpu } from "../gpu/device.ts";
import { readTensor, writeActivation } from "../gpu/tensor.ts";
import type { ClipTextModel } from "../models/clip/clip.ts";
import type { UNet } from "../models/unet/unet.ts";
import type { Vae } from "../models/vae/vae.ts";
import type { Taesd } from "../models/taesd/taesd.ts";
import { nchwToNhwc, nhwcToNchw } from "../util/host_tensor.ts";
import type { TorchGenerator } from "../schedulers/rng.ts";
import { createScheduler } from "../schedulers/index.ts";
import type { SchedulerConfig } from "../schedulers/common.ts";
import type { ClipTokenizer } from "../text/tokenizer.ts";
import type { LoraAdapters } from "../models/lora/adapters.ts";
import { LoraError } from "../models/lora/file.ts";
import { splitLoraTags } from "../models/lora/tags.ts";
import type { PromptWeighting } from "../text/prompt_weights.ts";
import { encodePrompts, type TextContext } from "./text_encoding.ts";
import { a1111Parameters, decodedToRgb, encodeImage, latentPreview, mimeOf } from "../image/convert.ts";
import type { ModelDefaults } from "./defaults.ts";
import { checkInpaintRequest, type UNetKind, unetKind } from "./inpaint.ts";
import { withA1111Inpaint } from "./a1111_inpaint.ts";
import { BatchRandom, DEFAULT_BATCH_BUDGET_BYTES, imagesPerCall, splitBatch } from "./batch.ts";
import { batchStart } from "./start.ts";
import { denoiseOnGpu, type DenoiseOptions, type DenoiseStep } from "./denoise.ts";
import {
  AbortError,
  type DecoderName,
  type Engine,
  type GenerateRequest,
  type GenerationEvent,
  type PreviewEvent,
  progressEvent,
  RequestError,
  SAMPLER_NAMES,
  type SamplerName,
  SEED_MODES,
} from "./types.ts";
import { previewLatentSize, taesdDecode, taesdPreview } from "./taesd.ts";

export interface PipelineParts {
  gpu: Gpu;
  name: string;
  tokenizer: ClipTokenizer;
  textEncoder: ClipTextModel;
  unet: UNet;
  vae: Vae;
  /** TAESD, when its weights were given or found: previews (and the default preview), drafts. */
  taesd?: Taesd;
  /** What decodes the final image (default vae; taesd is faster and lower quality). */
  decoder?: DecoderName;
  schedulerConfig: SchedulerConfig;
  defaultSampler: SamplerName;
  /** The LoRA sets this model can merge (absent: requests naming LoRAs are refused). */
  loras?: LoraAdapters;
  /** Activation budget of one batched UNet evaluation (batch.ts); default DEFAULT_BATCH_BUDGET_BYTES. */
  batchBudgetBytes?: number;
  /** The model's defaults for what a request leaves out (defaults.ts). */
  defaults?: ModelDefaults;
}

export { AbortError };

/** Latent channels × 8 pixels per latent: the UNet needs the latent divisible by 2^(levels-1). */
export function sizeMultiple(unet: UNet): number {
  return 8 * 2 ** (unet.config.block_out_channels.length - 1);
}

export class StableDiffusionPipeline implements Engine {
  readonly modelName: string;
  readonly defaultSampler: SamplerName;
  readonly defaults?: ModelDefaults;
  /** "inpainting" for a 9-channel UNet (every request needs image and mask); throws for other widths. */
  readonly unetKind: UNetKind;

  constructor(readonly parts: PipelineParts) {
    this.modelName = parts.name;
    this.defaultSampler = parts.defaultSampler;
    this.defaults = parts.defaults;
    this.unetKind = unetKind(parts.unet.config.in_channels, parts.vae.config.latent_channels);
  }

  gpuBytes(): number {
    const p = this.parts;
    const taesd = p.taesd ? p.taesd.weights.bytes + p.taesd.activationBytes : 0;
    return p.textEncoder.weights.bytes + p.unet.weights.bytes + p.vae.weights.bytes + p.unet.activationBytes +
      taesd + (p.loras?.bytes ?? 0);
  }

  /** Checks a request before it is queued; throws RequestError naming the field. */
  validate(req: GenerateRequest): void {
    const m = sizeMultiple(this.parts.unet);
    for (const [field, v] of [["width", req.width], ["height", req.height]] as const) {
      if (!Number.isInteger(v) || v <= 0) {
        throw new RequestError(field, `${field} must be a positive integer`);
      }
      if (v % 8) throw new RequestError(field, `${field} ${v} is not a multiple of 8`);
      if (v % m) {
        throw new RequestError(field, `${field} ${v} is not a multiple of ${m}, which this UNet needs`);
      }
    }
    if (!Number.isInteger(req.steps) || req.steps < 1) {
      throw new RequestError("steps", "steps must be an integer ≥ 1");
    }
    if (!Number.isFinite(req.guidanceScale)) {
      throw new RequestError("guidance_scale", "guidance_scale must be a number");
    }
    if (req.sampler !== undefined && !SAMPLER_NAMES.includes(req.sampler)) {
      throw new RequestError(
        "sampler",
        `unknown sampler "${req.sampler}"; one of ${SAMPLER_NAMES.join(", ")}`,
      );
    }
    if (req.preview === "taesd" && !this.parts.taesd) {
      throw new RequestError(
        "preview",
        "preview taesd needs TAESD weights, which this server has not loaded (--taesd DIR, or a taesd/ " +
          "folder in or next to the model folder)",
      );
    }
    const strength = req.strength ?? (req.mask || req.maskAll ? 1 : undefined);
    if (req.initImage && !(strength !== undefined && strength > 0 && strength <= 1)) {
      throw new RequestError("strength", "img2img needs a strength in (0, 1]");
    }
    // img2img runs the last floor(steps × strength) steps (as diffusers does): none is an error.
    if (req.initImage && Math.floor(req.steps * strength!) < 1) {
      throw new RequestError(
        "strength",
        `img2img with strength ${strength} and ${req.steps} steps leaves no denoising step; ` +
          `raise steps to at least ${Math.ceil(1 / strength!)}`,
      );
    }
    const count = req.numImages ?? 1;
    if (!Number.isInteger(count) || count < 1) {
      throw new RequestError("num_images", "num_images must be an integer ≥ 1");
    }
    if (req.seedMode !== undefined && !SEED_MODES.includes(req.seedMode)) {
      throw new RequestError("seed_mode", `seed_mode must be one of ${SEED_MODES.join(", ")}`);
    }
    checkInpaintRequest(req, this.unetKind);
  }

  async *generate(req: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
    this.validate(req);
    // A1111's mask steps, when asked for, around the run, in this (the engine's) thread.
    yield* withA1111Inpaint(req, (r) => this.#run(r, signal));
  }

  /** One validated run (an A1111 request's as a1111_inpaint.ts prepared it). */
  async *#run(req: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
    const { vae } = this.parts;
    const t0 = performance.now();
    const prompt = await this.useLoras(req);
    const seed = req.seed ?? Math.floor(Math.random() * 2 ** 32);
    const count = req.numImages ?? 1;
    const random = new BatchRandom(req.seedMode ?? "diffusers", seed, count);
    const sampler = req.sampler ?? this.defaultSampler;
    const scheduler = createScheduler(sampler, this.parts.schedulerConfig, { eta: req.eta });
    scheduler.setTimesteps(req.steps);
    const h = req.height / 8;
    const w = req.width / 8;
    const shape = [1, vae.config.latent_channels, h, w];
    const n = shape[1] * h * w;
    const cfg = req.guidanceScale > 1;
    const checkAbort = () => {
      if (signal?.aborted) throw new AbortError();
    };
    yield {
      type: "started",
      seed,
      steps: req.steps,
      width: req.width,
      height: req.height,
      ...(count > 1 ? { numImages: count } : {}),
    };

    // Text → embeddings: [B, T, C], unconditional rows first (as diffusers concatenates them).
    const { context, tokens } = await this.encodeText(
      prompt,
      req.negativePrompt ?? "",
      cfg,
      req.longPrompt ?? "chunk",
      req.promptWeighting ?? "none",
    );
    const tText = performance.now();
    checkAbort();

    // Initial latents of every image: txt2img noise, the encoded and noised init image (img2img), or
    // inpainting's start with its per-step additions (inpaint.ts); per-image seeds start each image from its
    // own generator (batch.ts).
    const start = await batchStart(this, this.unetKind, req, scheduler, random);
    const startIndex = start.startIndex;

    // Denoising loop: the whole batch, the UNet evaluated in calls that fit the memory budget.
    const evaluations = scheduler.timesteps.length - startIndex;
    const rowsPerImage = cfg ? 2 : 1;
    const perCall = imagesPerCall(
      count,
      rowsPerImage,
      this.batchBudgetBytes,
      (rows) => this.parts.unet.planBytes(rows, h, w, tokens),
    );
    const tLoop = performance.now();
    // The latents stay on the GPU: read back for a preview (the first image) and once at the end.
    let latents: Float32Array | undefined;
    try {
      const loop = this.denoise({
        context,
        tokens,
        guidanceScale: req.guidanceScale,
        latents: start.latents,
        latentSize: [h, w],
        scheduler,
        startIndex,
        condition: start.condition,
        blend: start.blend,
        noise: () => random.randn(shape),
        imagesPerCall: perCall,
        signal,
      });
      for await (const step of loop) {
        const done = step.index - startIndex + 1;
        yield progressEvent(done, evaluations, performance.now() - t0);
        if (done === evaluations) latents = await step.read();
        if (req.previewEvery && req.previewEvery > 0 && done % req.previewEvery === 0 && done < evaluations) {
          yield await this.preview(await step.read(0, 1), h, w, done, req);
        }
      }
    } finally {
      if (count > 1) this.trimBatchPlans(count, perCall, rowsPerImage, h, w, tokens);
    }
    const tDenoise = performance.now();
    checkAbort();
    if (!latents) throw new Error("denoise: the loop ended before its last evaluation");

    // Decode each image: latents / scaling_factor → VAE → clamp(x/2 + 0.5) → 8-bit; TAESD takes the latents
    // as they are.
    const scaling = vae.config.scaling_factor;
    const format = req.outputFormat ?? "png";
    const images: Uint8Array[] = [];
    const seeds = random.seeds;
    let parameters = "";
    for (let i = 0; i < count; i++) {
      const z = latents.slice(i * n, (i + 1) * n);
      const decoded = this.parts.decoder === "taesd"
        ? await taesdDecode(this.parts.gpu, this.parts.taesd!, z, h, w, signal)
        : await this.vaeDecode(z.map((v) => Math.fround(v / scaling)), h, w, signal);
      const rgb = decodedToRgb(decoded, req.height, req.width);
      const text = a1111Parameters({
        prompt: req.prompt,
        negativePrompt: req.negativePrompt,
        steps: req.steps,
        sampler,
        guidanceScale: req.guidanceScale,
        seed: seeds[i],
        width: req.width,
        height: req.height,
        model: this.modelName,
        strength: req.initImage ? req.strength ?? (req.mask || req.maskAll ? 1 : undefined) : undefined,
      });
      if (i === 0) parameters = text;
      images.push(encodeImage(rgb, format, text));
      checkAbort();
    }
    const tEnd = performance.now();
    yield {
      type: "done",
      image: images[0],
      ...(count > 1 ? { images, seeds } : {}),
      mime: mimeOf(format),
      seed,
      width: req.width,
      height: req.height,
      parameters,
      timings: {
        totalMs: tEnd - t0,
        textEncoderMs: tText - t0,
        denoiseMs: tDenoise - tLoop,
        vaeMs: tEnd - tDenoise,
        stepsPerSecond: evaluations / Math.max(1e-9, (tDenoise - tLoop) / 1000),
      },
    };
  }

  /** Activation budget of one batched UNet evaluation (batch.ts); images beyond it run in more calls. */
  get batchBudgetBytes(): number {
    return this.parts.batchBudgetBytes ?? DEFAULT_BATCH_BUDGET_BYTES;
  }

  /** Plans of several images are kept only while every cached UNet plan fits the batch budget. */
  private trimBatchPlans(
    count: number,
    perCall: number,
    rowsPerImage: number,
    h: number,
    w: number,
    t: number,
  ) {
    const unet = this.parts.unet;
    if (unet.activationBytes <= this.batchBudgetBytes) return;
    for (const k of new Set(splitBatch(count, perCall))) {
      if (k > 1) unet.dropPlan(rowsPerImage * k, h, w, t);
    }
  }

  /**
   * Merges the request's LoRAs (its `loras` and the prompt's `<lora:NAME:SCALE>` tags; none restores the base
   * weights) and returns the prompt without the tags, to be tokenized.
   */
  async useLoras(req: GenerateRequest): Promise<string> {
    try {
      const tagged = splitLoraTags(req.prompt);
      const wanted = [
        ...(req.loras ?? []).map((l) => ({ ...l, field: "loras" as const })),
        ...tagged.loras.map((l) => ({ ...l, field: "prompt" as const })),
      ];
      if (this.parts.loras) await this.parts.loras.use(wanted);
      else if (wanted.length) {
        throw new LoraError("this engine was loaded without LoRA support", wanted[0].field);
      }
      return tagged.prompt;
    } catch (e) {
      if (e instanceof LoraError) throw new RequestError(e.field, e.message);
      throw e;
    }
  }

  /**
   * The denoising loop on given text embeddings (`context` [B, T, C] of one image, unconditional rows first
   * when guidanceScale > 1) from `latents` (NCHW [N, C, h, w], N images), on the GPU (denoise.ts): yields
   * after every scheduler step, with a reader of the latents. Inpainting: `condition` ([N, Cc, h, w]) is
   * appended to each image's scaled latents (a 9-channel UNet), `blend` applied after each step (4-channel).
   */
  async *denoise(o: DenoiseOptions): AsyncGenerator<DenoiseStep> {
    yield* denoiseOnGpu(this.parts.gpu, this.parts.unet, o);
  }

  private async preview(
    latents: Float32Array,
    h: number,
    w: number,
    step: number,
    req: GenerateRequest,
  ): Promise<PreviewEvent> {
    const format = req.previewFormat ?? "jpeg";
    const scaling = this.parts.vae.config.scaling_factor;
    // Without a mode: TAESD when it is loaded, else the cheap map.
    const mode = req.preview ?? (this.parts.taesd ? "taesd" : "cheap");
    const rgb = mode === "vae"
      ? decodedToRgb(await this.vaeDecode(latents.map((v) => Math.fround(v / scaling)), h, w), h * 8, w * 8)
      : mode === "taesd"
      ? await taesdPreview(this.parts.gpu, this.parts.taesd!, latents, h, w)
      : latentPreview(latents, h, w, 4);
    return {
      type: "preview",
      step,
      mime: mimeOf(format),
      width: rgb.width,
      height: rgb.height,
      data: encodeImage(rgb, format),
    };
  }

  /** Builds and runs the TAESD preview plan of an image size once (warm-up; nothing without TAESD). */
  async warmTaesdPreview(width: number, height: number): Promise<void> {
    const { gpu, taesd } = this.parts;
    if (!taesd) return;
    const [ph, pw] = previewLatentSize(height / 8, width / 8);
    await taesdDecode(gpu, taesd, new Float32Array(taesd.config.latent_channels * ph * pw), ph, pw);
  }

  /**
   * Prompt (and negative prompt) → CLIP last hidden states, [B, chunks·77, C] with the negative prompt's
   * rows first (pipeline/text_encoding.ts): long prompts in 75-token chunks ("chunk", A1111) or cut
   * ("truncate", diffusers); prompt weighting "none" (diffusers) or "a1111".
   */
  encodeText(
    prompt: string,
    negative: string,
    cfg: boolean,
    mode: "chunk" | "truncate",
    weighting: PromptWeighting = "none",
  ): Promise<TextContext> {
    return encodePrompts(this.parts, { prompt, negative, cfg, longPrompt: mode, weighting });
  }

  /**
   * NCHW [1, 3, H, W] in [-1, 1] → latents sampled from the VAE posterior, scaled: diffusers'
   * `scaling_factor · latent_dist.sample(generator)` = mean + exp(½·clamp(logvar, −30, 20))·randn, the draw
   * [1, C, H/8, W/8] taken from `generator` after the encode.
   */
  async encodeLatents(
    image: Float32Array,
    height: number,
    width: number,
    generator: TorchGenerator,
  ): Promise<Float32Array> {
    const { vae } = this.parts;
    const moments = await this.vaeEncode(image, height, width);
    const C = vae.config.latent_channels;
    const n = C * (height / 8) * (width / 8);
    const eps = generator.randn([1, C, height / 8, width / 8]);
    const scaling = vae.config.scaling_factor;
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const logvar = Math.min(20, Math.max(-30, moments[n + i]));
      const std = Math.fround(Math.exp(Math.fround(0.5 * logvar)));
      out[i] = Math.fround(scaling * Math.fround(moments[i] + Math.fround(std * eps[i])));
    }
    return out;
  }

  /** The `InpaintHost` latent width (inpaint.ts). */
  get latentChannels(): number {
    return this.parts.vae.config.latent_channels;
  }

  private async vaeEncode(image: Float32Array, height: number, width: number): Promise<Float32Array> {
    const { gpu, vae } = this.parts;
    const p = vae.encodePlan(height, width);
    writeActivation(gpu, p.image, nchwToNhwc({ shape: [1, 3, height, width], data: image }).data);
    p.plan.run("vae encode");
    const m = p.moments;
    return nhwcToNchw({ shape: [...m.shape], data: await readTensor(gpu, m) }).data;
  }

  private async vaeDecode(
    z: Float32Array,
    h: number,
    w: number,
    signal?: AbortSignal,
  ): Promise<Float32Array> {
    const { gpu, vae } = this.parts;
    const p = vae.decodePlan(h, w);
    writeActivation(gpu, p.z, nchwToNhwc({ shape: [1, vae.config.latent_channels, h, w], data: z }).data);
    await p.plan.runCancellable("vae decode", signal);
    return nhwcToNchw({ shape: [...p.image.shape], data: await readTensor(gpu, p.image) }).data;
  }
}
