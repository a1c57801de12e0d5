// Attention modules: diffusers' Attention (UNet attn1/attn2, the VAE's mid-block attention) and CLIP's
// self-attention share one forward, q/k/v projections → flash-style attention → output projection with a
// fused residual. Only the module names and the bias layout differ.

import type { ModelBuilder, Value } from "../builder.ts";
import type { WeightDecl } from "../declare.ts";

type Projection = "q" | "k" | "v" | "out";

export interface AttentionLayout {
  /** Module names of the four projections. */
  names: Record<Projection, string>;
  /** Registration order of the projections (state-dict order). */
  order: readonly Projection[];
  /** Whether q, k and v carry biases (the output projection always does). */
  qkvBias: boolean;
}

/** diffusers' Attention: to_q, to_k, to_v (no bias in the UNet), to_out.0. */
export const DIFFUSERS_ATTENTION: AttentionLayout = {
  names: { q: "to_q", k: "to_k", v: "to_v", out: "to_out.0" },
  order: ["q", "k", "v", "out"],
  qkvBias: false,
};

/** The VAE's attention: diffusers' layout with q/k/v biases. */
export const VAE_ATTENTION: AttentionLayout = { ...DIFFUSERS_ATTENTION, qkvBias: true };

/** transformers' CLIPAttention: k_proj, v_proj, q_proj, out_proj, all with biases. */
export const CLIP_ATTENTION: AttentionLayout = {
  names: { q: "q_proj", k: "k_proj", v: "v_proj", out: "out_proj" },
  order: ["k", "v", "q", "out"],
  qkvBias: true,
};

/** `dim`: query and output width; `kvDim`: width of the context k and v project from (cross-attention). */
export function declareAttention(d: WeightDecl, layout: AttentionLayout, dim: number, kvDim = dim): void {
  for (const p of layout.order) {
    if (p === "out") d.linear(layout.names.out, dim, dim);
    else d.linear(layout.names[p], dim, p === "q" ? dim : kvDim, layout.qkvBias);
  }
}

/**
 * x [B, N, C] attends to `context` [B, T, Ckv] (default: itself); the result is added to `residual` in the
 * output projection's epilogue.
 */
export function attention(
  b: ModelBuilder,
  x: Value,
  o: {
    layout: AttentionLayout;
    heads: number;
    headDim: number;
    context?: Value;
    causal?: boolean;
    residual?: Value;
  },
): Value {
  const n = o.layout.names;
  const kv = o.context ?? x;
  // Joint: projections of the same tokens are one GEMM (q, k and v of a self-attention; k and v over the
  // context, together with every other cross-attention's, which all read the same context).
  const q = b.linear(n.q, x, { joint: true });
  const k = b.linear(n.k, kv, { joint: true });
  const v = b.linear(n.v, kv, { joint: true });
  const a = b.attention(q, k, v, { heads: o.heads, headDim: o.headDim, causal: o.causal });
  return b.linear(n.out, a, { residual: o.residual });
}

/** The VAE mid block's attention: GroupNorm, then one head over all H·W positions, plus the input. */
export function declareSpatialSelfAttention(d: WeightDecl, channels: number): void {
  d.norm("group_norm", channels);
  declareAttention(d, VAE_ATTENTION, channels);
}

export function spatialSelfAttention(b: ModelBuilder, x: Value, o: { groups: number; eps: number }): Value {
  const [B, H, W, C] = x.shape;
  const n = b.groupNorm("group_norm", x, { groups: o.groups, eps: o.eps, silu: false });
  const tokens = (v: Value) => v.view([B, H * W, C]);
  const out = attention(b, tokens(n), { layout: VAE_ATTENTION, heads: 1, headDim: C, residual: tokens(x) });
  return out.view([B, H, W, C]);
}
