// Loading a whole model (diffusers folder or single-file checkpoint) into a ready pipeline.

import type { Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import {
  assertValid,
  type ComponentSource,
  openModel,
  type OpenModelOptions,
} from "../models/checkpoint/index.ts";
import { isIgnorableTensor } from "../models/expected.ts";
import type { ComponentConfig } from "../models/expected.ts";
import { Weights, type WeightSource } from "../models/weights.ts";
import { ClipTextModel } from "../models/clip/clip.ts";
import { UNet } from "../models/unet/unet.ts";
import { Vae } from "../models/vae/vae.ts";
import { loadTaesd } from "../models/taesd/load.ts";
import { ClipTokenizer } from "../text/tokenizer.ts";
import { bundledClipTokenizer } from "../text/default_tokenizer.ts";
import { LoraAdapters } from "../models/lora/adapters.ts";
import { LoraLibrary } from "../models/lora/library.ts";
import { StableDiffusionPipeline } from "./pipeline.ts";
import { tuneGeneration, type TuneRequest } from "../models/op_shapes.ts";
import type { TuneSummary } from "../ops/autotune.ts";
import type { DecoderName, SamplerName } from "./types.ts";
import { readModelDefaults } from "./defaults.ts";
import type { SchedulerConfig } from "../schedulers/common.ts";

export interface LoadOptions extends OpenModelOptions {
  /** Activation precision; default f16 where shader-f16 works, else f32. */
  precision?: ActDType;
  /** Tokenizer folder overriding the model's (single-file checkpoints otherwise use the bundled one). */
  tokenizerDir?: string;
  /** A TAESD folder (config.json + diffusion_pytorch_model.safetensors) to load beside the model: previews,
   * drafts. Callers resolve it (commands: --taesd, else `findTaesdBeside`); undefined loads none. */
  taesd?: string;
  /** What decodes the final image (default vae); taesd needs `taesd`. */
  decoder?: DecoderName;
  /** Called as weights upload: fraction in [0, 1]. */
  onProgress?: (fraction: number, what: string) => void;
  /**
   * Autotune kernel tiles for this model's shapes once its weights are on the GPU (results cached per
   * adapter; "retune" measures again). Default "off": commands ask for it, tests do not.
   */
  tune?: "auto" | "retune" | "off";
  /** Sizes, budget and cache of the tuning pass; its summary goes to `onTuned`. */
  tuneOptions?: TuneRequest;
  onTuned?: (summary: TuneSummary) => void;
  /** Folder of LoRA .safetensors files that requests name by file stem. */
  loraDir?: string;
  /** LoRA files also named by stem (the CLI's --lora FILE); they shadow the folder's. */
  loraFiles?: string[];
  /** false: LoRA keys that match nothing are skipped with a warning instead of failing the request. */
  loraStrict?: boolean;
  /** Where LoRA warnings go (default console.warn). */
  onWarning?: (message: string) => void;
  /** Activation budget of one batched UNet evaluation (pipeline/batch.ts). */
  batchBudgetBytes?: number;
}

/** diffusers scheduler class → our sampler name (the folder's default sampler). */
const SCHEDULER_CLASSES: Record<string, SamplerName> = {
  PNDMScheduler: "pndm",
  DDIMScheduler: "ddim",
  DDPMScheduler: "ddpm",
  EulerDiscreteScheduler: "euler",
  EulerAncestralDiscreteScheduler: "euler_a",
  HeunDiscreteScheduler: "heun",
  DPMSolverMultistepScheduler: "dpmpp_2m",
  UniPCMultistepScheduler: "unipc",
  LCMScheduler: "lcm",
};

export function defaultSamplerOf(schedulerConfig: Record<string, unknown>): SamplerName {
  const cls = String(schedulerConfig._class_name ?? "PNDMScheduler");
  const name = SCHEDULER_CLASSES[cls] ?? "pndm";
  if (name === "dpmpp_2m" && schedulerConfig.use_karras_sigmas === true) return "dpmpp_2m_karras";
  return name;
}

function sourceOf(c: ComponentSource): WeightSource {
  return {
    names: () => c.names(),
    info: (name) => c.tensor(name),
    uploadF16: (gpu, name) => c.uploadF16(gpu, name),
  };
}

async function loadWeights(
  gpu: Gpu,
  component: ComponentSource<ComponentConfig>,
  onProgress: (done: number, total: number) => void,
): Promise<Weights> {
  assertValid(component);
  return await Weights.load(gpu, component.kind, sourceOf(component), component.expectedTensors(), {
    allowExtra: (n) => isIgnorableTensor(component.kind, n),
    onProgress,
  });
}

export async function loadPipeline(
  gpu: Gpu,
  path: string,
  options: LoadOptions = {},
): Promise<StableDiffusionPipeline> {
  const act: ActDType = options.precision ?? (gpu.f16 ? "f16" : "f32");
  if (act === "f16" && !gpu.f16) throw new Error("f16 precision needs shader-f16, which this adapter lacks");
  if (options.decoder === "taesd" && !options.taesd) {
    throw new Error(
      "--decoder taesd needs TAESD weights (--taesd DIR, or a taesd/ folder in or next to the model)",
    );
  }
  const model = await openModel(path, options);
  try {
    const missing = [
      !model.unet && "unet",
      !model.vae && "vae",
      !model.textEncoder && "text_encoder",
    ].filter(Boolean);
    if (missing.length) throw new Error(`${path}: no ${missing.join(", ")} found`);
    // A folder's own tokenizer; for single files (which ship none) the bundled CLIP tokenizer.
    const tokenizerDir = options.tokenizerDir ?? model.tokenizerDir;
    const tokenizer = tokenizerDir
      ? await ClipTokenizer.load(tokenizerDir)
      : bundledClipTokenizer(model.family ?? "sd1");
    const counts = [model.textEncoder!, model.unet!, model.vae!].map((c) => c.expectedTensors().size);
    const total = counts.reduce((a, b) => a + b, 0);
    let before = 0;
    const progress = (what: string) => (done: number) => options.onProgress?.((before + done) / total, what);
    const teWeights = await loadWeights(gpu, model.textEncoder!, progress("text encoder"));
    before += counts[0];
    const unetWeights = await loadWeights(gpu, model.unet!, progress("unet"));
    before += counts[1];
    const vaeWeights = await loadWeights(gpu, model.vae!, progress("vae"));
    const taesd = options.taesd ? await loadTaesd(gpu, options.taesd, act) : undefined;
    const latentChannels = model.vae!.config.latent_channels;
    if (taesd && taesd.config.latent_channels !== latentChannels) {
      throw new Error(
        `TAESD at ${options.taesd} decodes ${taesd.config.latent_channels}-channel latents; this model's have ` +
          `${latentChannels}`,
      );
    }
    const name = path.replace(/\/+$/, "").split("/").pop() ?? path;
    const defaultSampler = defaultSamplerOf(model.scheduler);
    const defaults = await readModelDefaults(path, {
      sampleSize: model.unet!.config.sample_size ?? undefined,
      vaeLevels: model.vae!.config.block_out_channels.length,
      defaultSampler,
    });
    if (options.tune && options.tune !== "off") {
      options.onProgress?.(1, "autotune");
      const configs = {
        unet: model.unet!.config,
        vae: model.vae!.config,
        textEncoder: model.textEncoder!.config,
      };
      const t = options.tuneOptions ?? {};
      const sizes = [...(t.sizes ?? [])];
      // The model's default size (what serve warms, and requests without a size get), unless sizes are named.
      if (t.native || sizes.length === 0) sizes.unshift({ width: defaults.width, height: defaults.height });
      const summary = await tuneGeneration(gpu, configs, act, {
        ...t,
        sizes,
        native: false,
        batch: t.batch ?? (defaults.guidanceScale > 1 ? 2 : 1),
        steps: t.steps ?? defaults.steps,
        retune: options.tune === "retune" || t.retune,
      });
      options.onTuned?.(summary);
    }
    const textEncoder = new ClipTextModel(gpu, model.textEncoder!.config, teWeights, act);
    const unet = new UNet(gpu, model.unet!.config, unetWeights, act);
    const loras = new LoraAdapters(
      gpu,
      { unet, textEncoder },
      new LoraLibrary(options.loraDir, options.loraFiles),
      { strict: options.loraStrict, warn: options.onWarning },
    );
    return new StableDiffusionPipeline({
      gpu,
      name,
      tokenizer,
      textEncoder,
      unet,
      vae: new Vae(gpu, model.vae!.config, vaeWeights, act),
      loras,
      taesd,
      decoder: options.decoder,
      schedulerConfig: { ...model.scheduler, prediction_type: model.predictionType } as SchedulerConfig,
      defaultSampler: defaults.sampler ?? defaultSampler,
      defaults,
      batchBudgetBytes: options.batchBudgetBytes,
    });
  } finally {
    model.close();
  }
}
