// Name maps between diffusers / transformers tensor names and the original single-file checkpoints
// (CompVis / Stability "LDM" layout: v1-5-pruned-emaonly.safetensors, v2-1_768-ema-pruned.safetensors).
//
// Every map is generated from a config: the expected diffusers tensors (expected.ts) are walked and each
// name is translated by rules whose block indices come from the config (levels, layers per block), the
// way diffusers' convert_diffusers_to_original_stable_diffusion.py does it. The reverse direction is the
// inverted map, so both directions agree by construction.
//
// Layouts:
//   UNet  model.diffusion_model.*   input_blocks / middle_block / output_blocks
//   VAE   first_stage_model.*        encoder.down.N.block / decoder.up.(reversed) ; mid attention as 1×1 convs
//   CLIP  cond_stage_model.transformer.text_model.*  (SD 1.x: transformers names behind a prefix)
//         cond_stage_model.model.*   (SD 2.x: OpenCLIP names, fused q/k/v in_proj, 24 resblocks)

import type { ClipTextConfig } from "../clip/config.ts";
import { unetAttentionLevels, type UNetConfig } from "../unet/config.ts";
import type { VaeConfig } from "../vae/config.ts";
import { clipTensorSpecs, type ComponentKind, unetTensorSpecs, vaeTensorSpecs } from "../expected.ts";

export const UNET_ORIGINAL_PREFIX = "model.diffusion_model.";
export const VAE_ORIGINAL_PREFIX = "first_stage_model.";
export const CLIP_TRANSFORMERS_PREFIX = "cond_stage_model.transformer.";
export const OPENCLIP_PREFIX = "cond_stage_model.model.";

export interface NameMapEntry {
  /** diffusers / transformers name. */
  name: string;
  /** Shape under that name. */
  shape: number[];
  /** Full key in the single-file checkpoint (prefix included). */
  original: string;
  /** Shape of the original tensor: differs for the VAE attention (1×1 conv) and fused/transposed ones. */
  originalShape: number[];
  /** The tensor is rows [begin, end) of the original's first dimension (OpenCLIP's fused q/k/v in_proj). */
  rows?: [number, number];
  /** The tensor is the transpose of the 2-D original (OpenCLIP's text_projection [hidden, proj]). */
  transpose?: boolean;
}

export type ClipOriginalLayout = "transformers" | "openclip";

export interface NameMap {
  component: ComponentKind;
  /** Key prefix of this component in the single file. */
  prefix: string;
  entries: NameMapEntry[];
  byName: Map<string, NameMapEntry>;
  /** Original key → the entries it feeds (three for a fused in_proj, in row order). */
  byOriginal: Map<string, NameMapEntry[]>;
  /** Original keys under `prefix` that are known not to be weights of this model (ignored, not "extra"). */
  isIgnorable(originalKey: string): boolean;
}

function buildMap(
  component: ComponentKind,
  prefix: string,
  entries: NameMapEntry[],
  isIgnorable: (key: string) => boolean = () => false,
): NameMap {
  const byName = new Map<string, NameMapEntry>();
  const byOriginal = new Map<string, NameMapEntry[]>();
  for (const e of entries) {
    if (byName.has(e.name)) throw new Error(`name map: duplicate diffusers name ${e.name}`);
    byName.set(e.name, e);
    const list = byOriginal.get(e.original);
    if (list) {
      if (!e.rows || list.some((o) => !o.rows)) {
        throw new Error(`name map: ${e.original} maps to ${list[0].name} and ${e.name}`);
      }
      list.push(e);
    } else byOriginal.set(e.original, [e]);
  }
  // Fused originals list their parts in row order (q, k, v).
  for (const list of byOriginal.values()) if (list.length > 1) list.sort((a, b) => a.rows![0] - b.rows![0]);
  return { component, prefix, entries, byName, byOriginal, isIgnorable };
}

function unmapped(component: string, name: string): never {
  throw new Error(`name map (${component}): no single-file name for "${name}"`);
}

// ---- UNet ----

const UNET_RESNET_PARTS: Record<string, string> = {
  norm1: "in_layers.0",
  conv1: "in_layers.2",
  time_emb_proj: "emb_layers.1",
  norm2: "out_layers.0",
  conv2: "out_layers.3",
  conv_shortcut: "skip_connection",
};

function unetResnetSuffix(rest: string, name: string): string {
  const dot = rest.indexOf(".");
  const part = UNET_RESNET_PARTS[rest.slice(0, dot)];
  if (!part) unmapped("unet", name);
  return `${part}${rest.slice(dot)}`;
}

/**
 * The LDM name of a diffusers UNet tensor (without the model.diffusion_model. prefix).
 * input_blocks: 0 = conv_in, then per level `layers` blocks of [resnet, attention?] and one downsampler block
 * (except the last level). output_blocks: per up level `layers + 1` blocks of [resnet, attention?, upsampler?].
 */
export function unetOriginalName(c: UNetConfig, name: string): string {
  return unetOriginalNamer(c)(name);
}

/** unetOriginalName with the level bookkeeping done once per config. */
export function unetOriginalNamer(c: UNetConfig): (name: string) => string {
  const { down, up } = unetAttentionLevels(c);
  const downStart: number[] = [];
  let k = 1;
  for (const l of down) {
    downStart.push(k);
    k += l.layers + (l.hasDownsampler ? 1 : 0);
  }
  const upStart: number[] = [];
  k = 0;
  for (const l of up) {
    upStart.push(k);
    k += l.layers;
  }
  const fixed: [RegExp, string][] = [
    [/^conv_in\./, "input_blocks.0.0."],
    [/^time_embedding\.linear_1\./, "time_embed.0."],
    [/^time_embedding\.linear_2\./, "time_embed.2."],
    [/^conv_norm_out\./, "out.0."],
    [/^conv_out\./, "out.2."],
  ];
  return (name) => {
    for (const [re, to] of fixed) if (re.test(name)) return name.replace(re, to);
    let m = name.match(/^down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$/);
    if (m) {
      const idx = downStart[+m[1]] + +m[3];
      return m[2] === "resnets"
        ? `input_blocks.${idx}.0.${unetResnetSuffix(m[4], name)}`
        : `input_blocks.${idx}.1.${m[4]}`;
    }
    m = name.match(/^down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$/);
    if (m) return `input_blocks.${downStart[+m[1]] + down[+m[1]].layers}.0.op.${m[2]}`;
    m = name.match(/^mid_block\.resnets\.([01])\.(.+)$/);
    if (m) return `middle_block.${m[1] === "0" ? 0 : 2}.${unetResnetSuffix(m[2], name)}`;
    m = name.match(/^mid_block\.attentions\.0\.(.+)$/);
    if (m) return `middle_block.1.${m[1]}`;
    m = name.match(/^up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$/);
    if (m) {
      const idx = upStart[+m[1]] + +m[3];
      return m[2] === "resnets"
        ? `output_blocks.${idx}.0.${unetResnetSuffix(m[4], name)}`
        : `output_blocks.${idx}.1.${m[4]}`;
    }
    m = name.match(/^up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$/);
    if (m) {
      const l = up[+m[1]];
      return `output_blocks.${upStart[+m[1]] + l.layers - 1}.${l.hasAttention ? 2 : 1}.conv.${m[2]}`;
    }
    unmapped("unet", name);
  };
}

export function unetNameMap(c: UNetConfig): NameMap {
  const toOriginal = unetOriginalNamer(c);
  const entries = unetTensorSpecs(c).map((t) => ({
    name: t.name,
    shape: t.shape,
    original: UNET_ORIGINAL_PREFIX + toOriginal(t.name),
    originalShape: t.shape,
  }));
  return buildMap("unet", UNET_ORIGINAL_PREFIX, entries);
}

// ---- VAE ----

const VAE_ATTENTION_PARTS: Record<string, string> = {
  group_norm: "norm",
  to_q: "q",
  to_k: "k",
  to_v: "v",
  "to_out.0": "proj_out",
};

/** The LDM name of a diffusers VAE tensor (without the first_stage_model. prefix). */
export function vaeOriginalName(c: VaeConfig, name: string): string {
  const n = c.block_out_channels.length;
  const resnetPart = (s: string) => s.replace(/^conv_shortcut\./, "nin_shortcut.");
  let m = name.match(/^(encoder|decoder)\.conv_norm_out\.(.+)$/);
  if (m) return `${m[1]}.norm_out.${m[2]}`;
  m = name.match(/^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$/);
  if (m) return `encoder.down.${m[1]}.block.${m[2]}.${resnetPart(m[3])}`;
  m = name.match(/^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$/);
  if (m) return `encoder.down.${m[1]}.downsample.conv.${m[2]}`;
  m = name.match(/^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$/);
  if (m) return `decoder.up.${n - 1 - +m[1]}.block.${m[2]}.${resnetPart(m[3])}`;
  m = name.match(/^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$/);
  if (m) return `decoder.up.${n - 1 - +m[1]}.upsample.conv.${m[2]}`;
  m = name.match(/^(encoder|decoder)\.mid_block\.resnets\.([01])\.(.+)$/);
  if (m) return `${m[1]}.mid.block_${+m[2] + 1}.${resnetPart(m[3])}`;
  m = name.match(
    /^(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)$/,
  );
  if (m) return `${m[1]}.mid.attn_1.${VAE_ATTENTION_PARTS[m[2]]}.${m[3]}`;
  if (/^(encoder|decoder)\.(conv_in|conv_out)\.|^(quant_conv|post_quant_conv)\./.test(name)) return name;
  unmapped("vae", name);
}

export function vaeNameMap(c: VaeConfig): NameMap {
  const entries = vaeTensorSpecs(c).map((t) => {
    const original = vaeOriginalName(c, t.name);
    // The original mid-block attention uses 1×1 convs where diffusers has Linear layers: same bytes.
    const isAttnConv = /\.mid\.attn_1\.(q|k|v|proj_out)\.weight$/.test(original);
    return {
      name: t.name,
      shape: t.shape,
      original: VAE_ORIGINAL_PREFIX + original,
      originalShape: isAttnConv ? [...t.shape, 1, 1] : t.shape,
    };
  });
  return buildMap("vae", VAE_ORIGINAL_PREFIX, entries);
}

// ---- CLIP text encoder ----

export interface ClipNameMapOptions {
  /**
   * transformers layout only: old checkpoints store `cond_stage_model.transformer.embeddings.*` /
   * `.encoder.*` without the `text_model.` level.
   */
  withoutTextModelLevel?: boolean;
}

export function clipNameMap(
  c: ClipTextConfig,
  layout: ClipOriginalLayout = "transformers",
  opts: ClipNameMapOptions = {},
): NameMap {
  const specs = clipTensorSpecs(c);
  if (layout === "transformers") {
    const entries = specs.map((t) => {
      if (t.name === "text_projection.weight") unmapped("text_encoder", t.name);
      const rest = opts.withoutTextModelLevel ? t.name.replace(/^text_model\./, "") : t.name;
      return {
        name: t.name,
        shape: t.shape,
        original: CLIP_TRANSFORMERS_PREFIX + rest,
        originalShape: t.shape,
      };
    });
    const positionIds = CLIP_TRANSFORMERS_PREFIX + (opts.withoutTextModelLevel ? "" : "text_model.") +
      "embeddings.position_ids";
    return buildMap("text_encoder", CLIP_TRANSFORMERS_PREFIX, entries, (k) => k === positionIds);
  }
  const h = c.hidden_size;
  const entries = specs.map((t): NameMapEntry => {
    const o = openClipOriginal(t.name, h);
    return {
      name: t.name,
      shape: t.shape,
      original: OPENCLIP_PREFIX + o.name,
      originalShape: o.transpose ? [t.shape[1], t.shape[0]] : o.rows ? [3 * h, ...t.shape.slice(1)] : t.shape,
      ...(o.rows ? { rows: o.rows } : {}),
      ...(o.transpose ? { transpose: true } : {}),
    };
  });
  // SD 2.x files hold OpenCLIP's whole text tower: 24 resblocks of which SD uses 23 (penultimate layer),
  // plus logit_scale and text_projection, which CLIPTextModel does not have.
  const ignorable = (k: string): boolean => {
    if (!k.startsWith(OPENCLIP_PREFIX)) return false;
    const rest = k.slice(OPENCLIP_PREFIX.length);
    if (rest === "logit_scale" || rest === "attn_mask") return true;
    if (rest === "text_projection") return !c.with_projection;
    const m = rest.match(/^transformer\.resblocks\.(\d+)\./);
    return m !== null && +m[1] >= c.num_hidden_layers;
  };
  return buildMap("text_encoder", OPENCLIP_PREFIX, entries, ignorable);
}

const OPENCLIP_LAYER_PARTS: Record<string, string> = {
  "self_attn.out_proj": "attn.out_proj",
  layer_norm1: "ln_1",
  layer_norm2: "ln_2",
  "mlp.fc1": "mlp.c_fc",
  "mlp.fc2": "mlp.c_proj",
};

function openClipOriginal(
  name: string,
  h: number,
): { name: string; rows?: [number, number]; transpose?: boolean } {
  switch (name) {
    case "text_model.embeddings.token_embedding.weight":
      return { name: "token_embedding.weight" };
    case "text_model.embeddings.position_embedding.weight":
      return { name: "positional_embedding" };
    case "text_model.final_layer_norm.weight":
      return { name: "ln_final.weight" };
    case "text_model.final_layer_norm.bias":
      return { name: "ln_final.bias" };
    case "text_projection.weight":
      return { name: "text_projection", transpose: true };
  }
  let m = name.match(/^text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$/);
  if (m) {
    const part = "qkv".indexOf(m[2]);
    return {
      name: `transformer.resblocks.${m[1]}.attn.in_proj_${m[3]}`,
      rows: [part * h, (part + 1) * h],
    };
  }
  m = name.match(
    /^text_model\.encoder\.layers\.(\d+)\.(self_attn\.out_proj|layer_norm1|layer_norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)$/,
  );
  if (m) return { name: `transformer.resblocks.${m[1]}.${OPENCLIP_LAYER_PARTS[m[2]]}.${m[3]}` };
  unmapped("text_encoder (OpenCLIP)", name);
}

/** The name map of a component in a single-file checkpoint. */
export function nameMap(component: "unet", config: UNetConfig): NameMap;
export function nameMap(component: "vae", config: VaeConfig): NameMap;
export function nameMap(
  component: "text_encoder",
  config: ClipTextConfig,
  layout?: ClipOriginalLayout,
  opts?: ClipNameMapOptions,
): NameMap;
export function nameMap(
  component: ComponentKind,
  config: UNetConfig | VaeConfig | ClipTextConfig,
  layout: ClipOriginalLayout = "transformers",
  opts: ClipNameMapOptions = {},
): NameMap {
  switch (component) {
    case "unet":
      return unetNameMap(config as UNetConfig);
    case "vae":
      return vaeNameMap(config as VaeConfig);
    case "text_encoder":
      return clipNameMap(config as ClipTextConfig, layout, opts);
  }
}
