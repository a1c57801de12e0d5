// Reference configs: stable-diffusion-v1-5 and stable-diffusion-2-1 (768, v-prediction), as their
// config.json files hold them (UNet/VAE: the manifests' config_full).

import { parseUNetConfig, type UNetConfig } from "./unet/config.ts";
import { parseVaeConfig, type VaeConfig } from "./vae/config.ts";
import { type ClipTextConfig, parseClipTextConfig } from "./clip/config.ts";

/** The reference models whose configs ship with the engine (synthetic weights, single-file inference). */
export type ReferenceModel = "sd15" | "sd21";
export const REFERENCE_MODELS: readonly ReferenceModel[] = ["sd15", "sd21"];

export interface ReferenceConfigJson {
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
export const SD15_CONFIG_JSON: ReferenceConfigJson = {
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
export const SD21_CONFIG_JSON: ReferenceConfigJson = {
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

export interface ReferenceConfigs {
  unet: UNetConfig;
  vae: VaeConfig;
  textEncoder: ClipTextConfig;
  scheduler: Record<string, unknown>;
}

export function referenceConfigJson(family: ReferenceModel): ReferenceConfigJson {
  return structuredClone(family === "sd15" ? SD15_CONFIG_JSON : SD21_CONFIG_JSON);
}

export function referenceConfigs(family: ReferenceModel): ReferenceConfigs {
  const j = referenceConfigJson(family);
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
