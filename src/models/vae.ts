// AutoencoderKL (SD's VAE) from its diffusers config: decoder (post_quant_conv → conv_in → mid block →
// up blocks → GN+SiLU → conv_out) and encoder (conv_in → down blocks → mid block → GN+SiLU → conv_out →
// quant_conv). Weight names are diffusers'. Activations NHWC.

import type { Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import type { Tensor } from "../gpu/tensor.ts";
import type { VaeConfig } from "./config.ts";
import { Plan, type Weights } from "./graph.ts";
import { linear } from "../ops/linear.ts";
import { conv2d } from "../ops/conv.ts";
import { groupNorm } from "../ops/norm.ts";
import { attention } from "../ops/attention.ts";
import { upsampleNearest2x } from "../ops/layout.ts";

export interface VaeDecodePlan {
  plan: Plan;
  /** [1, h, w, latent_channels] (not divided by the scaling factor) */
  z: Tensor;
  /** [1, 8h, 8w, 3] in about [-1, 1] */
  image: Tensor;
  probes: Map<string, Tensor>;
}

export interface VaeEncodePlan {
  plan: Plan;
  /** [1, H, W, 3] in [-1, 1] */
  image: Tensor;
  /** [1, H/8, W/8, 2·latent_channels]: mean then (unclamped) logvar along channels */
  moments: Tensor;
  probes: Map<string, Tensor>;
}

/** The VAE's GroupNorms use eps 1e-6. */
const VAE_EPS = 1e-6;

export class Vae {
  private readonly decodePlans = new Map<string, VaeDecodePlan>();
  private readonly encodePlans = new Map<string, VaeEncodePlan>();

  constructor(
    readonly gpu: Gpu,
    readonly config: VaeConfig,
    readonly weights: Weights,
    readonly act: ActDType = "f32",
  ) {}

  decodePlan(height: number, width: number, probes = false): VaeDecodePlan {
    const key = `${height}x${width}${probes ? "p" : ""}`;
    let p = this.decodePlans.get(key);
    if (!p) {
      p = new VaeBuilder(this, probes).decoder(height, width);
      this.decodePlans.set(key, p);
    }
    return p;
  }

  encodePlan(height: number, width: number, probes = false): VaeEncodePlan {
    const key = `${height}x${width}${probes ? "p" : ""}`;
    let p = this.encodePlans.get(key);
    if (!p) {
      p = new VaeBuilder(this, probes).encoder(height, width);
      this.encodePlans.set(key, p);
    }
    return p;
  }

  dropPlans(): void {
    for (const p of [...this.decodePlans.values(), ...this.encodePlans.values()]) p.plan.destroy();
    this.decodePlans.clear();
    this.encodePlans.clear();
  }
}

class VaeBuilder {
  readonly plan: Plan;
  readonly probes = new Map<string, Tensor>();
  private readonly keep = new Set<Tensor>();

  constructor(readonly vae: Vae, readonly withProbes: boolean) {
    this.plan = new Plan(vae.gpu, vae.act);
  }

  private get gpu(): Gpu {
    return this.vae.gpu;
  }
  private get act(): ActDType {
    return this.vae.act;
  }
  private get w(): Weights {
    return this.vae.weights;
  }
  private get groups(): number {
    return this.vae.config.norm_num_groups;
  }

  private probe(name: string, t: Tensor): void {
    if (this.withProbes) this.probes.set(name, t);
  }

  private release(...ts: Tensor[]): void {
    const probed = new Set([...this.probes.values()].map((t) => t.buffer));
    this.plan.release(...ts.filter((t) => !this.keep.has(t) && !probed.has(t.buffer)));
  }

  decoder(h: number, w: number): VaeDecodePlan {
    const c = this.vae.config;
    const plan = this.plan;
    const z = plan.tensor([1, h, w, c.latent_channels], "z");
    this.keep.add(z);
    let x = z;
    if (c.use_post_quant_conv) {
      x = this.conv("post_quant_conv", z, c.latent_channels, 1, "same");
      this.probe("post_quant_conv", x);
    }
    const rev = [...c.block_out_channels].reverse();
    x = this.conv("decoder.conv_in", x, rev[0], 1, "same");
    this.probe("decoder.conv_in", x);
    x = this.midBlock("decoder.mid_block", x);
    this.probe("decoder.mid_block", x);
    rev.forEach((ch, i) => {
      for (let j = 0; j < c.layers_per_block + 1; j++) {
        x = this.resnet(`decoder.up_blocks.${i}.resnets.${j}`, x, ch);
      }
      if (i < rev.length - 1) {
        const [, H, W, C] = x.shape;
        const up = plan.tensor([1, 2 * H, 2 * W, C], `decoder.up_blocks.${i}.upsample`);
        plan.add(upsampleNearest2x(this.gpu, { x, out: up, act: this.act }));
        this.release(x);
        x = this.conv(`decoder.up_blocks.${i}.upsamplers.0.conv`, up, C, 1, "same");
        this.release(up);
      }
      this.probe(`decoder.up_blocks.${i}`, x);
    });
    // (The fixtures' conv_norm_out hook is before SiLU, which is fused here, so it is not probed.)
    const n = this.norm("decoder.conv_norm_out", x, true);
    this.release(x);
    const image = this.conv("decoder.conv_out", n, c.out_channels, 1, "same");
    this.probe("decoder.conv_out", image);
    this.release(n);
    return { plan, z, image, probes: this.probes };
  }

  encoder(H: number, W: number): VaeEncodePlan {
    const c = this.vae.config;
    const plan = this.plan;
    const image = plan.tensor([1, H, W, c.in_channels], "image");
    this.keep.add(image);
    let x = this.conv("encoder.conv_in", image, c.block_out_channels[0], 1, "same");
    this.probe("encoder.conv_in", x);
    c.block_out_channels.forEach((ch, i) => {
      for (let j = 0; j < c.layers_per_block; j++) {
        x = this.resnet(`encoder.down_blocks.${i}.resnets.${j}`, x, ch);
      }
      if (i < c.block_out_channels.length - 1) {
        const y = this.conv(`encoder.down_blocks.${i}.downsamplers.0.conv`, x, ch, 2, "vae_down");
        this.release(x);
        x = y;
      }
      this.probe(`encoder.down_blocks.${i}`, x);
    });
    x = this.midBlock("encoder.mid_block", x);
    this.probe("encoder.mid_block", x);
    const n = this.norm("encoder.conv_norm_out", x, true);
    this.release(x);
    let moments = this.conv("encoder.conv_out", n, 2 * c.latent_channels, 1, "same");
    this.probe("encoder.conv_out", moments);
    this.release(n);
    if (c.use_quant_conv) {
      const q = this.conv("quant_conv", moments, 2 * c.latent_channels, 1, "same");
      this.probe("quant_conv", q);
      this.release(moments);
      moments = q;
    }
    return { plan, image, moments, probes: this.probes };
  }

  private conv(
    name: string,
    x: Tensor,
    outC: number,
    stride: 1 | 2,
    padding: "same" | "vae_down",
    residual?: Tensor,
  ) {
    const [B, H, W] = x.shape;
    const [Ho, Wo] = stride === 1
      ? [H, W]
      : padding === "vae_down"
      ? [Math.floor(H / 2), Math.floor(W / 2)]
      : [
        Math.ceil(H / 2),
        Math.ceil(W / 2),
      ];
    const out = this.plan.tensor([B, Ho, Wo, outC], name);
    this.plan.add(conv2d(this.gpu, {
      x,
      weight: this.w.conv(`${name}.weight`),
      bias: this.w.get(`${name}.bias`),
      residual,
      out,
      stride,
      padding,
      act: this.act,
    }));
    return out;
  }

  private norm(name: string, x: Tensor, silu: boolean): Tensor {
    const out = this.plan.tensor(x.shape, name);
    this.plan.add(groupNorm(this.gpu, {
      x,
      gamma: this.w.get(`${name}.weight`),
      beta: this.w.get(`${name}.bias`),
      out,
      groups: this.groups,
      eps: VAE_EPS,
      silu,
      act: this.act,
    }));
    return out;
  }

  /** ResnetBlock2D without time embedding. */
  private resnet(prefix: string, x: Tensor, outC: number): Tensor {
    const inC = x.shape[3];
    const n1 = this.norm(`${prefix}.norm1`, x, true);
    const h1 = this.conv(`${prefix}.conv1`, n1, outC, 1, "same");
    this.release(n1);
    const n2 = this.norm(`${prefix}.norm2`, h1, true);
    this.release(h1);
    const shortcut = inC !== outC ? this.conv(`${prefix}.conv_shortcut`, x, outC, 1, "same") : x;
    const out = this.conv(`${prefix}.conv2`, n2, outC, 1, "same", shortcut);
    this.release(n2, x);
    if (shortcut !== x) this.release(shortcut);
    return out;
  }

  /** resnet → single-head self-attention over all positions (+ residual) → resnet. */
  private midBlock(prefix: string, x: Tensor): Tensor {
    const C = x.shape[3];
    x = this.resnet(`${prefix}.resnets.0`, x, C);
    if (this.vae.config.mid_block_add_attention) x = this.attentionBlock(`${prefix}.attentions.0`, x);
    return this.resnet(`${prefix}.resnets.1`, x, C);
  }

  private attentionBlock(prefix: string, x: Tensor): Tensor {
    const [B, H, W, C] = x.shape;
    const N = H * W;
    const plan = this.plan;
    const n = this.norm(`${prefix}.group_norm`, x, false);
    const tok = (t: Tensor) => t.view([B * N, C]);
    const proj = (name: string, input: Tensor, residual?: Tensor) => {
      const out = plan.tensor([B, N, C], name);
      plan.add(linear(this.gpu, {
        x: tok(input),
        weight: this.w.linear(`${name}.weight`),
        bias: this.w.get(`${name}.bias`),
        residual: residual ? tok(residual) : undefined,
        out: tok(out),
        act: this.act,
      }));
      return out;
    };
    const q = proj(`${prefix}.to_q`, n);
    const k = proj(`${prefix}.to_k`, n);
    const v = proj(`${prefix}.to_v`, n);
    this.release(n);
    const a = plan.tensor([B, N, C], `${prefix}.attn`);
    plan.add(attention(this.gpu, { q, k, v, out: a, heads: 1, headDim: C, act: this.act }));
    this.release(q, k, v);
    const out = proj(`${prefix}.to_out.0`, a, x);
    this.release(a, x);
    return out.view([B, H, W, C]);
  }
}
