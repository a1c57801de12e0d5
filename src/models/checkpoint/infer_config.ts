// Single files carry no configs: they are inferred here from the tensor shapes (diffusers JSON), plus the
// SD 1.x / 2.x defaults for what shapes cannot show (GroupNorm groups, head counts), each assumption noted.

import { referenceConfigJson } from "../presets.ts";
import type { ModelFamily } from "../family.ts";
import {
  CLIP_TRANSFORMERS_PREFIX,
  type ClipOriginalLayout,
  OPENCLIP_PREFIX,
  UNET_ORIGINAL_PREFIX,
  VAE_ORIGINAL_PREFIX,
} from "./single_file_names.ts";

export interface SingleFileConfigs {
  family: ModelFamily | null;
  unet: Record<string, unknown> | null;
  vae: Record<string, unknown> | null;
  textEncoder: Record<string, unknown> | null;
  clipLayout: ClipOriginalLayout | null;
  /** transformers layout without the `text_model.` level (old SD 1.x files). */
  clipWithoutTextModelLevel: boolean;
  notes: string[];
}

/**
 * Configs (diffusers JSON) inferred from an original-layout checkpoint's tensor shapes: widths, levels,
 * layers, block types, context width, Linear vs conv projections, text encoder width and depth. Not in the
 * shapes, taken from the SD 1.x / 2.x defaults and listed in `notes`: GroupNorm groups (32), attention
 * heads (SD 1.x: 8 per level; SD 2.x: 64 channels per head), CLIP heads (64 channels per head).
 */
export function inferSingleFileConfigJson(shapes: Map<string, number[]>): SingleFileConfigs {
  const notes: string[] = [];
  const clipLayout: ClipOriginalLayout | null = shapes.has(`${OPENCLIP_PREFIX}token_embedding.weight`)
    ? "openclip"
    : shapes.has(`${CLIP_TRANSFORMERS_PREFIX}text_model.embeddings.token_embedding.weight`) ||
        shapes.has(`${CLIP_TRANSFORMERS_PREFIX}embeddings.token_embedding.weight`)
    ? "transformers"
    : null;
  const unetJson = inferUNet(shapes, notes);
  let family: ModelFamily | null = null;
  if (unetJson) family = unetJson.use_linear_projection ? "sd2" : "sd1";
  else if (clipLayout) family = clipLayout === "openclip" ? "sd2" : "sd1";
  if (unetJson && family) {
    const defaults = referenceConfigJson(family === "sd1" ? "sd15" : "sd21");
    const widths = unetJson.block_out_channels as number[];
    if (family === "sd1") {
      unetJson.attention_head_dim = defaults.unet.attention_head_dim;
      notes.push("unet: attention heads are not stored in the weights; assumed SD 1.x's 8 heads per level");
    } else {
      const heads = widths.map((w) => w / 64);
      if (heads.every((h) => Number.isInteger(h) && h > 0)) {
        unetJson.attention_head_dim = heads;
        notes.push(
          "unet: attention heads are not stored in the weights; assumed SD 2.x's 64 channels per head",
        );
      } else {
        unetJson.attention_head_dim = 1;
        notes.push(
          `unet: widths [${widths}] are not multiples of 64; assumed 1 attention head per level (override it)`,
        );
      }
      unetJson.upcast_attention = true;
      notes.push("unet: upcast_attention assumed true (SD 2.1; only affects f16 precision)");
    }
    unetJson.norm_num_groups = 32;
    notes.push("unet: norm_num_groups assumed 32 (not stored in the weights)");
  }
  if (clipLayout && clipLayout !== (family === "sd2" ? "openclip" : "transformers")) {
    notes.push(
      `text encoder layout (${clipLayout}) is unusual for an ${family === "sd2" ? "SD 2.x" : "SD 1.x"} UNet`,
    );
  }
  const vaeJson = inferVae(shapes, notes, family);
  const clip = clipLayout ? inferClip(shapes, clipLayout, notes) : null;
  return {
    family,
    unet: unetJson,
    vae: vaeJson,
    textEncoder: clip?.json ?? null,
    clipLayout,
    clipWithoutTextModelLevel: clip?.withoutTextModelLevel ?? false,
    notes,
  };
}

function maxIndex(shapes: Map<string, number[]>, re: RegExp): number {
  let max = -1;
  for (const k of shapes.keys()) {
    const m = k.match(re);
    if (m) max = Math.max(max, +m[1]);
  }
  return max;
}

function inferUNet(shapes: Map<string, number[]>, notes: string[]): Record<string, unknown> | null {
  const P = UNET_ORIGINAL_PREFIX;
  const get = (k: string) => shapes.get(P + k);
  const convIn = get("input_blocks.0.0.weight");
  const convOut = get("out.2.weight");
  const timeEmbed = get("time_embed.0.weight");
  if (!convIn || !convOut || !timeEmbed) return null;
  const esc = P.replace(/\./g, "\\.");
  const lastInput = maxIndex(shapes, new RegExp(`^${esc}input_blocks\\.(\\d+)\\.`));
  const transformerLayers = (block: string) =>
    maxIndex(
      shapes,
      new RegExp(`^${esc}${block.replace(/\./g, "\\.")}\\.1\\.transformer_blocks\\.(\\d+)\\.`),
    ) + 1;
  interface Level {
    width: number;
    layers: number;
    attention: boolean;
    transformerLayers: number;
  }
  const levels: Level[] = [];
  let cur: Level = { width: 0, layers: 0, attention: false, transformerLayers: 1 };
  for (let k = 1; k <= lastInput; k++) {
    if (get(`input_blocks.${k}.0.op.weight`)) {
      levels.push(cur);
      cur = { width: 0, layers: 0, attention: false, transformerLayers: 1 };
      continue;
    }
    const conv2 = get(`input_blocks.${k}.0.out_layers.3.weight`);
    if (!conv2) throw new Error(`single-file UNet: input_blocks.${k} is neither a resnet nor a downsampler`);
    cur.layers++;
    cur.width = conv2[0];
    if (get(`input_blocks.${k}.1.proj_in.weight`)) {
      cur.attention = true;
      cur.transformerLayers = transformerLayers(`input_blocks.${k}`);
    }
  }
  levels.push(cur);
  if (levels.some((l) => l.layers === 0)) throw new Error("single-file UNet: a level without resnets");
  const upTypes: string[] = [];
  let start = 0;
  for (const l of [...levels].reverse()) {
    upTypes.push(get(`output_blocks.${start}.1.proj_in.weight`) ? "CrossAttnUpBlock2D" : "UpBlock2D");
    start += l.layers + 1;
  }
  const toK = [...shapes].find(([k]) => k.startsWith(P) && k.endsWith("attn2.to_k.weight"))?.[1];
  const projIn = [...shapes].find(([k]) => k.startsWith(P) && k.endsWith(".proj_in.weight"))?.[1];
  const uniform = (a: number[]) => (a.every((v) => v === a[0]) ? a[0] : a);
  const json: Record<string, unknown> = {
    in_channels: convIn[1],
    out_channels: convOut[0],
    block_out_channels: levels.map((l) => l.width),
    layers_per_block: uniform(levels.map((l) => l.layers)),
    down_block_types: levels.map((l) => (l.attention ? "CrossAttnDownBlock2D" : "DownBlock2D")),
    up_block_types: upTypes,
    transformer_layers_per_block: uniform(levels.map((l) => l.transformerLayers)),
    cross_attention_dim: toK ? toK[1] : 768,
    use_linear_projection: projIn ? projIn.length === 2 : false,
  };
  if (timeEmbed[0] !== 4 * convIn[0]) json.time_embedding_dim = timeEmbed[0];
  if (!toK) notes.push("unet: no cross-attention found");
  return json;
}

function inferVae(
  shapes: Map<string, number[]>,
  notes: string[],
  family: ModelFamily | null,
): Record<string, unknown> | null {
  const P = VAE_ORIGINAL_PREFIX;
  const get = (k: string) => shapes.get(P + k);
  const convIn = get("encoder.conv_in.weight");
  const convOut = get("decoder.conv_out.weight");
  const decIn = get("decoder.conv_in.weight");
  if (!convIn || !convOut || !decIn) return null;
  const esc = P.replace(/\./g, "\\.");
  const levels = maxIndex(shapes, new RegExp(`^${esc}encoder\\.down\\.(\\d+)\\.`)) + 1;
  const widths: number[] = [];
  for (let i = 0; i < levels; i++) {
    const w = get(`encoder.down.${i}.block.0.conv2.weight`);
    if (!w) throw new Error(`single-file VAE: encoder.down.${i}.block.0.conv2.weight is missing`);
    widths.push(w[0]);
  }
  notes.push("vae: norm_num_groups assumed 32, scaling_factor 0.18215 (not stored in the weights)");
  return {
    in_channels: convIn[1],
    out_channels: convOut[0],
    block_out_channels: widths,
    down_block_types: widths.map(() => "DownEncoderBlock2D"),
    up_block_types: widths.map(() => "UpDecoderBlock2D"),
    layers_per_block: maxIndex(shapes, new RegExp(`^${esc}encoder\\.down\\.0\\.block\\.(\\d+)\\.`)) + 1,
    latent_channels: decIn[1],
    norm_num_groups: 32,
    sample_size: family === "sd2" ? 768 : 512,
    scaling_factor: 0.18215,
    use_quant_conv: shapes.has(`${P}quant_conv.weight`),
    use_post_quant_conv: shapes.has(`${P}post_quant_conv.weight`),
    mid_block_add_attention: shapes.has(`${P}encoder.mid.attn_1.q.weight`),
  };
}

function inferClip(
  shapes: Map<string, number[]>,
  layout: ClipOriginalLayout,
  notes: string[],
): { json: Record<string, unknown>; withoutTextModelLevel: boolean } {
  const heads = (h: number) => {
    if (h % 64 === 0) return h / 64;
    notes.push(`text encoder: width ${h} is not a multiple of 64; assumed 1 attention head (override it)`);
    return 1;
  };
  if (layout === "openclip") {
    const P = OPENCLIP_PREFIX;
    const [vocab, h] = shapes.get(`${P}token_embedding.weight`)!;
    const positions = shapes.get(`${P}positional_embedding`)?.[0] ?? 77;
    const blocks =
      maxIndex(shapes, new RegExp(`^${P.replace(/\./g, "\\.")}transformer\\.resblocks\\.(\\d+)\\.`)) + 1;
    const fc1 = shapes.get(`${P}transformer.resblocks.0.mlp.c_fc.weight`);
    notes.push(
      `text encoder: OpenCLIP layout with ${blocks} layers; SD 2.x uses the penultimate layer, so ${
        blocks - 1
      } are loaded`,
    );
    return {
      json: {
        ...referenceConfigJson("sd21").text_encoder,
        vocab_size: vocab,
        hidden_size: h,
        max_position_embeddings: positions,
        num_hidden_layers: blocks - 1,
        num_attention_heads: heads(h),
        intermediate_size: fc1 ? fc1[0] : 4 * h,
        hidden_act: "gelu",
      },
      withoutTextModelLevel: false,
    };
  }
  const withoutTextModelLevel = !shapes.has(
    `${CLIP_TRANSFORMERS_PREFIX}text_model.embeddings.token_embedding.weight`,
  );
  const P = CLIP_TRANSFORMERS_PREFIX + (withoutTextModelLevel ? "" : "text_model.");
  const [vocab, h] = shapes.get(`${P}embeddings.token_embedding.weight`)!;
  const positions = shapes.get(`${P}embeddings.position_embedding.weight`)?.[0] ?? 77;
  const layers = maxIndex(shapes, new RegExp(`^${P.replace(/\./g, "\\.")}encoder\\.layers\\.(\\d+)\\.`)) + 1;
  const fc1 = shapes.get(`${P}encoder.layers.0.mlp.fc1.weight`);
  return {
    json: {
      ...referenceConfigJson("sd15").text_encoder,
      vocab_size: vocab,
      hidden_size: h,
      max_position_embeddings: positions,
      num_hidden_layers: layers,
      num_attention_heads: heads(h),
      intermediate_size: fc1 ? fc1[0] : 4 * h,
      hidden_act: "quick_gelu",
    },
    withoutTextModelLevel,
  };
}
