// AutoencoderTiny's config.json (TAESD, madebyollin/taesd), parsed into a typed object (snake_case field
// names as in the file; defaults of diffusers 0.27's constructor).

import { ConfigError, Reader } from "../config_reader.ts";

export interface TaesdConfig {
  in_channels: number;
  out_channels: number;
  /** One width per encoder level; diffusers chains the levels without a projection, so all are equal. */
  encoder_block_out_channels: number[];
  decoder_block_out_channels: number[];
  act_fn: "relu";
  upsample_fn: "nearest";
  latent_channels: number;
  upsampling_scaling_factor: 2;
  /** AutoencoderTinyBlocks per level (encoder [1, 3, 3, 3], decoder [3, 3, 3, 1] for TAESD). */
  num_encoder_blocks: number[];
  num_decoder_blocks: number[];
  /** Only for storing latents as 8-bit images (scale_latents); encode/decode do not use them. */
  latent_magnitude: number;
  latent_shift: number;
  force_upcast: boolean;
  /** 1 for TAESD: it takes and returns the UNet's latents as they are. */
  scaling_factor: number;
}

/** madebyollin/taesd's config (= diffusers' defaults): SD 1.x / 2.x latents. */
export const TAESD_CONFIG_JSON = {
  _class_name: "AutoencoderTiny",
  _diffusers_version: "0.27.2",
  in_channels: 3,
  out_channels: 3,
  encoder_block_out_channels: [64, 64, 64, 64],
  decoder_block_out_channels: [64, 64, 64, 64],
  act_fn: "relu",
  latent_channels: 4,
  upsampling_scaling_factor: 2,
  num_encoder_blocks: [1, 3, 3, 3],
  num_decoder_blocks: [3, 3, 3, 1],
  latent_magnitude: 3,
  latent_shift: 0.5,
  force_upcast: false,
  scaling_factor: 1.0,
} as const;

export function parseTaesdConfig(json: unknown, source = "taesd/config.json"): TaesdConfig {
  const r = new Reader(json, source);
  const d = TAESD_CONFIG_JSON;
  const c: TaesdConfig = {
    in_channels: r.positiveInt("in_channels", d.in_channels),
    out_channels: r.positiveInt("out_channels", d.out_channels),
    encoder_block_out_channels: r.intList("encoder_block_out_channels", [...d.encoder_block_out_channels]),
    decoder_block_out_channels: r.intList("decoder_block_out_channels", [...d.decoder_block_out_channels]),
    act_fn: r.literal("act_fn", ["relu"], "relu"),
    upsample_fn: r.literal("upsample_fn", ["nearest"], "nearest"),
    latent_channels: r.positiveInt("latent_channels", d.latent_channels),
    upsampling_scaling_factor: r.literal("upsampling_scaling_factor", [2], 2),
    num_encoder_blocks: r.intList("num_encoder_blocks", [...d.num_encoder_blocks]),
    num_decoder_blocks: r.intList("num_decoder_blocks", [...d.num_decoder_blocks]),
    latent_magnitude: r.number("latent_magnitude", d.latent_magnitude),
    latent_shift: r.number("latent_shift", d.latent_shift),
    force_upcast: r.bool("force_upcast", d.force_upcast),
    scaling_factor: r.positiveNumber("scaling_factor", d.scaling_factor),
  };
  // A shift would have to be undone around every decode; TAESD for SD has none (diffusers ≥ 0.28 writes 0).
  r.literal("shift_factor", [0, null], 0);
  validateTaesdConfig(c, source);
  return c;
}

export function validateTaesdConfig(c: TaesdConfig, source = "taesd config"): void {
  for (const side of ["encoder", "decoder"] as const) {
    const widths = c[`${side}_block_out_channels`];
    const blocks = c[`num_${side}_blocks`];
    if (widths.length !== blocks.length) {
      throw new ConfigError(
        source,
        `num_${side}_blocks`,
        `has ${blocks.length} entries, ${side}_block_out_channels ${widths.length}`,
      );
    }
    // EncoderTiny/DecoderTiny chain their levels with Conv2d(width_i, width_i): unequal widths do not run
    // in diffusers either.
    if (widths.some((w) => w !== widths[0])) {
      throw new ConfigError(source, `${side}_block_out_channels`, `must all be equal, got [${widths}]`);
    }
  }
}

/** Latent pixels per image pixel side: one ×2 upsampling between decoder levels. */
export function taesdScale(c: TaesdConfig): number {
  return 2 ** (c.num_decoder_blocks.length - 1);
}
