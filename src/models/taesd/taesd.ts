// TAESD (diffusers AutoencoderTiny, madebyollin/taesd): a small convolutional decoder and encoder for SD
// latents, 64 channels and ReLU throughout, no norms and no attention. Both are an `nn.Sequential` named
// `layers`, so weight names are positional (`decoder.layers.12.conv.2.weight`) and so is the code: the
// forward walks the same index as the declaration. Activations NHWC.
//
//   decoder  tanh(z / 3)·3 → conv → ReLU → per level: blocks, ×2 nearest upsample, conv (no bias) …
//            → last level: blocks, conv to RGB → ·2 − 1            [1, h, w, 4] → [1, 8h, 8w, 3] in ≈ [−1, 1]
//   encoder  (x + 1) / 2 → conv → per level: (stride-2 conv, no bias) blocks … → conv to the latents
//                                                                   [1, H, W, 3] → [1, H/8, W/8, 4]
//   block    ReLU(conv.4(ReLU(conv.2(ReLU(conv.0(x))))) + skip(x)), skip = identity for equal widths
//
// Every ReLU and the output's ·2 − 1 are fused into the conv that produces them (ops/conv.ts epilogue), so a
// block is three dispatches. The soft clamp and the encoder's input mapping are one `map` each.

import type { Gpu } from "../../gpu/device.ts";
import type { ActDType } from "../../gpu/pipelines.ts";
import type { Tensor } from "../../gpu/tensor.ts";
import type { GraphOptions, ModelBuilder, Value } from "../builder.ts";
import { declarationOf, type TensorSpec, type WeightDecl, type WeightShapes } from "../declare.ts";
import { compilePlan, type ModelPlan, singleInputGraph } from "../model_plan.ts";
import { PlanCache, planKey } from "../plan.ts";
import type { Weights } from "../weights.ts";
import type { TaesdConfig } from "./config.ts";

/** AutoencoderTinyBlock: three 3×3 convs (`conv.0`, `conv.2`, `conv.4`; ReLUs at 1 and 3) and `skip`. */
function declareBlock(d: WeightDecl, inC: number, outC: number): void {
  d.conv("conv.0", outC, inC, 3);
  d.conv("conv.2", outC, outC, 3);
  d.conv("conv.4", outC, outC, 3);
  if (inC !== outC) d.conv("skip", outC, inC, 1, false);
}

/** ReLU(conv(x) + skip(x)): diffusers' `fuse` ReLU is the last conv's epilogue, after the residual. */
function block(b: ModelBuilder, x: Value): Value {
  let h = b.conv("conv.0", x, { relu: true });
  h = b.conv("conv.2", h, { relu: true });
  const skip = b.has("skip.weight") ? b.conv("skip", x) : x;
  return b.conv("conv.4", h, { residual: skip, relu: true });
}

/** The tensors in state-dict order: encoder.layers.*, then decoder.layers.*. */
export function declareTaesd(d: WeightDecl, c: TaesdConfig): void {
  const enc = d.at("encoder", "layers");
  let i = 0;
  c.num_encoder_blocks.forEach((blocks, level) => {
    const ch = c.encoder_block_out_channels[level];
    if (level === 0) enc.conv(String(i++), ch, c.in_channels, 3);
    else enc.conv(String(i++), ch, ch, 3, false); // stride 2
    for (let k = 0; k < blocks; k++) declareBlock(enc.at(i++), ch, ch);
  });
  enc.conv(String(i), c.latent_channels, c.encoder_block_out_channels.at(-1)!, 3);

  const dec = d.at("decoder", "layers");
  const levels = c.num_decoder_blocks.length;
  dec.conv("0", c.decoder_block_out_channels[0], c.latent_channels, 3);
  i = 2; // layers.1 is the ReLU
  c.num_decoder_blocks.forEach((blocks, level) => {
    const ch = c.decoder_block_out_channels[level];
    const last = level === levels - 1;
    for (let k = 0; k < blocks; k++) declareBlock(dec.at(i++), ch, ch);
    if (!last) i++; // the upsampling
    dec.conv(String(i++), last ? c.out_channels : ch, ch, 3, last);
  });
}

export const taesdTensorSpecs = (c: TaesdConfig): TensorSpec[] => declarationOf(declareTaesd, c);

/**
 * latents [1, h, w, latent_channels] (the UNet's, not scaled) → image [1, 8h, 8w, 3] in about [−1, 1].
 * Probes carry the fixtures' hook names (`decoder.layers.{i}`); layers 0 and 18 are not probed, as their
 * hooks see values before the ReLU / the ·2 − 1 that are fused here.
 */
export function taesdDecoder(b: ModelBuilder, c: TaesdConfig, latents: Value): Value {
  const dec = b.at("decoder", "layers");
  const levels = c.num_decoder_blocks.length;
  let x = b.map("decoder.clamp", latents, { scale: 1 / 3, activation: "tanh", outScale: 3 });
  x = dec.conv("0", x, { relu: true });
  b.probe("decoder.layers.1", x);
  let i = 2;
  for (let level = 0; level < levels; level++) {
    const last = level === levels - 1;
    for (let k = 0; k < c.num_decoder_blocks[level]; k++, i++) {
      x = block(dec.at(i), x);
      b.probe(`decoder.layers.${i}`, x);
    }
    if (!last) {
      x = dec.upsample2x(x);
      b.probe(`decoder.layers.${i++}`, x);
    }
    // The output's x·2 − 1 is the last conv's epilogue: divide by 0.5, shift by −1.
    x = dec.conv(String(i), x, last ? { outputScaleFactor: 0.5, outputShift: -1 } : {});
    if (!last) b.probe(`decoder.layers.${i}`, x);
    i++;
  }
  return x;
}

/** image [1, H, W, 3] in [−1, 1] (H, W multiples of 8) → latents [1, H/8, W/8, latent_channels]. */
export function taesdEncoder(b: ModelBuilder, c: TaesdConfig, image: Value): Value {
  const enc = b.at("encoder", "layers");
  let x = b.map("encoder.to_unit", image, { scale: 0.5, bias: 0.5 });
  let i = 0;
  c.num_encoder_blocks.forEach((blocks, level) => {
    x = enc.conv(String(i), x, level === 0 ? {} : { stride: 2 });
    b.probe(`encoder.layers.${i++}`, x);
    for (let k = 0; k < blocks; k++, i++) {
      x = block(enc.at(i), x);
      b.probe(`encoder.layers.${i}`, x);
    }
  });
  x = enc.conv(String(i), x);
  b.probe(`encoder.layers.${i}`, x);
  return x;
}

export function taesdDecoderGraph(
  c: TaesdConfig,
  weights: WeightShapes,
  act: ActDType,
  h: number,
  w: number,
  options: GraphOptions = {},
) {
  return singleInputGraph(weights, act, options, {
    input: "latents",
    shape: [1, h, w, c.latent_channels],
    output: "image",
    forward: (b, latents) => taesdDecoder(b, c, latents),
  });
}

export function taesdEncoderGraph(
  c: TaesdConfig,
  weights: WeightShapes,
  act: ActDType,
  h: number,
  w: number,
  options: GraphOptions = {},
) {
  return singleInputGraph(weights, act, options, {
    input: "image",
    shape: [1, h, w, c.in_channels],
    output: "latents",
    forward: (b, image) => taesdEncoder(b, c, image),
  });
}

export interface TaesdDecodePlan extends ModelPlan {
  /** [1, h, w, latent_channels], the UNet's latents as they are */
  latents: Tensor;
  /** [1, 8h, 8w, out_channels] in about [−1, 1] */
  image: Tensor;
}

export interface TaesdEncodePlan extends ModelPlan {
  /** [1, H, W, in_channels] in [−1, 1] */
  image: Tensor;
  /** [1, H/8, W/8, latent_channels] */
  latents: Tensor;
}

export class Taesd {
  private readonly decodePlans = new PlanCache<TaesdDecodePlan>();
  private readonly encodePlans = new PlanCache<TaesdEncodePlan>();

  constructor(
    readonly gpu: Gpu,
    readonly config: TaesdConfig,
    readonly weights: Weights,
    readonly act: ActDType = "f32",
  ) {}

  decodePlan(h: number, w: number, probes = false): TaesdDecodePlan {
    return this.decodePlans.get(planKey([h, w], probes), () => {
      const { b, latents, image } = taesdDecoderGraph(this.config, this.weights, this.act, h, w, { probes });
      return compilePlan(b, { latents, image }, this.gpu, this.weights);
    });
  }

  encodePlan(height: number, width: number, probes = false): TaesdEncodePlan {
    return this.encodePlans.get(planKey([height, width], probes), () => {
      const { b, image, latents } = taesdEncoderGraph(this.config, this.weights, this.act, height, width, {
        probes,
      });
      return compilePlan(b, { image, latents }, this.gpu, this.weights);
    });
  }

  /** Activation bytes of the built plans. */
  get activationBytes(): number {
    return this.decodePlans.bytes + this.encodePlans.bytes;
  }

  dropPlans(): void {
    this.decodePlans.clear();
    this.encodePlans.clear();
  }
}
