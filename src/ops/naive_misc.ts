import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import type { Tensor } from "../gpu/tensor.ts";
function u(gpu: Gpu, a: number, b: number, c: number, d: number, e: number, f = 0) {
  const buf = new ArrayBuffer(32);
  const U = new Uint32Array(buf);
  const F = new Float32Array(buf);
  U[0] = a;
  U[1] = b;
  U[2] = c;
  U[3] = d;
  F[4] = e;
  U[5] = f;
  return gpu.uniform(U);
}
function disp(gpu: Gpu, entry: string, act: ActDType, bufs: GPUBuffer[], n: number): Dispatch[] {
  const pl = gpu.kernel("naive_misc", { ACT: act }, entry);
  const g = Math.ceil(n / 64);
  const gx = Math.min(g, 65535);
  const all = [...bufs];
  while (all.length < 7) all.push(bufs[0]);
  return [gpu.dispatch(pl, all, [gx, Math.ceil(g / gx)])];
}
export function groupNorm(
  gpu: Gpu,
  p: {
    x: Tensor;
    gamma: Tensor;
    beta: Tensor;
    out: Tensor;
    groups: number;
    eps: number;
    silu: boolean;
    act: ActDType;
  },
) {
  const [B, H, W, C] = p.x.shape;
  return disp(gpu, "groupnorm", p.act, [
    p.x.buffer,
    p.x.buffer,
    p.gamma.buffer,
    p.beta.buffer,
    p.out.buffer,
    u(gpu, B, H * W, C, p.groups, p.eps, p.silu ? 1 : 0),
  ], B * p.groups);
}
export function layerNorm(
  gpu: Gpu,
  p: { x: Tensor; gamma: Tensor; beta: Tensor; out: Tensor; eps: number; act: ActDType },
) {
  const C = p.x.shape[p.x.shape.length - 1];
  const M = p.x.numel / C;
  return disp(gpu, "layernorm", p.act, [
    p.x.buffer,
    p.x.buffer,
    p.gamma.buffer,
    p.beta.buffer,
    p.out.buffer,
    u(gpu, M, 0, C, 0, p.eps),
  ], M);
}
export function silu(gpu: Gpu, p: { x: Tensor; out: Tensor; act: ActDType }) {
  return disp(gpu, "silu", p.act, [
    p.x.buffer,
    p.x.buffer,
    p.x.buffer,
    p.x.buffer,
    p.out.buffer,
    u(gpu, p.x.numel, 0, 0, 0, 0),
  ], p.x.numel);
}
export function concatChannels(gpu: Gpu, p: { a: Tensor; b: Tensor; out: Tensor; act: ActDType }) {
  const C1 = p.a.shape[3], C2 = p.b.shape[3];
  const px = p.a.numel / C1;
  return disp(gpu, "concat", p.act, [
    p.a.buffer,
    p.b.buffer,
    p.a.buffer,
    p.a.buffer,
    p.out.buffer,
    u(gpu, px, C1, C2, 0, 0),
  ], px * (C1 + C2));
}
export function upsampleNearest2x(gpu: Gpu, p: { x: Tensor; out: Tensor; act: ActDType }) {
  const [B, H, W, C] = p.x.shape;
  return disp(gpu, "upsample", p.act, [
    p.x.buffer,
    p.x.buffer,
    p.x.buffer,
    p.x.buffer,
    p.out.buffer,
    u(gpu, B, H, W, C, 0),
  ], p.out.numel);
}
export function timestepEmbedding(
  gpu: Gpu,
  p: { timesteps: Tensor; out: Tensor; flipSinToCos: boolean; freqShift: number; act: ActDType },
) {
  const [B, D] = p.out.shape;
  const dummy = p.out.buffer;
  return disp(gpu, "tproj", p.act, [
    p.timesteps.buffer,
    p.timesteps.buffer,
    p.timesteps.buffer,
    p.timesteps.buffer,
    dummy,
    u(gpu, B, D, p.flipSinToCos ? 1 : 0, 0, p.freqShift),
    p.timesteps.buffer,
  ], B * D);
}
