// The tensors a component's state dict must hold, computed from its config: diffusers / transformers names,
// shapes, and each tensor's role (for synthetic initialisation). Tensors come in the order PyTorch's
// state_dict() lists them (module registration order), so a list can be compared with a real one as is.

import type { ClipTextConfig } from "./clip/config.ts";
import { unetAttentionLevels, type UNetConfig, type UNetMidLevel, unetTimeEmbedDim } from "./unet/config.ts";
import type { VaeConfig } from "./vae/config.ts";

export type ComponentKind = "unet" | "vae" | "text_encoder";

/** weight: conv/linear weight (init N(0,1)/√fanIn); norm_*: GroupNorm/LayerNorm affine. */
export type ParamRole =
  | "weight"
  | "bias"
  | "norm_weight"
  | "norm_bias"
  | "token_embedding"
  | "position_embedding";

export interface TensorSpec {
  name: string;
  shape: number[];
  role: ParamRole;
  /** Inputs per output element (in × kh × kw for convs, in for linears); 1 for the others. */
  fanIn: number;
}

class SpecList {
  readonly specs: TensorSpec[] = [];

  add(name: string, shape: number[], role: ParamRole, fanIn = 1): void {
    this.specs.push({ name, shape, role, fanIn });
  }

  /** Conv2d [out, in, k, k] (+ bias [out]). */
  conv(prefix: string, out: number, inp: number, k: number, bias = true): void {
    this.add(`${prefix}.weight`, [out, inp, k, k], "weight", inp * k * k);
    if (bias) this.add(`${prefix}.bias`, [out], "bias");
  }

  /** Linear [out, in] (+ bias [out]). */
  linear(prefix: string, out: number, inp: number, bias = true): void {
    this.add(`${prefix}.weight`, [out, inp], "weight", inp);
    if (bias) this.add(`${prefix}.bias`, [out], "bias");
  }

  /** GroupNorm / LayerNorm affine parameters. */
  norm(prefix: string, channels: number): void {
    this.add(`${prefix}.weight`, [channels], "norm_weight");
    this.add(`${prefix}.bias`, [channels], "norm_bias");
  }
}

// ---- UNet2DConditionModel ----

/** ResnetBlock2D; `temb` = time-embedding width, or null for the VAE's resnets (no time_emb_proj). */
function resnet(s: SpecList, p: string, inp: number, out: number, temb: number | null): void {
  s.norm(`${p}.norm1`, inp);
  s.conv(`${p}.conv1`, out, inp, 3);
  if (temb !== null) s.linear(`${p}.time_emb_proj`, out, temb);
  s.norm(`${p}.norm2`, out);
  s.conv(`${p}.conv2`, out, out, 3);
  if (inp !== out) s.conv(`${p}.conv_shortcut`, out, inp, 1);
}

/** Transformer2DModel: GroupNorm, proj_in, BasicTransformerBlocks (self-attn, cross-attn, GEGLU FF), proj_out. */
/** A Transformer2DModel of one UNet level (down, mid or up: each carries these fields). */
function transformer2d(
  s: SpecList,
  p: string,
  level: Pick<UNetMidLevel, "channels" | "heads" | "headDim" | "transformerLayers" | "crossAttentionDim">,
  linearProjection: boolean,
): void {
  const { channels, heads, headDim, transformerLayers: layers, crossAttentionDim: crossDim } = level;
  const inner = heads * headDim;
  s.norm(`${p}.norm`, channels);
  if (linearProjection) s.linear(`${p}.proj_in`, inner, channels);
  else s.conv(`${p}.proj_in`, inner, channels, 1);
  for (let t = 0; t < layers; t++) {
    const b = `${p}.transformer_blocks.${t}`;
    s.norm(`${b}.norm1`, inner);
    s.linear(`${b}.attn1.to_q`, inner, inner, false);
    s.linear(`${b}.attn1.to_k`, inner, inner, false);
    s.linear(`${b}.attn1.to_v`, inner, inner, false);
    s.linear(`${b}.attn1.to_out.0`, inner, inner);
    s.norm(`${b}.norm2`, inner);
    s.linear(`${b}.attn2.to_q`, inner, inner, false);
    s.linear(`${b}.attn2.to_k`, inner, crossDim, false);
    s.linear(`${b}.attn2.to_v`, inner, crossDim, false);
    s.linear(`${b}.attn2.to_out.0`, inner, inner);
    s.norm(`${b}.norm3`, inner);
    s.linear(`${b}.ff.net.0.proj`, inner * 4 * 2, inner); // GEGLU: value and gate halves
    s.linear(`${b}.ff.net.2`, inner, inner * 4);
  }
  if (linearProjection) s.linear(`${p}.proj_out`, channels, inner);
  else s.conv(`${p}.proj_out`, channels, inner, 1);
}

export function unetTensorSpecs(c: UNetConfig): TensorSpec[] {
  const s = new SpecList();
  const { down, up, mid } = unetAttentionLevels(c);
  const c0 = c.block_out_channels[0];
  const temb = unetTimeEmbedDim(c);
  s.conv("conv_in", c0, c.in_channels, 3);
  s.linear("time_embedding.linear_1", temb, c0);
  if (c.time_cond_proj_dim !== null) s.linear("time_embedding.cond_proj", c0, c.time_cond_proj_dim, false);
  s.linear("time_embedding.linear_2", temb, temb);
  for (const [i, l] of down.entries()) {
    const p = `down_blocks.${i}`;
    if (l.hasAttention) {
      for (let j = 0; j < l.layers; j++) {
        transformer2d(s, `${p}.attentions.${j}`, l, c.use_linear_projection);
      }
    }
    for (let j = 0; j < l.layers; j++) {
      resnet(s, `${p}.resnets.${j}`, j === 0 ? l.inChannels : l.channels, l.channels, temb);
    }
    if (l.hasDownsampler) s.conv(`${p}.downsamplers.0.conv`, l.channels, l.channels, 3);
  }
  for (const [i, l] of up.entries()) {
    const p = `up_blocks.${i}`;
    if (l.hasAttention) {
      for (let j = 0; j < l.layers; j++) {
        transformer2d(s, `${p}.attentions.${j}`, l, c.use_linear_projection);
      }
    }
    for (let j = 0; j < l.layers; j++) {
      resnet(s, `${p}.resnets.${j}`, l.resnetInChannels[j], l.channels, temb);
    }
    if (l.hasUpsampler) s.conv(`${p}.upsamplers.0.conv`, l.channels, l.channels, 3);
  }
  transformer2d(s, "mid_block.attentions.0", mid, c.use_linear_projection);
  resnet(s, "mid_block.resnets.0", mid.channels, mid.channels, temb);
  resnet(s, "mid_block.resnets.1", mid.channels, mid.channels, temb);
  s.norm("conv_norm_out", c0);
  s.conv("conv_out", c.out_channels, c0, 3);
  return s.specs;
}

// ---- AutoencoderKL ----

/** The VAE mid-block attention: one head over all positions, Linear q/k/v/out with biases. */
function vaeAttention(s: SpecList, p: string, ch: number): void {
  s.norm(`${p}.group_norm`, ch);
  s.linear(`${p}.to_q`, ch, ch);
  s.linear(`${p}.to_k`, ch, ch);
  s.linear(`${p}.to_v`, ch, ch);
  s.linear(`${p}.to_out.0`, ch, ch);
}

function vaeMid(s: SpecList, p: string, ch: number, attention: boolean): void {
  if (attention) vaeAttention(s, `${p}.attentions.0`, ch);
  resnet(s, `${p}.resnets.0`, ch, ch, null);
  resnet(s, `${p}.resnets.1`, ch, ch, null);
}

export function vaeTensorSpecs(c: VaeConfig): TensorSpec[] {
  const s = new SpecList();
  const ch = c.block_out_channels;
  const n = ch.length;
  const last = ch[n - 1];
  // Encoder
  s.conv("encoder.conv_in", ch[0], c.in_channels, 3);
  for (let i = 0; i < n; i++) {
    const inp = i === 0 ? ch[0] : ch[i - 1];
    for (let j = 0; j < c.layers_per_block; j++) {
      resnet(s, `encoder.down_blocks.${i}.resnets.${j}`, j === 0 ? inp : ch[i], ch[i], null);
    }
    if (i < n - 1) s.conv(`encoder.down_blocks.${i}.downsamplers.0.conv`, ch[i], ch[i], 3);
  }
  vaeMid(s, "encoder.mid_block", last, c.mid_block_add_attention);
  s.norm("encoder.conv_norm_out", last);
  s.conv("encoder.conv_out", 2 * c.latent_channels, last, 3); // mean and logvar
  // Decoder
  s.conv("decoder.conv_in", last, c.latent_channels, 3);
  const rev = [...ch].reverse();
  let prev = rev[0];
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < c.layers_per_block + 1; j++) {
      resnet(s, `decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? prev : rev[i], rev[i], null);
    }
    if (i < n - 1) s.conv(`decoder.up_blocks.${i}.upsamplers.0.conv`, rev[i], rev[i], 3);
    prev = rev[i];
  }
  vaeMid(s, "decoder.mid_block", last, c.mid_block_add_attention);
  s.norm("decoder.conv_norm_out", ch[0]);
  s.conv("decoder.conv_out", c.out_channels, ch[0], 3);
  if (c.use_quant_conv) s.conv("quant_conv", 2 * c.latent_channels, 2 * c.latent_channels, 1);
  if (c.use_post_quant_conv) s.conv("post_quant_conv", c.latent_channels, c.latent_channels, 1);
  return s.specs;
}

// ---- CLIPTextModel ----

export function clipTensorSpecs(c: ClipTextConfig): TensorSpec[] {
  const s = new SpecList();
  const h = c.hidden_size;
  s.add("text_model.embeddings.token_embedding.weight", [c.vocab_size, h], "token_embedding");
  s.add(
    "text_model.embeddings.position_embedding.weight",
    [c.max_position_embeddings, h],
    "position_embedding",
  );
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `text_model.encoder.layers.${l}`;
    s.linear(`${p}.self_attn.k_proj`, h, h);
    s.linear(`${p}.self_attn.v_proj`, h, h);
    s.linear(`${p}.self_attn.q_proj`, h, h);
    s.linear(`${p}.self_attn.out_proj`, h, h);
    s.norm(`${p}.layer_norm1`, h);
    s.linear(`${p}.mlp.fc1`, c.intermediate_size, h);
    s.linear(`${p}.mlp.fc2`, h, c.intermediate_size);
    s.norm(`${p}.layer_norm2`, h);
  }
  s.norm("text_model.final_layer_norm", h);
  if (c.with_projection) s.linear("text_projection", c.projection_dim, h, false);
  return s.specs;
}

export type ComponentConfig = UNetConfig | VaeConfig | ClipTextConfig;

export function tensorSpecs(component: "unet", config: UNetConfig): TensorSpec[];
export function tensorSpecs(component: "vae", config: VaeConfig): TensorSpec[];
export function tensorSpecs(component: "text_encoder", config: ClipTextConfig): TensorSpec[];
export function tensorSpecs(component: ComponentKind, config: ComponentConfig): TensorSpec[];
export function tensorSpecs(component: ComponentKind, config: ComponentConfig): TensorSpec[] {
  switch (component) {
    case "unet":
      return unetTensorSpecs(config as UNetConfig);
    case "vae":
      return vaeTensorSpecs(config as VaeConfig);
    case "text_encoder":
      return clipTensorSpecs(config as ClipTextConfig);
  }
}

/** name → shape, in state-dict order (diffusers / transformers names). */
export function expectedTensors(component: "unet", config: UNetConfig): Map<string, number[]>;
export function expectedTensors(component: "vae", config: VaeConfig): Map<string, number[]>;
export function expectedTensors(component: "text_encoder", config: ClipTextConfig): Map<string, number[]>;
export function expectedTensors(component: ComponentKind, config: ComponentConfig): Map<string, number[]>;
export function expectedTensors(component: ComponentKind, config: ComponentConfig): Map<string, number[]> {
  return new Map(tensorSpecs(component, config).map((t) => [t.name, t.shape]));
}

export function parameterCount(shapes: Iterable<readonly number[]>): number {
  let n = 0;
  for (const s of shapes) n += s.reduce((a, b) => a * b, 1);
  return n;
}

/**
 * Buffers that checkpoints may carry next to the parameters but that are not weights (diffusers names).
 * transformers' CLIP `position_ids` is the only one in SD's components.
 */
export function isIgnorableTensor(component: ComponentKind, name: string): boolean {
  return component === "text_encoder" && name === "text_model.embeddings.position_ids";
}
