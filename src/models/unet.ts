// UNet2DConditionModel (SD 1.x and 2.x) from its diffusers config. Module and weight names mirror
// diffusers' module tree (`down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight`), so the
// code reads like the checkpoint. Activations are NHWC; one plan per (batch, height, width, context length)
// records every dispatch once, and a call replays it in one command buffer.

import type { Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { unetAttentionLevels, type UNetConfig, unetTimeEmbedDim } from "./config.ts";
import { Plan, type Weights } from "./graph.ts";
import { geglu, linear } from "../ops/linear.ts";
import { conv2d } from "../ops/conv.ts";
import { groupNorm, layerNorm } from "../ops/norm.ts";
import { attention } from "../ops/attention.ts";
import { silu } from "../ops/elementwise.ts";
import { concatChannels, upsampleNearest2x } from "../ops/layout.ts";
import { timestepEmbedding } from "../ops/timestep.ts";

/** Inputs and outputs of one recorded UNet call. Write the inputs, run, read `out`. */
export interface UNetPlan {
  plan: Plan;
  /** [B, H, W, in_channels], activation dtype */
  sample: Tensor;
  /** [B] f32 */
  timestep: Tensor;
  /** [B, T, cross_attention_dim] */
  context: Tensor;
  /** [B, H, W, out_channels] */
  out: Tensor;
  /** Intermediate activations by diffusers hook name (only when built with probes). */
  probes: Map<string, Tensor>;
}

export class UNet {
  private readonly plans = new Map<string, UNetPlan>();

  constructor(
    readonly gpu: Gpu,
    readonly config: UNetConfig,
    readonly weights: Weights,
    readonly act: ActDType = "f32",
  ) {}

  /** The recorded call for this shape (built on first use, then reused). */
  plan(batch: number, height: number, width: number, contextTokens: number, probes = false): UNetPlan {
    const key = `${batch}x${height}x${width}x${contextTokens}${probes ? "p" : ""}`;
    let p = this.plans.get(key);
    if (!p) {
      p = new UNetBuilder(this, batch, height, width, contextTokens, probes).build();
      this.plans.set(key, p);
    }
    return p;
  }

  /** Releases the activation buffers of every recorded plan (weights stay). */
  dropPlans(): void {
    for (const p of this.plans.values()) p.plan.destroy();
    this.plans.clear();
  }

  get activationBytes(): number {
    let total = 0;
    for (const p of this.plans.values()) total += p.plan.bytes;
    return total;
  }
}

class UNetBuilder {
  private readonly plan: Plan;
  private readonly cfg: UNetConfig;
  private readonly w: Weights;
  private readonly probes = new Map<string, Tensor>();
  private readonly keep = new Set<Tensor>();

  constructor(
    readonly unet: UNet,
    readonly batch: number,
    readonly height: number,
    readonly width: number,
    readonly contextTokens: number,
    readonly withProbes: boolean,
  ) {
    this.plan = new Plan(unet.gpu, unet.act);
    this.cfg = unet.config;
    this.w = unet.weights;
  }

  private get gpu(): Gpu {
    return this.unet.gpu;
  }

  private get act(): ActDType {
    return this.unet.act;
  }

  private probe(name: string, t: Tensor): void {
    if (this.withProbes) this.probes.set(name, t);
  }

  /** Recycles buffers, except inputs, skips still to be consumed, and probed activations. */
  private release(...ts: Tensor[]): void {
    const probed = new Set([...this.probes.values()].map((t) => t.buffer));
    this.plan.release(...ts.filter((t) => !this.keep.has(t) && !probed.has(t.buffer)));
  }

  build(): UNetPlan {
    const { batch: B, height: H, width: W, contextTokens: T } = this;
    const c = this.cfg;
    if (H % 2 ** (c.block_out_channels.length - 1) || W % 2 ** (c.block_out_channels.length - 1)) {
      const m = 2 ** (c.block_out_channels.length - 1);
      throw new Error(
        `UNet: latent ${H}×${W} must be a multiple of ${m} (image size a multiple of ${8 * m})`,
      );
    }
    const crossDim = Array.isArray(c.cross_attention_dim) ? c.cross_attention_dim[0] : c.cross_attention_dim;
    const plan = this.plan;
    const sample = plan.tensor([B, H, W, c.in_channels], "sample");
    const timestep = plan.tensorOf([B], "f32", "timestep");
    const context = plan.tensor([B, T, crossDim], "context");
    this.keep.add(sample).add(timestep).add(context);

    const tembAct = this.timeEmbedding(timestep);
    const levels = unetAttentionLevels(c);

    // conv_in
    let x = plan.tensor([B, H, W, c.block_out_channels[0]], "conv_in");
    this.conv("conv_in", sample, x);
    this.probe("conv_in", x);
    const skips: Tensor[] = [x];
    this.keep.add(x);

    let h = H;
    let wd = W;
    levels.down.forEach((level, i) => {
      const prefix = `down_blocks.${i}`;
      for (let j = 0; j < level.layers; j++) {
        x = this.resnet(
          `${prefix}.resnets.${j}`,
          x,
          tembAct,
          j === 0 ? level.inChannels : level.channels,
          level.channels,
        );
        if (level.hasAttention) {
          x = this.transformer(
            `${prefix}.attentions.${j}`,
            x,
            context,
            level.heads,
            level.headDim,
            level.transformerLayers,
          );
        }
        this.probe(`${prefix}.res_samples.${j}`, x);
        skips.push(x);
        this.keep.add(x);
      }
      if (level.hasDownsampler) {
        h = Math.ceil(h / 2);
        wd = Math.ceil(wd / 2);
        const y = this.plan.tensor([B, h, wd, level.channels], `${prefix}.downsamplers.0`);
        this.conv(`${prefix}.downsamplers.0.conv`, x, y, { stride: 2 });
        x = y;
        this.probe(`${prefix}.res_samples.${level.layers}`, x);
        skips.push(x);
        this.keep.add(x);
      }
      this.probe(`${prefix}.hidden_states`, x);
    });

    // mid block: resnet → transformer → resnet
    const mid = levels.mid;
    x = this.resnet("mid_block.resnets.0", x, tembAct, mid.channels, mid.channels);
    x = this.transformer("mid_block.attentions.0", x, context, mid.heads, mid.headDim, mid.transformerLayers);
    x = this.resnet("mid_block.resnets.1", x, tembAct, mid.channels, mid.channels);
    this.probe("mid_block", x);

    levels.up.forEach((level, i) => {
      const prefix = `up_blocks.${i}`;
      for (let j = 0; j < level.layers; j++) {
        const skip = skips.pop()!;
        const inC = x.shape[3] + skip.shape[3];
        const cat = plan.tensor([B, h, wd, inC], `${prefix}.cat.${j}`);
        plan.add(concatChannels(this.gpu, { a: x, b: skip, out: cat, act: this.act }));
        this.keep.delete(skip);
        this.release(x, skip);
        x = this.resnet(`${prefix}.resnets.${j}`, cat, tembAct, inC, level.channels);
        if (level.hasAttention) {
          x = this.transformer(
            `${prefix}.attentions.${j}`,
            x,
            context,
            level.heads,
            level.headDim,
            level.transformerLayers,
          );
        }
      }
      if (level.hasUpsampler) {
        const skipNext = skips[skips.length - 1];
        const nh = skipNext ? skipNext.shape[1] : h * 2;
        const nw = skipNext ? skipNext.shape[2] : wd * 2;
        if (nh !== h * 2 || nw !== wd * 2) {
          throw new Error(`UNet: odd latent sizes are not supported (${H}×${W})`);
        }
        const up = plan.tensor([B, nh, nw, level.channels], `${prefix}.upsample`);
        plan.add(upsampleNearest2x(this.gpu, { x, out: up, act: this.act }));
        this.release(x);
        h = nh;
        wd = nw;
        const y = plan.tensor([B, h, wd, level.channels], `${prefix}.upsamplers.0`);
        this.conv(`${prefix}.upsamplers.0.conv`, up, y);
        this.release(up);
        x = y;
      }
      this.probe(`${prefix}`, x);
    });

    // conv_norm_out → SiLU → conv_out
    const n = plan.tensor(x.shape, "conv_norm_out");
    plan.add(groupNorm(this.gpu, {
      x,
      gamma: this.w.get("conv_norm_out.weight"),
      beta: this.w.get("conv_norm_out.bias"),
      out: n,
      groups: c.norm_num_groups,
      eps: c.norm_eps,
      silu: true,
      act: this.act,
    }));
    this.release(x);
    const out = plan.tensor([B, H, W, c.out_channels], "out");
    this.conv("conv_out", n, out);
    this.release(n);
    return { plan, sample, timestep, context, out, probes: this.probes };
  }

  /** Records the conv `name` (weight `name.weight`, bias `name.bias`) from x into out, "same" padding. */
  private conv(
    name: string,
    x: Tensor,
    out: Tensor,
    o: { stride?: 1 | 2; timeBias?: Tensor; residual?: Tensor } = {},
  ) {
    this.plan.add(conv2d(this.gpu, {
      x,
      weight: this.w.conv(`${name}.weight`),
      bias: this.w.get(`${name}.bias`),
      timeBias: o.timeBias,
      residual: o.residual,
      out,
      stride: o.stride ?? 1,
      padding: "same",
      act: this.act,
    }));
  }

  /** time_proj → time_embedding (linear_1, SiLU, linear_2) → SiLU, shared by every resnet: [B, 4·C0]. */
  private timeEmbedding(timestep: Tensor): Tensor {
    const c = this.cfg;
    const B = this.batch;
    const c0 = c.block_out_channels[0];
    const dim = unetTimeEmbedDim(c);
    const proj = this.plan.tensor([B, c0], "time_proj");
    this.plan.add(timestepEmbedding(this.gpu, {
      timesteps: timestep,
      out: proj,
      flipSinToCos: c.flip_sin_to_cos,
      freqShift: c.freq_shift,
      act: this.act,
    }));
    this.probe("time_proj", proj);
    const hidden = this.plan.tensor([B, dim], "time_embedding.linear_1");
    this.plan.add(linear(this.gpu, {
      x: proj,
      weight: this.w.linear("time_embedding.linear_1.weight"),
      bias: this.w.get("time_embedding.linear_1.bias"),
      out: hidden,
      activation: "silu",
      act: this.act,
    }));
    const temb = this.plan.tensor([B, dim], "time_embedding");
    this.plan.add(linear(this.gpu, {
      x: hidden,
      weight: this.w.linear("time_embedding.linear_2.weight"),
      bias: this.w.get("time_embedding.linear_2.bias"),
      out: temb,
      act: this.act,
    }));
    this.probe("time_embedding", temb);
    // Every ResnetBlock2D applies SiLU to temb before its time_emb_proj: do it once.
    const tembAct = this.plan.tensor([B, dim], "time_embedding.silu");
    this.plan.add(silu(this.gpu, { x: temb, out: tembAct, act: this.act }));
    this.keep.add(tembAct);
    return tembAct;
  }

  /** ResnetBlock2D: GN+SiLU → conv1 (+ time bias) → GN+SiLU → conv2 (+ shortcut). */
  private resnet(prefix: string, x: Tensor, tembAct: Tensor, inC: number, outC: number): Tensor {
    const [B, H, W] = x.shape;
    const c = this.cfg;
    const plan = this.plan;
    const n1 = plan.tensor([B, H, W, inC], `${prefix}.norm1`);
    plan.add(groupNorm(this.gpu, {
      x,
      gamma: this.w.get(`${prefix}.norm1.weight`),
      beta: this.w.get(`${prefix}.norm1.bias`),
      out: n1,
      groups: c.norm_num_groups,
      eps: c.norm_eps,
      silu: true,
      act: this.act,
    }));
    const tproj = plan.tensor([B, outC], `${prefix}.time_emb_proj`);
    plan.add(linear(this.gpu, {
      x: tembAct,
      weight: this.w.linear(`${prefix}.time_emb_proj.weight`),
      bias: this.w.get(`${prefix}.time_emb_proj.bias`),
      out: tproj,
      act: this.act,
    }));
    const h1 = plan.tensor([B, H, W, outC], `${prefix}.conv1`);
    this.conv(`${prefix}.conv1`, n1, h1, { timeBias: tproj });
    this.release(n1, tproj);
    const n2 = plan.tensor([B, H, W, outC], `${prefix}.norm2`);
    plan.add(groupNorm(this.gpu, {
      x: h1,
      gamma: this.w.get(`${prefix}.norm2.weight`),
      beta: this.w.get(`${prefix}.norm2.bias`),
      out: n2,
      groups: c.norm_num_groups,
      eps: c.norm_eps,
      silu: true,
      act: this.act,
    }));
    this.release(h1);
    let shortcut = x;
    if (inC !== outC) {
      shortcut = plan.tensor([B, H, W, outC], `${prefix}.conv_shortcut`);
      this.conv(`${prefix}.conv_shortcut`, x, shortcut);
    }
    const out = plan.tensor([B, H, W, outC], `${prefix}`);
    this.conv(`${prefix}.conv2`, n2, out, { residual: shortcut });
    this.release(n2, x);
    if (shortcut !== x) this.release(shortcut);
    return out;
  }

  /** Transformer2DModel: GN → proj_in → BasicTransformerBlock × n → proj_out (+ input). */
  private transformer(
    prefix: string,
    x: Tensor,
    context: Tensor,
    heads: number,
    headDim: number,
    layers: number,
  ): Tensor {
    const [B, H, W, C] = x.shape;
    const N = H * W;
    const plan = this.plan;
    const tokens = (t: Tensor) => t.view([B * N, C]);
    const n = plan.tensor([B, H, W, C], `${prefix}.norm`);
    plan.add(groupNorm(this.gpu, {
      x,
      gamma: this.w.get(`${prefix}.norm.weight`),
      beta: this.w.get(`${prefix}.norm.bias`),
      out: n,
      groups: this.cfg.norm_num_groups,
      eps: 1e-6,
      silu: false,
      act: this.act,
    }));
    // proj_in is a 1×1 conv [C, C, 1, 1] (SD 1.x) or a Linear [C, C] (SD 2.x): the same GEMM over tokens.
    let hs = plan.tensor([B, N, C], `${prefix}.proj_in`);
    plan.add(linear(this.gpu, {
      x: tokens(n),
      weight: this.w.linear(`${prefix}.proj_in.weight`),
      bias: this.w.get(`${prefix}.proj_in.bias`),
      out: tokens(hs),
      act: this.act,
    }));
    this.release(n);
    for (let l = 0; l < layers; l++) {
      hs = this.transformerBlock(`${prefix}.transformer_blocks.${l}`, hs, context, heads, headDim);
    }
    const out = plan.tensor([B, H, W, C], prefix);
    plan.add(linear(this.gpu, {
      x: hs.view([B * N, C]),
      weight: this.w.linear(`${prefix}.proj_out.weight`),
      bias: this.w.get(`${prefix}.proj_out.bias`),
      residual: tokens(x),
      out: tokens(out),
      act: this.act,
    }));
    this.release(hs, x);
    return out;
  }

  /** BasicTransformerBlock: self-attention, cross-attention, GEGLU feed-forward, each pre-LN + residual. */
  private transformerBlock(
    prefix: string,
    hs: Tensor,
    context: Tensor,
    heads: number,
    headDim: number,
  ): Tensor {
    const [B, N, C] = hs.shape;
    const plan = this.plan;
    const flat = (t: Tensor) => t.view([t.shape[0] * t.shape[1], t.shape[2]]);
    const lin = (x: Tensor, name: string, out: Tensor, bias: boolean, residual?: Tensor) =>
      plan.add(linear(this.gpu, {
        x: flat(x),
        weight: this.w.linear(`${name}.weight`),
        bias: bias ? this.w.get(`${name}.bias`) : undefined,
        residual: residual ? flat(residual) : undefined,
        out: flat(out),
        act: this.act,
      }));
    const norm = (x: Tensor, name: string) => {
      const out = plan.tensor(x.shape, name);
      plan.add(layerNorm(this.gpu, {
        x: flat(x),
        gamma: this.w.get(`${name}.weight`),
        beta: this.w.get(`${name}.bias`),
        out: flat(out),
        eps: 1e-5,
        act: this.act,
      }));
      return out;
    };
    const attend = (name: string, input: Tensor, kv: Tensor, residual: Tensor) => {
      const kvTokens = kv.shape[1];
      const q = plan.tensor([B, N, C], `${name}.q`);
      const k = plan.tensor([B, kvTokens, C], `${name}.k`);
      const v = plan.tensor([B, kvTokens, C], `${name}.v`);
      lin(input, `${name}.to_q`, q, false);
      lin(kv, `${name}.to_k`, k, false);
      lin(kv, `${name}.to_v`, v, false);
      const a = plan.tensor([B, N, C], `${name}.attn`);
      plan.add(attention(this.gpu, { q, k, v, out: a, heads, headDim, act: this.act }));
      this.release(q, k, v);
      const out = plan.tensor([B, N, C], name);
      lin(a, `${name}.to_out.0`, out, true, residual);
      this.release(a);
      return out;
    };
    const n1 = norm(hs, `${prefix}.norm1`);
    const h1 = attend(`${prefix}.attn1`, n1, n1, hs);
    this.release(n1, hs);
    const n2 = norm(h1, `${prefix}.norm2`);
    const h2 = attend(`${prefix}.attn2`, n2, context, h1);
    this.release(n2, h1);
    const n3 = norm(h2, `${prefix}.norm3`);
    const inner = this.w.shape(`${prefix}.ff.net.2.weight`)[1];
    const g = plan.tensor([B, N, inner], `${prefix}.ff.net.0`);
    plan.add(geglu(this.gpu, {
      x: flat(n3),
      weight: this.w.linear(`${prefix}.ff.net.0.proj.weight`),
      bias: this.w.get(`${prefix}.ff.net.0.proj.bias`),
      out: flat(g),
      act: this.act,
    }));
    this.release(n3);
    const out = plan.tensor([B, N, C], prefix);
    lin(g, `${prefix}.ff.net.2`, out, true, h2);
    this.release(g, h2);
    return out;
  }
}
