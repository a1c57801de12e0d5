// UNet2DConditionModel (SD 1.x and 2.x) from its diffusers config: its weight declaration and its forward,
// both following diffusers' module tree (`down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k`), so
// the code reads like the checkpoint. Activations are NHWC; one plan per (batch, height, width, context
// length) records every dispatch once, and a call replays it in one command buffer.

import type { Gpu } from "../../gpu/device.ts";
import type { ActDType } from "../../gpu/pipelines.ts";
import type { Tensor } from "../../gpu/tensor.ts";
import { type GraphOptions, ModelBuilder, type Value } from "../builder.ts";
import type { WeightDecl, WeightShapes } from "../declare.ts";
import { compilePlan, type ModelPlan } from "../model_plan.ts";
import { PlanCache, planKey } from "../plan.ts";
import type { Weights } from "../weights.ts";
import { declareResnet, resnet, type ResnetOptions } from "../blocks/resnet.ts";
import { declareTransformer2d, transformer2d, type TransformerShape } from "../blocks/transformer.ts";
import { unetAttentionLevels, type UNetConfig, unetTimeEmbedDim } from "./config.ts";

/** The UNet's tensors in state-dict order (diffusers registers down_blocks, up_blocks, then mid_block). */
export function declareUNet(d: WeightDecl, c: UNetConfig): void {
  const { down, up, mid } = unetAttentionLevels(c);
  const c0 = c.block_out_channels[0];
  const temb = unetTimeEmbedDim(c);
  const transformer = (dd: WeightDecl, s: TransformerShape) =>
    declareTransformer2d(dd, s, c.use_linear_projection);
  d.conv("conv_in", c0, c.in_channels, 3);
  d.linear("time_embedding.linear_1", temb, c0);
  if (c.time_cond_proj_dim !== null) d.linear("time_embedding.cond_proj", c0, c.time_cond_proj_dim, false);
  d.linear("time_embedding.linear_2", temb, temb);
  for (const [i, l] of down.entries()) {
    const block = d.at("down_blocks", i);
    for (let j = 0; l.hasAttention && j < l.layers; j++) transformer(block.at("attentions", j), l);
    for (let j = 0; j < l.layers; j++) {
      declareResnet(block.at("resnets", j), j === 0 ? l.inChannels : l.channels, l.channels, temb);
    }
    if (l.hasDownsampler) block.conv("downsamplers.0.conv", l.channels, l.channels, 3);
  }
  for (const [i, l] of up.entries()) {
    const block = d.at("up_blocks", i);
    for (let j = 0; l.hasAttention && j < l.layers; j++) transformer(block.at("attentions", j), l);
    for (let j = 0; j < l.layers; j++) {
      declareResnet(block.at("resnets", j), l.resnetInChannels[j], l.channels, temb);
    }
    if (l.hasUpsampler) block.conv("upsamplers.0.conv", l.channels, l.channels, 3);
  }
  transformer(d.at("mid_block.attentions.0"), mid);
  declareResnet(d.at("mid_block.resnets.0"), mid.channels, mid.channels, temb);
  declareResnet(d.at("mid_block.resnets.1"), mid.channels, mid.channels, temb);
  d.norm("conv_norm_out", c0);
  d.conv("conv_out", c.out_channels, c0, 3);
}

export interface UNetInputs {
  /** [B, H, W, in_channels], activation dtype */
  sample: Value;
  /** [B] f32 */
  timestep: Value;
  /** [B, T, cross_attention_dim] */
  context: Value;
}

/** The forward: sample, timestep, context → [B, H, W, out_channels]. Probe names are the fixtures' hooks. */
export function unetForward(
  b: ModelBuilder,
  c: UNetConfig,
  { sample, timestep, context }: UNetInputs,
): Value {
  const levels = unetAttentionLevels(c);
  const norm: ResnetOptions = { groups: c.norm_num_groups, eps: c.norm_eps };
  const attend = (bb: ModelBuilder, x: Value, s: TransformerShape) =>
    transformer2d(bb, x, context, {
      groups: c.norm_num_groups,
      heads: s.heads,
      headDim: s.headDim,
      layers: s.transformerLayers,
    });

  // time_proj → time_embedding (linear_1, SiLU, linear_2); every resnet applies SiLU before its
  // time_emb_proj, so it is done once here.
  const proj = b.timestepFeatures(timestep, {
    dim: c.block_out_channels[0],
    flipSinToCos: c.flip_sin_to_cos,
    freqShift: c.freq_shift,
  });
  b.probe("time_proj", proj);
  const temb = b.linear(
    "time_embedding.linear_2",
    b.linear("time_embedding.linear_1", proj, { activation: "silu" }),
  );
  b.probe("time_embedding", temb);
  const tembAct = b.silu(temb, "time_embedding.silu");

  let x = b.conv("conv_in", sample);
  b.probe("conv_in", x);
  const skips: Value[] = [x];
  levels.down.forEach((level, i) => {
    const block = b.at("down_blocks", i);
    for (let j = 0; j < level.layers; j++) {
      x = resnet(block.at("resnets", j), x, norm, tembAct);
      if (level.hasAttention) x = attend(block.at("attentions", j), x, level);
      b.probe(`down_blocks.${i}.res_samples.${j}`, x);
      skips.push(x);
    }
    if (level.hasDownsampler) {
      x = block.conv("downsamplers.0.conv", x, { stride: 2 });
      b.probe(`down_blocks.${i}.res_samples.${level.layers}`, x);
      skips.push(x);
    }
    b.probe(`down_blocks.${i}.hidden_states`, x);
  });

  x = resnet(b.at("mid_block.resnets.0"), x, norm, tembAct);
  x = attend(b.at("mid_block.attentions.0"), x, levels.mid);
  x = resnet(b.at("mid_block.resnets.1"), x, norm, tembAct);
  b.probe("mid_block", x);

  levels.up.forEach((level, i) => {
    const block = b.at("up_blocks", i);
    for (let j = 0; j < level.layers; j++) {
      x = resnet(block.at("resnets", j), block.concat(x, skips.pop()!), norm, tembAct);
      if (level.hasAttention) x = attend(block.at("attentions", j), x, level);
    }
    if (level.hasUpsampler) {
      // To the size of the skip the next block concatenates: ×2, or (a latent that is no multiple of
      // 2^(levels−1), whose stride-2 convs rounded up) the nearest resize diffusers does with upsample_size.
      const next = skips[skips.length - 1];
      const [h, w] = next ? [next.shape[1], next.shape[2]] : [2 * x.shape[1], 2 * x.shape[2]];
      x = block.conv("upsamplers.0.conv", block.upsampleTo(x, h, w));
    }
    b.probe(`up_blocks.${i}`, x);
  });

  x = b.groupNorm("conv_norm_out", x, { groups: c.norm_num_groups, eps: c.norm_eps, silu: true });
  return b.conv("conv_out", x);
}

/** Builds the UNet graph on symbolic inputs (also used, without a GPU, for FLOP counts). */
export function unetGraph(
  c: UNetConfig,
  weights: WeightShapes,
  act: ActDType,
  shape: { batch: number; height: number; width: number; contextTokens: number },
  options: GraphOptions = {},
): { b: ModelBuilder; inputs: UNetInputs; out: Value } {
  const b = ModelBuilder.create(weights, act, options);
  const crossDim = Array.isArray(c.cross_attention_dim) ? c.cross_attention_dim[0] : c.cross_attention_dim;
  const { batch: B, height: H, width: W, contextTokens: T } = shape;
  const inputs: UNetInputs = {
    sample: b.input("sample", [B, H, W, c.in_channels]),
    timestep: b.input("timestep", [B], "f32"),
    context: b.input("context", [B, T, crossDim]),
  };
  return { b, inputs, out: b.output(unetForward(b, c, inputs)) };
}

/** The joint GEMMs' weight groups (ModelBuilder `linearGroups`), the same at every latent size. */
export function unetLinearGroups(c: UNetConfig, weights: WeightShapes): string[][] {
  const m = 2 ** (c.block_out_channels.length - 1);
  const shape = { batch: 1, height: m, width: m, contextTokens: 1 };
  return unetGraph(c, weights, "f32", shape).b.linearGroups();
}

/** Inputs and outputs of one recorded UNet call. Write the inputs, run, read `out`. */
export interface UNetPlan extends ModelPlan {
  sample: Tensor;
  timestep: Tensor;
  context: Tensor;
  out: Tensor;
}

export class UNet {
  private readonly plans = new PlanCache<UNetPlan>();

  constructor(
    readonly gpu: Gpu,
    readonly config: UNetConfig,
    readonly weights: Weights,
    readonly act: ActDType = "f32",
  ) {
    // Weights one GEMM reads together are packed side by side, before a plan or a LoRA packs any of them.
    weights.defineLinearGroups(unetLinearGroups(config, weights));
  }

  /** The recorded call for this shape (built on first use, then reused). */
  plan(batch: number, height: number, width: number, contextTokens: number, probes = false): UNetPlan {
    return this.plans.get(planKey([batch, height, width, contextTokens], probes), () => {
      const shape = { batch, height, width, contextTokens };
      const { b, inputs, out } = unetGraph(this.config, this.weights, this.act, shape, {
        probes,
        maxBindingBytes: this.gpu.maxBinding,
      });
      return compilePlan(b, { ...inputs, out }, this.gpu, this.weights);
    });
  }

  /** Releases the activation buffers of every recorded plan (weights stay). */
  dropPlans(): void {
    this.plans.clear();
  }

  /** Releases one shape's plan, if built. */
  dropPlan(batch: number, height: number, width: number, contextTokens: number): void {
    this.plans.delete(planKey([batch, height, width, contextTokens]));
  }

  /** The activation bytes the plan of this shape holds (built or not; recorded without a GPU). */
  planBytes(batch: number, height: number, width: number, contextTokens: number): number {
    const key = planKey([batch, height, width, contextTokens]);
    let bytes = this.planBytesCache.get(key);
    if (bytes === undefined) {
      const shape = { batch, height, width, contextTokens };
      const options = { maxBindingBytes: this.gpu.maxBinding };
      bytes = unetGraph(this.config, this.weights, this.act, shape, options).b.activationBytes(this.gpu);
      this.planBytesCache.set(key, bytes);
    }
    return bytes;
  }

  private readonly planBytesCache = new Map<string, number>();

  get activationBytes(): number {
    return this.plans.bytes;
  }
}
