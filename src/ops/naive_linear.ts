import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import type { Tensor } from "../gpu/tensor.ts";
const EPI = { none: 0, gelu: 1, gelu_tanh: 2, quick_gelu: 3, silu: 4 } as const;
export function linear(
  gpu: Gpu,
  p: {
    x: Tensor;
    weight: Tensor;
    bias?: Tensor;
    out: Tensor;
    residual?: Tensor;
    activation?: keyof typeof EPI;
    act: ActDType;
  },
): Dispatch[] {
  const [N, K] = p.weight.shape;
  const M = p.x.numel / K;
  const flags = (p.bias ? 1 : 0) | (p.residual ? 2 : 0) | (EPI[p.activation ?? "none"] << 4);
  const u = gpu.uniform(new Uint32Array([M, N, K, flags]));
  const pl = gpu.kernel("naive", { ACT: p.act }, "linear");
  const dummy = p.out.buffer;
  const g = Math.ceil(M * N / 64);
  const gx = Math.min(g, 65535);
  return [
    gpu.dispatch(pl, [
      p.x.buffer,
      p.weight.buffer,
      (p.bias ?? p.weight).buffer,
      (p.residual ?? p.x).buffer,
      dummy,
      u,
    ], [gx, Math.ceil(g / gx)]),
  ];
}
export function geglu(
  gpu: Gpu,
  p: { x: Tensor; weight: Tensor; bias: Tensor; out: Tensor; act: ActDType },
): Dispatch[] {
  const [N2, K] = p.weight.shape;
  const N = N2 / 2;
  const M = p.x.numel / K;
  const u = gpu.uniform(new Uint32Array([M, N, K, 1]));
  const pl = gpu.kernel("naive", { ACT: p.act }, "geglu");
  const g = Math.ceil(M * N / 64);
  const gx = Math.min(g, 65535);
  return [
    gpu.dispatch(pl, [p.x.buffer, p.weight.buffer, p.bias.buffer, p.x.buffer, p.out.buffer, u], [
      gx,
      Math.ceil(g / gx),
    ]),
  ];
}
