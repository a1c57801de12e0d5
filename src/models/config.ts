// Model configs as diffusers / transformers store them (config.json), parsed into typed plain objects.
//
// Field names stay snake_case, exactly as in the JSON files, so a config can be checked against (and written
// back as) the file it came from. Defaults are those of the Python constructors (diffusers 0.27
// UNet2DConditionModel / AutoencoderKL, transformers CLIPTextConfig); keys a class doesn't know are ignored,
// as diffusers does. Values the engine cannot run (other block types, class embeddings, ...) are rejected
// with an error naming the file and the field.

export class ConfigError extends Error {
  constructor(readonly source: string, readonly field: string | null, message: string) {
    super(`${source}${field ? `: ${field}` : ""}: ${message}`);
    this.name = "ConfigError";
  }
}

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

// ---------------------------------------------------------------------------------------------------------
// VAE (diffusers.AutoencoderKL)

export interface VaeConfig {
  in_channels: number;
  out_channels: number;
  down_block_types: "DownEncoderBlock2D"[];
  up_block_types: "UpDecoderBlock2D"[];
  block_out_channels: number[];
  /** Resnets per encoder level; decoder levels have layers_per_block + 1. */
  layers_per_block: number;
  act_fn: "silu";
  latent_channels: number;
  norm_num_groups: number;
  sample_size: number;
  scaling_factor: number;
  shift_factor: number | null;
  force_upcast: boolean;
  use_quant_conv: boolean;
  use_post_quant_conv: boolean;
  mid_block_add_attention: boolean;
}

export function parseVaeConfig(json: unknown, source = "vae/config.json"): VaeConfig {
  const r = new Reader(json, source);
  const c: VaeConfig = {
    in_channels: r.positiveInt("in_channels", 3),
    out_channels: r.positiveInt("out_channels", 3),
    down_block_types: r.enumList("down_block_types", ["DownEncoderBlock2D"], ["DownEncoderBlock2D"]),
    up_block_types: r.enumList("up_block_types", ["UpDecoderBlock2D"], ["UpDecoderBlock2D"]),
    block_out_channels: r.intList("block_out_channels", [64]),
    layers_per_block: r.positiveInt("layers_per_block", 1),
    act_fn: r.literal("act_fn", ["silu"], "silu"),
    latent_channels: r.positiveInt("latent_channels", 4),
    norm_num_groups: r.positiveInt("norm_num_groups", 32),
    sample_size: r.positiveInt("sample_size", 32),
    scaling_factor: r.positiveNumber("scaling_factor", 0.18215),
    shift_factor: r.has("shift_factor") && r.raw("shift_factor") !== null
      ? r.number("shift_factor", 0)
      : null,
    force_upcast: r.bool("force_upcast", true),
    use_quant_conv: r.bool("use_quant_conv", true),
    use_post_quant_conv: r.bool("use_post_quant_conv", true),
    mid_block_add_attention: r.bool("mid_block_add_attention", true),
  };
  r.literal("latents_mean", [null], null);
  r.literal("latents_std", [null], null);
  validateVaeConfig(c, source);
  return c;
}

export function validateVaeConfig(c: VaeConfig, source = "vae config"): void {
  const n = c.block_out_channels.length;
  if (c.down_block_types.length !== n) {
    throw new ConfigError(
      source,
      "down_block_types",
      `has ${c.down_block_types.length} entries, block_out_channels ${n}`,
    );
  }
  if (c.up_block_types.length !== n) {
    throw new ConfigError(
      source,
      "up_block_types",
      `has ${c.up_block_types.length} entries, block_out_channels ${n}`,
    );
  }
  for (const ch of c.block_out_channels) {
    if (ch % c.norm_num_groups !== 0) {
      throw new ConfigError(
        source,
        "norm_num_groups",
        `${c.norm_num_groups} does not divide block width ${ch}`,
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Text encoder (transformers.CLIPTextConfig)

export type ClipActivation = "quick_gelu" | "gelu";

export interface ClipTextConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_attention_heads: number;
  num_hidden_layers: number;
  max_position_embeddings: number;
  /** quick_gelu (SD 1.x, OpenAI CLIP) or exact erf gelu (SD 2.x, OpenCLIP). */
  hidden_act: ClipActivation;
  layer_norm_eps: number;
  projection_dim: number;
  bos_token_id: number;
  eos_token_id: number;
  pad_token_id: number;
  /** architectures[0] == "CLIPTextModelWithProjection": has text_projection.weight [projection_dim, hidden]. */
  with_projection: boolean;
}

export function parseClipTextConfig(json: unknown, source = "text_encoder/config.json"): ClipTextConfig {
  const r = new Reader(json, source);
  const arch = r.has("architectures") ? r.raw("architectures") : ["CLIPTextModel"];
  if (!Array.isArray(arch) || arch.length !== 1 || typeof arch[0] !== "string") {
    throw new ConfigError(source, "architectures", `expected one class name, got ${JSON.stringify(arch)}`);
  }
  if (arch[0] !== "CLIPTextModel" && arch[0] !== "CLIPTextModelWithProjection") {
    throw new ConfigError(
      source,
      "architectures",
      `"${arch[0]}" is not supported (CLIPTextModel, CLIPTextModelWithProjection)`,
    );
  }
  if (r.has("model_type") && r.raw("model_type") !== "clip_text_model") {
    throw new ConfigError(
      source,
      "model_type",
      `${JSON.stringify(r.raw("model_type"))} is not "clip_text_model"`,
    );
  }
  const c: ClipTextConfig = {
    vocab_size: r.positiveInt("vocab_size", 49408),
    hidden_size: r.positiveInt("hidden_size", 512),
    intermediate_size: r.positiveInt("intermediate_size", 2048),
    num_attention_heads: r.positiveInt("num_attention_heads", 8),
    num_hidden_layers: r.positiveInt("num_hidden_layers", 12),
    max_position_embeddings: r.positiveInt("max_position_embeddings", 77),
    hidden_act: r.literal("hidden_act", ["quick_gelu", "gelu"], "quick_gelu"),
    layer_norm_eps: r.positiveNumber("layer_norm_eps", 1e-5),
    projection_dim: r.positiveInt("projection_dim", 512),
    bos_token_id: r.int("bos_token_id", 49406),
    eos_token_id: r.int("eos_token_id", 49407),
    pad_token_id: r.int("pad_token_id", 1),
    with_projection: arch[0] === "CLIPTextModelWithProjection",
  };
  if (c.hidden_size % c.num_attention_heads !== 0) {
    throw new ConfigError(
      source,
      "num_attention_heads",
      `${c.num_attention_heads} does not divide hidden_size ${c.hidden_size}`,
    );
  }
  return c;
}

export function clipHeadDim(c: ClipTextConfig): number {
  return c.hidden_size / c.num_attention_heads;
}

// ---------------------------------------------------------------------------------------------------------
// Reference configs: stable-diffusion-v1-5 and stable-diffusion-2-1 (768, v-prediction), as their
// config.json files hold them (UNet/VAE: the manifests' config_full).

export type ModelFamily = "sd15" | "sd21";

export interface FamilyConfigJson {
  unet: Record<string, unknown>;
  vae: Record<string, unknown>;
  text_encoder: Record<string, unknown>;
  scheduler: Record<string, unknown>;
}

const UNET_COMMON_JSON = {
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
  dropout: 0.0,
  act_fn: "silu",
  norm_num_groups: 32,
  norm_eps: 1e-05,
  transformer_layers_per_block: 1,
  reverse_transformer_layers_per_block: null,
  encoder_hid_dim: null,
  encoder_hid_dim_type: null,
  num_attention_heads: null,
  dual_cross_attention: false,
  class_embed_type: null,
  addition_embed_type: null,
  addition_time_embed_dim: null,
  num_class_embeds: null,
  resnet_time_scale_shift: "default",
  resnet_skip_time_act: false,
  resnet_out_scale_factor: 1.0,
  time_embedding_type: "positional",
  time_embedding_dim: null,
  time_embedding_act_fn: null,
  timestep_post_act: null,
  time_cond_proj_dim: null,
  conv_in_kernel: 3,
  conv_out_kernel: 3,
  projection_class_embeddings_input_dim: null,
  attention_type: "default",
  class_embeddings_concat: false,
  mid_block_only_cross_attention: null,
  cross_attention_norm: null,
  addition_embed_type_num_heads: 64,
};

const VAE_COMMON_JSON = {
  in_channels: 3,
  out_channels: 3,
  down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
  block_out_channels: [128, 256, 512, 512],
  layers_per_block: 2,
  act_fn: "silu",
  latent_channels: 4,
  norm_num_groups: 32,
  scaling_factor: 0.18215,
  latents_mean: null,
  latents_std: null,
  force_upcast: true,
};

const CLIP_COMMON_JSON = {
  architectures: ["CLIPTextModel"],
  attention_dropout: 0.0,
  bos_token_id: 0,
  dropout: 0.0,
  eos_token_id: 2,
  initializer_factor: 1.0,
  initializer_range: 0.02,
  layer_norm_eps: 1e-05,
  max_position_embeddings: 77,
  model_type: "clip_text_model",
  pad_token_id: 1,
  torch_dtype: "float16",
  vocab_size: 49408,
};

const SCHEDULER_COMMON_JSON = {
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  beta_start: 0.00085,
  clip_sample: false,
  num_train_timesteps: 1000,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
};

/** runwayml/stable-diffusion-v1-5 (epsilon prediction, 512 px). */
export const SD15_CONFIG_JSON: FamilyConfigJson = {
  unet: {
    _class_name: "UNet2DConditionModel",
    _diffusers_version: "0.27.2",
    sample_size: 64,
    ...UNET_COMMON_JSON,
    cross_attention_dim: 768,
    attention_head_dim: 8,
    use_linear_projection: false,
    upcast_attention: false,
  },
  vae: { _class_name: "AutoencoderKL", _diffusers_version: "0.27.2", ...VAE_COMMON_JSON, sample_size: 512 },
  text_encoder: {
    ...CLIP_COMMON_JSON,
    hidden_act: "quick_gelu",
    hidden_size: 768,
    intermediate_size: 3072,
    num_attention_heads: 12,
    num_hidden_layers: 12,
    projection_dim: 768,
  },
  scheduler: { _class_name: "PNDMScheduler", _diffusers_version: "0.27.2", ...SCHEDULER_COMMON_JSON },
};

/**
 * stabilityai/stable-diffusion-2-1 (768 px, v-prediction). The text encoder is OpenCLIP ViT-H/14's text
 * tower cut to 23 of its 24 layers (SD 2.x conditions on the penultimate layer).
 */
export const SD21_CONFIG_JSON: FamilyConfigJson = {
  unet: {
    _class_name: "UNet2DConditionModel",
    _diffusers_version: "0.27.2",
    sample_size: 96,
    ...UNET_COMMON_JSON,
    cross_attention_dim: 1024,
    attention_head_dim: [5, 10, 20, 20],
    use_linear_projection: true,
    upcast_attention: true,
  },
  vae: { _class_name: "AutoencoderKL", _diffusers_version: "0.27.2", ...VAE_COMMON_JSON, sample_size: 768 },
  text_encoder: {
    ...CLIP_COMMON_JSON,
    hidden_act: "gelu",
    hidden_size: 1024,
    intermediate_size: 4096,
    num_attention_heads: 16,
    num_hidden_layers: 23,
    projection_dim: 512,
  },
  scheduler: {
    _class_name: "DDIMScheduler",
    _diffusers_version: "0.27.2",
    ...SCHEDULER_COMMON_JSON,
    prediction_type: "v_prediction",
  },
};

export interface FamilyConfigs {
  unet: UNetConfig;
  vae: VaeConfig;
  textEncoder: ClipTextConfig;
  scheduler: Record<string, unknown>;
}

export function familyConfigJson(family: ModelFamily): FamilyConfigJson {
  return structuredClone(family === "sd15" ? SD15_CONFIG_JSON : SD21_CONFIG_JSON);
}

export function familyConfigs(family: ModelFamily): FamilyConfigs {
  const j = familyConfigJson(family);
  return {
    unet: parseUNetConfig(j.unet, `${family} unet config`),
    vae: parseVaeConfig(j.vae, `${family} vae config`),
    textEncoder: parseClipTextConfig(j.text_encoder, `${family} text_encoder config`),
    scheduler: j.scheduler,
  };
}

/** The config as a diffusers-style config.json object (for writing model folders). */
export function unetConfigJson(c: UNetConfig): Record<string, unknown> {
  return { _class_name: "UNet2DConditionModel", _diffusers_version: "0.27.2", ...UNET_COMMON_JSON, ...c };
}

export function vaeConfigJson(c: VaeConfig): Record<string, unknown> {
  const { shift_factor, ...rest } = c;
  return {
    _class_name: "AutoencoderKL",
    _diffusers_version: "0.27.2",
    ...VAE_COMMON_JSON,
    ...rest,
    ...(shift_factor === null ? {} : { shift_factor }),
  };
}

export function clipTextConfigJson(c: ClipTextConfig): Record<string, unknown> {
  const { with_projection, ...rest } = c;
  return {
    ...CLIP_COMMON_JSON,
    ...rest,
    architectures: [with_projection ? "CLIPTextModelWithProjection" : "CLIPTextModel"],
  };
}

// ---------------------------------------------------------------------------------------------------------
// Field reader: typed access with defaults and errors naming the field.

class Reader {
  private readonly obj: Record<string, unknown>;

  constructor(json: unknown, private readonly source: string) {
    if (typeof json !== "object" || json === null || Array.isArray(json)) {
      throw new ConfigError(source, null, "config is not a JSON object");
    }
    this.obj = json as Record<string, unknown>;
  }

  has(key: string): boolean {
    return Object.hasOwn(this.obj, key);
  }

  raw(key: string): unknown {
    return this.obj[key];
  }

  private fail(key: string, msg: string): never {
    throw new ConfigError(this.source, key, msg);
  }

  private get<T>(key: string, fallback: T, check: (v: unknown) => boolean, what: string): T {
    if (!this.has(key)) return fallback;
    const v = this.obj[key];
    if (!check(v)) this.fail(key, `expected ${what}, got ${JSON.stringify(v)}`);
    return v as T;
  }

  bool(key: string, fallback: boolean): boolean {
    return this.get(key, fallback, (v) => typeof v === "boolean", "true or false");
  }

  number(key: string, fallback: number): number {
    return this.get(key, fallback, (v) => typeof v === "number" && Number.isFinite(v), "a number");
  }

  positiveNumber(key: string, fallback: number): number {
    return this.get(
      key,
      fallback,
      (v) => typeof v === "number" && v > 0 && Number.isFinite(v),
      "a positive number",
    );
  }

  int(key: string, fallback: number): number {
    return this.get(key, fallback, (v) => Number.isSafeInteger(v), "an integer");
  }

  positiveInt(key: string, fallback: number): number {
    return this.get(key, fallback, isPositiveInt, "a positive integer");
  }

  intOrNull(key: string, fallback: number | null): number | null {
    return this.get(key, fallback, (v) => v === null || isPositiveInt(v), "a positive integer or null");
  }

  intList(key: string, fallback: number[]): number[] {
    const v = this.get(
      key,
      fallback,
      (v) => Array.isArray(v) && v.length > 0 && v.every(isPositiveInt),
      "a list of positive integers",
    );
    return [...v];
  }

  intOrIntList(key: string, fallback: number | number[]): number | number[] {
    const v = this.get<number | number[]>(
      key,
      fallback,
      (v) => isPositiveInt(v) || (Array.isArray(v) && v.length > 0 && v.every(isPositiveInt)),
      "a positive integer or a list of them",
    );
    return Array.isArray(v) ? [...v] : v;
  }

  /** A value that must be one of `allowed`; anything else is an unsupported feature. */
  literal<T>(key: string, allowed: readonly T[], fallback: T): T {
    if (!this.has(key)) return fallback;
    const v = this.obj[key];
    if (!allowed.some((a) => a === v)) {
      this.fail(
        key,
        `${JSON.stringify(v)} is not supported (supported: ${
          allowed.map((a) => JSON.stringify(a)).join(", ")
        })`,
      );
    }
    return v as T;
  }

  enumList<T extends string>(key: string, allowed: readonly T[], fallback: T[]): T[] {
    if (!this.has(key)) return [...fallback];
    const v = this.obj[key];
    if (!Array.isArray(v) || v.length === 0) {
      this.fail(key, `expected a non-empty list, got ${JSON.stringify(v)}`);
    }
    for (const [i, item] of v.entries()) {
      if (!allowed.includes(item as T)) {
        this.fail(
          `${key}[${i}]`,
          `block type ${JSON.stringify(item)} is not supported (supported: ${allowed.join(", ")})`,
        );
      }
    }
    return [...v] as T[];
  }
}

function isPositiveInt(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) > 0;
}
