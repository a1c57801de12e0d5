// The GEMM, conv and attention shapes a text-to-image call runs, recorded by the models' own forwards
// over their declared weight shapes (no GPU): what the autotuner (ops/autotune.ts) times at load
// (pipeline/load.ts, `tune`).

import type { Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import { autotune, type TunedOp, type TuneOptions, type TuneSummary } from "../ops/autotune.ts";
import type { OpShape } from "../ops/tuning.ts";
import { declaredShapes } from "./declare.ts";
import { clipTensorSpecs, unetTensorSpecs, vaeTensorSpecs } from "./expected.ts";
import type { UNetConfig } from "./unet/config.ts";
import type { VaeConfig } from "./vae/config.ts";
import type { ClipTextConfig } from "./clip/config.ts";
import { unetGraph } from "./unet/unet.ts";
import { vaeDecoderGraph } from "./vae/vae.ts";
import { clipGraph } from "./clip/clip.ts";

export interface ImageSize {
  width: number;
  height: number;
}

/**
 * Every op shape of one generation per size, with how often it runs: CLIP over a prompt and a negative
 * prompt (2 × 77 tokens) once, the UNet at batch `batch` (2: classifier-free guidance) once per step, the
 * VAE decode once; activations `act`.
 */
export function generationOpShapes(
  configs: { unet: UNetConfig; vae: VaeConfig; textEncoder: ClipTextConfig },
  act: ActDType,
  sizes: readonly ImageSize[],
  o: { batch?: number; steps?: number } = {},
): TunedOp[] {
  const once = (shape: OpShape) => ({ shape, calls: 1 });
  const clipWeights = declaredShapes(clipTensorSpecs(configs.textEncoder));
  const ops = clipGraph(configs.textEncoder, clipWeights, act, 2, 77).b.opShapes().map(once);
  const unetWeights = declaredShapes(unetTensorSpecs(configs.unet));
  const vaeWeights = declaredShapes(vaeTensorSpecs(configs.vae));
  for (const { width, height } of sizes) {
    const [h, w] = [height / 8, width / 8];
    const shape = { batch: o.batch ?? 2, height: h, width: w, contextTokens: 77 };
    for (const s of unetGraph(configs.unet, unetWeights, act, shape).b.opShapes()) {
      ops.push({ shape: s, calls: o.steps ?? 20 });
    }
    ops.push(...vaeDecoderGraph(configs.vae, vaeWeights, act, h, w).b.opShapes().map(once));
  }
  return ops;
}

/** The size a model is trained at (the UNet's sample_size × 8; 512 when the config has none). */
export function nativeSize(unet: UNetConfig): ImageSize {
  const s = (unet.sample_size ?? 64) * 8;
  return { width: s, height: s };
}

export interface TuneRequest extends TuneOptions {
  /** Sizes whose shapes are tuned (none given: the model's native size). */
  sizes?: readonly ImageSize[];
  /** Tune the native size too (the server warms its default size, the model's own). */
  native?: boolean;
  /** UNet batch (default 2: classifier-free guidance) and steps (its ops' weight; default 20). */
  batch?: number;
  steps?: number;
}

/** Autotunes the kernels of one generation's shapes on `gpu` (see ops/autotune.ts). */
export function tuneGeneration(
  gpu: Gpu,
  configs: { unet: UNetConfig; vae: VaeConfig; textEncoder: ClipTextConfig },
  act: ActDType,
  o: TuneRequest = {},
): Promise<TuneSummary> {
  const sizes = [...(o.sizes ?? [])];
  if (o.native || sizes.length === 0) sizes.unshift(nativeSize(configs.unet));
  return autotune(gpu, generationOpShapes(configs, act, sizes, { batch: o.batch, steps: o.steps }), o);
}
