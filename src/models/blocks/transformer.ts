// Transformer2DModel and BasicTransformerBlock (diffusers), the UNet's spatial transformer:
// GN → proj_in → [LN → self-attn, LN → cross-attn, LN → GEGLU FF, each + residual] × n → proj_out (+ input).

import type { ModelBuilder, Value } from "../builder.ts";
import type { WeightDecl } from "../declare.ts";
import { attention, declareAttention, DIFFUSERS_ATTENTION } from "./attention.ts";

export interface TransformerShape {
  channels: number;
  heads: number;
  headDim: number;
  /** BasicTransformerBlocks in the model. */
  transformerLayers: number;
  crossAttentionDim: number;
}

/** The spatial transformer's GroupNorm and the blocks' LayerNorms use diffusers' fixed epsilons. */
const GROUP_NORM_EPS = 1e-6;
const LAYER_NORM_EPS = 1e-5;

/** `linearProjection`: proj_in/proj_out are Linear (SD 2.x) rather than 1×1 convs (SD 1.x). */
export function declareTransformer2d(d: WeightDecl, s: TransformerShape, linearProjection: boolean): void {
  const inner = s.heads * s.headDim;
  d.norm("norm", s.channels);
  if (linearProjection) d.linear("proj_in", inner, s.channels);
  else d.conv("proj_in", inner, s.channels, 1);
  for (let t = 0; t < s.transformerLayers; t++) {
    const block = d.at("transformer_blocks", t);
    block.norm("norm1", inner);
    declareAttention(block.at("attn1"), DIFFUSERS_ATTENTION, inner);
    block.norm("norm2", inner);
    declareAttention(block.at("attn2"), DIFFUSERS_ATTENTION, inner, s.crossAttentionDim);
    block.norm("norm3", inner);
    block.linear("ff.net.0.proj", inner * 4 * 2, inner); // GEGLU: value and gate halves
    block.linear("ff.net.2", inner, inner * 4);
  }
  if (linearProjection) d.linear("proj_out", s.channels, inner);
  else d.conv("proj_out", s.channels, inner, 1);
}

/** x [B, H, W, C], context [B, T, Ccross] → [B, H, W, C]. */
export function transformer2d(
  b: ModelBuilder,
  x: Value,
  context: Value,
  o: { groups: number; heads: number; headDim: number; layers: number },
): Value {
  const [B, H, W, C] = x.shape;
  const tokens = (v: Value) => v.view([B, H * W, C]);
  const n = b.groupNorm("norm", x, { groups: o.groups, eps: GROUP_NORM_EPS, silu: false });
  // proj_in is a 1×1 conv [C, C, 1, 1] (SD 1.x) or a Linear [C, C] (SD 2.x): the same GEMM over tokens.
  let h = b.linear("proj_in", tokens(n));
  for (let l = 0; l < o.layers; l++) {
    h = basicTransformerBlock(b.at("transformer_blocks", l), h, context, o.heads, o.headDim);
  }
  return b.linear("proj_out", h, { residual: tokens(x) }).view([B, H, W, C]);
}

function basicTransformerBlock(b: ModelBuilder, h: Value, context: Value, heads: number, headDim: number) {
  const layout = DIFFUSERS_ATTENTION;
  h = attention(b.at("attn1"), b.layerNorm("norm1", h, LAYER_NORM_EPS), {
    layout,
    heads,
    headDim,
    residual: h,
  });
  h = attention(b.at("attn2"), b.layerNorm("norm2", h, LAYER_NORM_EPS), {
    layout,
    heads,
    headDim,
    context,
    residual: h,
  });
  const gated = b.geglu("ff.net.0.proj", b.layerNorm("norm3", h, LAYER_NORM_EPS));
  return b.linear("ff.net.2", gated, { residual: h });
}
