// ResnetBlock2D (diffusers), shared by the UNet (with a time embedding) and the VAE (without):
// GN+SiLU → conv1 (+ time bias) → GN+SiLU → conv2 (+ shortcut). Dropout is inference's identity.

import type { ModelBuilder, Value } from "../builder.ts";
import type { WeightDecl } from "../declare.ts";

export interface ResnetOptions {
  groups: number;
  eps: number;
}

/** `tembDim`: the time-embedding width, or null for a resnet without one (the VAE's). */
export function declareResnet(d: WeightDecl, inC: number, outC: number, tembDim: number | null): void {
  d.norm("norm1", inC);
  d.conv("conv1", outC, inC, 3);
  if (tembDim !== null) d.linear("time_emb_proj", outC, tembDim);
  d.norm("norm2", outC);
  d.conv("conv2", outC, outC, 3);
  if (inC !== outC) d.conv("conv_shortcut", outC, inC, 1);
}

/**
 * x [B, H, W, Cin] → [B, H, W, Cout]. `tembAct` [B, T] is SiLU(time embedding), computed once per UNet call
 * since every resnet applies the same SiLU before its time_emb_proj.
 */
export function resnet(b: ModelBuilder, x: Value, o: ResnetOptions, tembAct?: Value): Value {
  const norm = { groups: o.groups, eps: o.eps, silu: true };
  // Each norm is recorded right before the conv that reads it, so that it writes that conv's input operand
  // (models/graph.ts compileGraph; ops/operand.ts).
  // Every resnet projects the same SiLU(time embedding): one joint GEMM for all of them.
  const timeBias = tembAct ? b.linear("time_emb_proj", tembAct, { joint: true }) : undefined;
  let h = b.conv("conv1", b.groupNorm("norm1", x, norm), { timeBias });
  const shortcut = b.has("conv_shortcut.weight") ? b.conv("conv_shortcut", x) : x;
  h = b.groupNorm("norm2", h, norm);
  return b.conv("conv2", h, { residual: shortcut });
}
