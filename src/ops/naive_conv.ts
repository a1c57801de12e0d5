import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import type { Tensor } from "../gpu/tensor.ts";
export interface ConvWeight {
  weight: Tensor;
  cout: number;
  cin: number;
  k: number;
}
export function prepareConvWeight(_gpu: Gpu, weight: Tensor): ConvWeight {
  const [cout, cin, k] = weight.shape;
  return { weight, cout, cin, k };
}
export function conv2d(
  gpu: Gpu,
  p: {
    x: Tensor;
    weight: ConvWeight;
    bias?: Tensor;
    out: Tensor;
    stride: 1 | 2;
    padding: "same" | "vae_down";
    timeBias?: Tensor;
    residual?: Tensor;
    act: ActDType;
  },
): Dispatch[] {
  const [B, H, W, Cin] = p.x.shape;
  const [, Ho, Wo, Cout] = p.out.shape;
  const pad = p.weight.k === 1 ? 0 : p.padding === "same" ? 1 : 0;
  const flags = (p.bias ? 1 : 0) | (p.residual ? 2 : 0) | (p.timeBias ? 4 : 0);
  const u = gpu.uniform(new Uint32Array([B, H, W, Cin, Ho, Wo, Cout, p.stride, pad, pad, p.weight.k, flags]));
  const pl = gpu.kernel("naive_conv", { ACT: p.act });
  const total = B * Ho * Wo * Cout;
  const g = Math.ceil(total / 64);
  const gx = Math.min(g, 65535);
  return [
    gpu.dispatch(pl, [
      p.x.buffer,
      p.weight.weight.buffer,
      (p.bias ?? p.weight.weight).buffer,
      (p.residual ?? p.x).buffer,
      (p.timeBias ?? p.x).buffer,
      p.out.buffer,
      u,
    ], [gx, Math.ceil(g / gx)]),
  ];
}
