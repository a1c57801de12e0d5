// UNet2DConditionModel's config.json, parsed into a typed object (snake_case field names as in the file;
// defaults of diffusers 0.27's constructor), and the per-level structure the model and its weights follow.

import { ConfigError, Reader } from "../config_reader.ts";

// ---------------------------------------------------------------------------------------------------------
// UNet (diffusers.UNet2DConditionModel)

export type DownBlockType = "CrossAttnDownBlock2D" | "DownBlock2D";
export type UpBlockType = "CrossAttnUpBlock2D" | "UpBlock2D";
export type MidBlockType = "UNetMidBlock2DCrossAttn";

export interface UNetConfig {
  sample_size: number | null;
  in_channels: number;
  out_channels: number;
  center_input_sample: boolean;
  flip_sin_to_cos: boolean;
  freq_shift: number;
  down_block_types: DownBlockType[];
  mid_block_type: MidBlockType;
  up_block_types: UpBlockType[];
  only_cross_attention: boolean;
  block_out_channels: number[];
  /** One value for all levels, or one per down level (up levels use the reversed list, +1 resnet each). */
  layers_per_block: number | number[];
  downsample_padding: number;
  mid_block_scale_factor: number;
  act_fn: "silu";
  norm_num_groups: number;
  norm_eps: number;
  cross_attention_dim: number | number[];
  transformer_layers_per_block: number | number[];
  /**
   * diffusers' misnomer: when `num_attention_heads` is null this is the NUMBER OF HEADS per level
   * (SD 1.x: 8 → 320/8 = 40 channels per head; SD 2.x: [5, 10, 20, 20] → 64 channels per head).
   * Use `unetAttentionLevels()` rather than reading it directly.
   */
  attention_head_dim: number | number[];
  /** Head count per level when given (diffusers: `num_attention_heads or attention_head_dim`). */
  num_attention_heads: number | number[] | null;
  dual_cross_attention: boolean;
  use_linear_projection: boolean;
  upcast_attention: boolean;
  /** Width of the time embedding MLP; null → 4 × block_out_channels[0]. */
  time_embedding_dim: number | null;
  /** LCM-distilled UNets: guidance-scale embedding input width (adds time_embedding.cond_proj). */
  time_cond_proj_dim: number | null;
  class_embed_type: null;
  addition_embed_type: null;
  resnet_time_scale_shift: "default";
  time_embedding_type: "positional";
  conv_in_kernel: 3;
  conv_out_kernel: 3;
}

const UNET_DEFAULTS: UNetConfig = {
  sample_size: null,
  in_channels: 4,
  out_channels: 4,
  center_input_sample: false,
  flip_sin_to_cos: true,
  freq_shift: 0,
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  mid_block_type: "UNetMidBlock2DCrossAttn",
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  only_cross_attention: false,
  block_out_channels: [320, 640, 1280, 1280],
  layers_per_block: 2,
  downsample_padding: 1,
  mid_block_scale_factor: 1,
  act_fn: "silu",
  norm_num_groups: 32,
  norm_eps: 1e-5,
  cross_attention_dim: 1280,
  transformer_layers_per_block: 1,
  attention_head_dim: 8,
  num_attention_heads: null,
  dual_cross_attention: false,
  use_linear_projection: false,
  upcast_attention: false,
  time_embedding_dim: null,
  time_cond_proj_dim: null,
  class_embed_type: null,
  addition_embed_type: null,
  resnet_time_scale_shift: "default",
  time_embedding_type: "positional",
  conv_in_kernel: 3,
  conv_out_kernel: 3,
};

/**
 * Keys that must hold their default (null / false / ...) because the engine implements none of the
 * alternatives; a config.json that sets them otherwise is refused.
 */
const UNET_MUST_BE_DEFAULT: Record<string, unknown> = {
  encoder_hid_dim: null,
  encoder_hid_dim_type: null,
  addition_time_embed_dim: null,
  num_class_embeds: null,
  reverse_transformer_layers_per_block: null,
  resnet_skip_time_act: false,
  resnet_out_scale_factor: 1.0,
  time_embedding_act_fn: null,
  timestep_post_act: null,
  projection_class_embeddings_input_dim: null,
  attention_type: "default",
  class_embeddings_concat: false,
  mid_block_only_cross_attention: null,
  cross_attention_norm: null,
};

export function parseUNetConfig(json: unknown, source = "unet/config.json"): UNetConfig {
  const r = new Reader(json, source);
  const c: UNetConfig = {
    sample_size: r.intOrNull("sample_size", UNET_DEFAULTS.sample_size),
    in_channels: r.positiveInt("in_channels", UNET_DEFAULTS.in_channels),
    out_channels: r.positiveInt("out_channels", UNET_DEFAULTS.out_channels),
    center_input_sample: r.literal("center_input_sample", [false], false),
    flip_sin_to_cos: r.bool("flip_sin_to_cos", UNET_DEFAULTS.flip_sin_to_cos),
    freq_shift: r.number("freq_shift", UNET_DEFAULTS.freq_shift),
    down_block_types: r.enumList(
      "down_block_types",
      ["CrossAttnDownBlock2D", "DownBlock2D"],
      UNET_DEFAULTS.down_block_types,
    ),
    mid_block_type: r.literal("mid_block_type", ["UNetMidBlock2DCrossAttn"], UNET_DEFAULTS.mid_block_type),
    up_block_types: r.enumList(
      "up_block_types",
      ["CrossAttnUpBlock2D", "UpBlock2D"],
      UNET_DEFAULTS.up_block_types,
    ),
    only_cross_attention: r.literal("only_cross_attention", [false], false),
    block_out_channels: r.intList("block_out_channels", UNET_DEFAULTS.block_out_channels),
    layers_per_block: r.intOrIntList("layers_per_block", UNET_DEFAULTS.layers_per_block),
    downsample_padding: r.literal("downsample_padding", [0, 1], 1),
    mid_block_scale_factor: r.literal("mid_block_scale_factor", [1], 1),
    act_fn: r.literal("act_fn", ["silu"], "silu"),
    norm_num_groups: r.positiveInt("norm_num_groups", UNET_DEFAULTS.norm_num_groups),
    norm_eps: r.positiveNumber("norm_eps", UNET_DEFAULTS.norm_eps),
    cross_attention_dim: r.intOrIntList("cross_attention_dim", UNET_DEFAULTS.cross_attention_dim),
    transformer_layers_per_block: r.intOrIntList(
      "transformer_layers_per_block",
      UNET_DEFAULTS.transformer_layers_per_block,
    ),
    attention_head_dim: r.intOrIntList("attention_head_dim", UNET_DEFAULTS.attention_head_dim),
    num_attention_heads: r.has("num_attention_heads") && r.raw("num_attention_heads") !== null
      ? r.intOrIntList("num_attention_heads", 1)
      : null,
    dual_cross_attention: r.literal("dual_cross_attention", [false], false),
    use_linear_projection: r.bool("use_linear_projection", UNET_DEFAULTS.use_linear_projection),
    upcast_attention: r.bool("upcast_attention", UNET_DEFAULTS.upcast_attention),
    time_embedding_dim: r.intOrNull("time_embedding_dim", null),
    time_cond_proj_dim: r.intOrNull("time_cond_proj_dim", null),
    class_embed_type: r.literal("class_embed_type", [null], null),
    addition_embed_type: r.literal("addition_embed_type", [null], null),
    resnet_time_scale_shift: r.literal("resnet_time_scale_shift", ["default"], "default"),
    time_embedding_type: r.literal("time_embedding_type", ["positional"], "positional"),
    conv_in_kernel: r.literal("conv_in_kernel", [3], 3),
    conv_out_kernel: r.literal("conv_out_kernel", [3], 3),
  };
  for (const [k, v] of Object.entries(UNET_MUST_BE_DEFAULT)) r.literal(k, [v], v);
  validateUNetConfig(c, source);
  return c;
}

/** Structural checks diffusers makes (list lengths) plus divisibility the kernels rely on. */
export function validateUNetConfig(c: UNetConfig, source = "unet config"): void {
  const n = c.down_block_types.length;
  if (n === 0) throw new ConfigError(source, "down_block_types", "is empty");
  const lengthMatches = (field: keyof UNetConfig, value: unknown) => {
    if (Array.isArray(value) && value.length !== n) {
      throw new ConfigError(
        source,
        field,
        `has ${value.length} entries but down_block_types has ${n} (one per level is required)`,
      );
    }
  };
  lengthMatches("up_block_types", c.up_block_types);
  lengthMatches("block_out_channels", c.block_out_channels);
  lengthMatches("layers_per_block", c.layers_per_block);
  lengthMatches("cross_attention_dim", c.cross_attention_dim);
  lengthMatches("transformer_layers_per_block", c.transformer_layers_per_block);
  lengthMatches("attention_head_dim", c.attention_head_dim);
  lengthMatches("num_attention_heads", c.num_attention_heads);
  for (const ch of c.block_out_channels) {
    if (ch % c.norm_num_groups !== 0) {
      throw new ConfigError(
        source,
        "norm_num_groups",
        `${c.norm_num_groups} does not divide block width ${ch}`,
      );
    }
  }
  const levels = unetAttentionLevels(c);
  for (const [i, l] of levels.down.entries()) {
    if (l.hasAttention && l.channels % l.heads !== 0) {
      throw new ConfigError(
        source,
        "attention_head_dim",
        `${l.heads} heads do not divide level ${i}'s ${l.channels} channels`,
      );
    }
  }
  if (c.block_out_channels[0] % 2 !== 0) {
    throw new ConfigError(
      source,
      "block_out_channels",
      "the first width must be even (sinusoidal time projection)",
    );
  }
  for (const [i, l] of levels.up.entries()) {
    if (l.hasAttention && l.channels % l.heads !== 0) {
      throw new ConfigError(
        source,
        "attention_head_dim",
        `${l.heads} heads do not divide up level ${i}'s ${l.channels} channels`,
      );
    }
  }
  const mid = levels.mid;
  if (mid.channels % mid.heads !== 0) {
    throw new ConfigError(
      source,
      "attention_head_dim",
      `${mid.heads} heads do not divide the mid block's ${mid.channels} channels`,
    );
  }
}

const perLevel = (
  v: number | number[],
  n: number,
): number[] => (Array.isArray(v) ? [...v] : new Array(n).fill(v));

export interface UNetDownLevel {
  /** Output width of the level (block_out_channels[i]). */
  channels: number;
  /** Width entering the level. */
  inChannels: number;
  /** Resnets (and transformers, when hasAttention) in this level. */
  layers: number;
  hasAttention: boolean;
  hasDownsampler: boolean;
  heads: number;
  headDim: number;
  transformerLayers: number;
  crossAttentionDim: number;
}

export interface UNetUpLevel {
  channels: number;
  /** Width coming from the previous (deeper) up level. */
  prevChannels: number;
  /** Resnet j's input width: (j == 0 ? prevChannels : channels) + its skip width. */
  resnetInChannels: number[];
  /** layers_per_block + 1. */
  layers: number;
  hasAttention: boolean;
  hasUpsampler: boolean;
  heads: number;
  headDim: number;
  transformerLayers: number;
  crossAttentionDim: number;
}

export interface UNetMidLevel {
  channels: number;
  heads: number;
  headDim: number;
  transformerLayers: number;
  crossAttentionDim: number;
}

/**
 * Per-level structure with diffusers' head semantics:
 * `heads[i] = (num_attention_heads ?? attention_head_dim)[i]`, `headDim = channels / heads`;
 * up level i uses the reversed lists; the mid block uses the last entry.
 */
export function unetAttentionLevels(
  c: UNetConfig,
): { down: UNetDownLevel[]; up: UNetUpLevel[]; mid: UNetMidLevel } {
  const n = c.down_block_types.length;
  const ch = c.block_out_channels;
  const heads = perLevel(c.num_attention_heads ?? c.attention_head_dim, n);
  const layers = perLevel(c.layers_per_block, n);
  const tLayers = perLevel(c.transformer_layers_per_block, n);
  const cross = perLevel(c.cross_attention_dim, n);
  const down: UNetDownLevel[] = c.down_block_types.map((type, i) => ({
    channels: ch[i],
    inChannels: i === 0 ? ch[0] : ch[i - 1],
    layers: layers[i],
    hasAttention: type === "CrossAttnDownBlock2D",
    hasDownsampler: i < n - 1,
    heads: heads[i],
    headDim: ch[i] / heads[i],
    transformerLayers: tLayers[i],
    crossAttentionDim: cross[i],
  }));
  const rev = <T>(a: T[]) => [...a].reverse();
  const rCh = rev(ch);
  const rHeads = rev(heads);
  const rLayers = rev(layers);
  const rTLayers = rev(tLayers);
  const rCross = rev(cross);
  let prev = rCh[0];
  const up: UNetUpLevel[] = c.up_block_types.map((type, i) => {
    const out = rCh[i];
    const input = rCh[Math.min(i + 1, n - 1)];
    const count = rLayers[i] + 1;
    const resnetInChannels = Array.from(
      { length: count },
      (_, j) => (j === 0 ? prev : out) + (j === count - 1 ? input : out),
    );
    const level: UNetUpLevel = {
      channels: out,
      prevChannels: prev,
      resnetInChannels,
      layers: count,
      hasAttention: type === "CrossAttnUpBlock2D",
      hasUpsampler: i < n - 1,
      heads: rHeads[i],
      headDim: out / rHeads[i],
      transformerLayers: rTLayers[i],
      crossAttentionDim: rCross[i],
    };
    prev = out;
    return level;
  });
  const last = n - 1;
  const mid: UNetMidLevel = {
    channels: ch[last],
    heads: heads[last],
    headDim: ch[last] / heads[last],
    transformerLayers: tLayers[last],
    crossAttentionDim: cross[last],
  };
  return { down, up, mid };
}

/** Width of the time-embedding MLP (SD: 4 × 320 = 1280). */
export function unetTimeEmbedDim(c: UNetConfig): number {
  return c.time_embedding_dim ?? c.block_out_channels[0] * 4;
}
