// AutoencoderKL's config.json, parsed into a typed object (snake_case field names as in the file;
// defaults of diffusers 0.27's constructor).

import { ConfigError, Reader } from "../config_reader.ts";

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
