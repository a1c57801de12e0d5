// AutoencoderKL (SD's VAE) from its diffusers config: decoder (post_quant_conv → conv_in → mid block →
// up blocks → GN+SiLU → conv_out) and encoder (conv_in → down blocks → mid block → GN+SiLU → conv_out →
// quant_conv), their weight declaration and forwards. Weight names are diffusers'. Activations NHWC.

import type { Gpu } from "../../gpu/device.ts";
import type { ActDType } from "../../gpu/pipelines.ts";
import type { Tensor } from "../../gpu/tensor.ts";
import type { GraphOptions, ModelBuilder, Value } from "../builder.ts";
import type { WeightDecl, WeightShapes } from "../declare.ts";
import { compilePlan, type ModelPlan, singleInputGraph } from "../model_plan.ts";
import { PlanCache, planKey } from "../plan.ts";
import type { Weights } from "../weights.ts";
import { declareResnet, resnet, type ResnetOptions } from "../blocks/resnet.ts";
import { declareSpatialSelfAttention, spatialSelfAttention } from "../blocks/attention.ts";
import type { VaeConfig } from "./config.ts";

/** The VAE's GroupNorms use eps 1e-6. */
const VAE_EPS = 1e-6;

function declareMidBlock(d: WeightDecl, channels: number, attention: boolean): void {
  if (attention) declareSpatialSelfAttention(d.at("attentions.0"), channels);
  declareResnet(d.at("resnets.0"), channels, channels, null);
  declareResnet(d.at("resnets.1"), channels, channels, null);
}

/** The VAE's tensors in state-dict order: encoder, decoder, quant_conv, post_quant_conv. */
export function declareVae(d: WeightDecl, c: VaeConfig): void {
  const ch = c.block_out_channels;
  const n = ch.length;
  const last = ch[n - 1];
  const enc = d.at("encoder");
  enc.conv("conv_in", ch[0], c.in_channels, 3);
  for (let i = 0; i < n; i++) {
    const block = enc.at("down_blocks", i);
    const inp = i === 0 ? ch[0] : ch[i - 1];
    for (let j = 0; j < c.layers_per_block; j++) {
      declareResnet(block.at("resnets", j), j === 0 ? inp : ch[i], ch[i], null);
    }
    if (i < n - 1) block.conv("downsamplers.0.conv", ch[i], ch[i], 3);
  }
  declareMidBlock(enc.at("mid_block"), last, c.mid_block_add_attention);
  enc.norm("conv_norm_out", last);
  enc.conv("conv_out", 2 * c.latent_channels, last, 3); // mean and logvar
  const dec = d.at("decoder");
  dec.conv("conv_in", last, c.latent_channels, 3);
  const rev = [...ch].reverse();
  let prev = rev[0];
  for (let i = 0; i < n; i++) {
    const block = dec.at("up_blocks", i);
    for (let j = 0; j < c.layers_per_block + 1; j++) {
      declareResnet(block.at("resnets", j), j === 0 ? prev : rev[i], rev[i], null);
    }
    if (i < n - 1) block.conv("upsamplers.0.conv", rev[i], rev[i], 3);
    prev = rev[i];
  }
  declareMidBlock(dec.at("mid_block"), last, c.mid_block_add_attention);
  dec.norm("conv_norm_out", ch[0]);
  dec.conv("conv_out", c.out_channels, ch[0], 3);
  if (c.use_quant_conv) d.conv("quant_conv", 2 * c.latent_channels, 2 * c.latent_channels, 1);
  if (c.use_post_quant_conv) d.conv("post_quant_conv", c.latent_channels, c.latent_channels, 1);
}

/** resnet → single-head self-attention over all positions (+ residual) → resnet. */
function midBlock(b: ModelBuilder, x: Value, c: VaeConfig): Value {
  const norm: ResnetOptions = { groups: c.norm_num_groups, eps: VAE_EPS };
  x = resnet(b.at("resnets.0"), x, norm);
  if (c.mid_block_add_attention) x = spatialSelfAttention(b.at("attentions.0"), x, norm);
  return resnet(b.at("resnets.1"), x, norm);
}

/** z [1, h, w, latent_channels] (not divided by the scaling factor) → image [1, 8h, 8w, 3] in about [-1, 1]. */
export function vaeDecoder(b: ModelBuilder, c: VaeConfig, z: Value): Value {
  const norm: ResnetOptions = { groups: c.norm_num_groups, eps: VAE_EPS };
  let x = z;
  if (c.use_post_quant_conv) {
    x = b.conv("post_quant_conv", z);
    b.probe("post_quant_conv", x);
  }
  const dec = b.at("decoder");
  x = dec.conv("conv_in", x);
  b.probe("decoder.conv_in", x);
  x = midBlock(dec.at("mid_block"), x, c);
  b.probe("decoder.mid_block", x);
  for (let i = 0; i < c.block_out_channels.length; i++) {
    const block = dec.at("up_blocks", i);
    for (let j = 0; j < c.layers_per_block + 1; j++) x = resnet(block.at("resnets", j), x, norm);
    if (i < c.block_out_channels.length - 1) x = block.conv("upsamplers.0.conv", block.upsample2x(x));
    b.probe(`decoder.up_blocks.${i}`, x);
  }
  // (The fixtures' conv_norm_out hook is before SiLU, which is fused here, so it is not probed.)
  x = dec.groupNorm("conv_norm_out", x, { ...norm, silu: true });
  const image = dec.conv("conv_out", x);
  b.probe("decoder.conv_out", image);
  return image;
}

/** image [1, H, W, 3] in [-1, 1] → moments [1, H/8, W/8, 2·latent_channels]: mean, then unclamped logvar. */
export function vaeEncoder(b: ModelBuilder, c: VaeConfig, image: Value): Value {
  const norm: ResnetOptions = { groups: c.norm_num_groups, eps: VAE_EPS };
  const enc = b.at("encoder");
  let x = enc.conv("conv_in", image);
  b.probe("encoder.conv_in", x);
  for (let i = 0; i < c.block_out_channels.length; i++) {
    const block = enc.at("down_blocks", i);
    for (let j = 0; j < c.layers_per_block; j++) x = resnet(block.at("resnets", j), x, norm);
    // diffusers' Downsample2D pads (0, 1, 0, 1) and then runs an unpadded stride-2 conv.
    if (i < c.block_out_channels.length - 1) {
      x = block.conv("downsamplers.0.conv", x, { stride: 2, padding: "vae_down" });
    }
    b.probe(`encoder.down_blocks.${i}`, x);
  }
  x = midBlock(enc.at("mid_block"), x, c);
  b.probe("encoder.mid_block", x);
  x = enc.groupNorm("conv_norm_out", x, { ...norm, silu: true });
  let moments = enc.conv("conv_out", x);
  b.probe("encoder.conv_out", moments);
  if (c.use_quant_conv) {
    moments = b.conv("quant_conv", moments);
    b.probe("quant_conv", moments);
  }
  return moments;
}

export function vaeDecoderGraph(
  c: VaeConfig,
  weights: WeightShapes,
  act: ActDType,
  h: number,
  w: number,
  options: GraphOptions = {},
) {
  return singleInputGraph(weights, act, options, {
    input: "z",
    shape: [1, h, w, c.latent_channels],
    output: "image",
    forward: (b, z) => vaeDecoder(b, c, z),
  });
}

export function vaeEncoderGraph(
  c: VaeConfig,
  weights: WeightShapes,
  act: ActDType,
  h: number,
  w: number,
  options: GraphOptions = {},
) {
  return singleInputGraph(weights, act, options, {
    input: "image",
    shape: [1, h, w, c.in_channels],
    output: "moments",
    forward: (b, image) => vaeEncoder(b, c, image),
  });
}

export interface VaeDecodePlan extends ModelPlan {
  /** [1, h, w, latent_channels] (not divided by the scaling factor) */
  z: Tensor;
  /** [1, 8h, 8w, 3] in about [-1, 1] */
  image: Tensor;
}

export interface VaeEncodePlan extends ModelPlan {
  /** [1, H, W, 3] in [-1, 1] */
  image: Tensor;
  /** [1, H/8, W/8, 2·latent_channels]: mean then (unclamped) logvar along channels */
  moments: Tensor;
}

export class Vae {
  private readonly decodePlans = new PlanCache<VaeDecodePlan>();
  private readonly encodePlans = new PlanCache<VaeEncodePlan>();

  constructor(
    readonly gpu: Gpu,
    readonly config: VaeConfig,
    readonly weights: Weights,
    readonly act: ActDType = "f32",
  ) {
    // The mid-block attentions' q/k/v are packed side by side before any plan packs them.
    const m = 2 ** (config.block_out_channels.length - 1);
    weights.defineLinearGroups([
      ...vaeDecoderGraph(config, weights, "f32", 1, 1).b.linearGroups(),
      ...vaeEncoderGraph(config, weights, "f32", m, m).b.linearGroups(),
    ]);
  }

  decodePlan(height: number, width: number, probes = false): VaeDecodePlan {
    return this.decodePlans.get(planKey([height, width], probes), () => {
      const { b, z, image } = vaeDecoderGraph(this.config, this.weights, this.act, height, width, {
        probes,
        maxBindingBytes: this.gpu.maxBinding,
      });
      return compilePlan(b, { z, image }, this.gpu, this.weights);
    });
  }

  encodePlan(height: number, width: number, probes = false): VaeEncodePlan {
    return this.encodePlans.get(planKey([height, width], probes), () => {
      const { b, image, moments } = vaeEncoderGraph(this.config, this.weights, this.act, height, width, {
        probes,
        maxBindingBytes: this.gpu.maxBinding,
      });
      return compilePlan(b, { image, moments }, this.gpu, this.weights);
    });
  }

  dropPlans(): void {
    this.decodePlans.clear();
    this.encodePlans.clear();
  }
}
