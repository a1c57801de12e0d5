// conv2d over NHWC activations as an implicit GEMM (shaders/conv.wgsl), sharing the operand packing, tiling
// table and tile code generator of the linear GEMM (src/ops/linear.ts).
//
// Weight layout: the checkpoint weight [Cout, Cin, kh, kw] f16 is repacked once by `prepareConvWeight` into
// [Cout, kh·kw, CinP/8] texels of 8 f16 input channels each, CinP = Cin rounded up to a multiple of 8 with
// zero channels. So K = (ky, kx, cin) is contiguous in cin, matching NHWC input pixels, and any Cin (3, 4,
// 37, ...) works. In texture mode (llvmpipe) the packed weight is a texture; in buffer mode a buffer. The
// input is packed per call the same way (pixels × CinP), except in buffer mode when Cin % 8 == 0, where the
// NHWC tensor is read directly.
//
// Output: out = (conv(x) + bias[c] + timeBias[b, c] + residual) / outputScaleFactor
// (diffusers ResnetBlock2D adds the time embedding after conv1 and divides (shortcut + conv2) by
// output_scale_factor, 1 for SD).

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType, ShaderDefines } from "../gpu/pipelines.ts";
import type { Tensor } from "../gpu/tensor.ts";
import {
  activationOperand,
  checkAct,
  checkBinding,
  checkDistinct,
  checkDType,
  createOperand,
  fitShared,
  type GemmTiling,
  gemmTiling,
  makeDispatch,
  resolveTiling,
  type Resource,
  storageOf,
  tileCode,
  xRowTexels,
} from "./linear.ts";

/** A conv weight repacked to [Cout, kh·kw, CinP/8] texels (see the header). */
export interface ConvWeight {
  readonly kind: "conv-weight";
  readonly cout: number;
  readonly cin: number;
  readonly kh: number;
  readonly kw: number;
  /** k-steps (8 input channels each) per tap: ceil(Cin / 8). */
  readonly c8: number;
  readonly storage: "texture" | "buffer";
  readonly operand: Resource;
}

/**
 * Repacks a checkpoint conv weight [Cout, Cin, kh, kw] f16 (one dispatch, submitted immediately). The
 * original tensor is not referenced afterwards and may be destroyed.
 */
export function prepareConvWeight(gpu: Gpu, weight: Tensor, mode?: GemmTiling["mode"]): ConvWeight {
  const op = `prepareConvWeight${weight.label ? ` ${weight.label}` : ""}`;
  if (weight.shape.length !== 4) {
    throw new Error(`${op}: weight must be [Cout, Cin, kh, kw], got [${weight.shape}]`);
  }
  checkDType(weight, "f16", "weight", op);
  const [cout, cin, kh, kw] = weight.shape;
  const storage = storageOf(mode ?? gemmTiling(gpu).tiling.mode);
  const c8 = Math.ceil(cin / 8);
  const taps = kh * kw;
  const total = cout * taps * c8;
  const dst = createOperand(gpu, storage, total, `${weight.label || "conv weight"} packed`);
  const pipeline = gpu.kernel(
    "conv",
    { PACK_CONV_WEIGHT: true, TEX: storage === "texture" },
    "pack_conv_weight",
  );
  const params = gpu.uniform(new Uint32Array([cin, taps, c8, total]), `${op} params`);
  gpu.run(
    [makeDispatch(gpu, pipeline, [weight.buffer, dst.resource, params], Math.ceil(total / 64), op)],
    op,
  );
  return { kind: "conv-weight", cout, cin, kh, kw, c8, storage, operand: dst.resource };
}

export interface Conv2dParams {
  /** [B, H, W, Cin] */
  x: Tensor;
  weight: ConvWeight;
  /** [Cout] f16 */
  bias?: Tensor;
  /** [B, Ho, Wo, Cout] */
  out: Tensor;
  stride: 1 | 2;
  /**
   * "same": (k-1)/2 zeros on every side (3×3 → 1, 1×1 → 0).
   * "vae_down": diffusers VAE-encoder Downsample2D, F.pad(x, (0, 1, 0, 1)) then an unpadded conv.
   */
  padding: "same" | "vae_down";
  /** [B, Cout] act, added to every pixel of batch item b (ResnetBlock2D time embedding). */
  timeBias?: Tensor;
  /** [B, Ho, Wo, Cout] act, added before the output scale. */
  residual?: Tensor;
  /** Divides the result (diffusers output_scale_factor; default 1). */
  outputScaleFactor?: number;
  act: ActDType;
  tiling?: Partial<GemmTiling>;
  label?: string;
}

/** Output size of a conv along one axis. */
export function convOutSize(
  size: number,
  k: number,
  stride: number,
  padBefore: number,
  padAfter: number,
): number {
  return Math.floor((size + padBefore + padAfter - k) / stride) + 1;
}

export function convPadding(padding: Conv2dParams["padding"], kh: number, kw: number) {
  if (padding === "same") {
    if (kh % 2 === 0 || kw % 2 === 0) throw new Error(`"same" padding needs odd kernels, got ${kh}×${kw}`);
    return { top: (kh - 1) / 2, bottom: (kh - 1) / 2, left: (kw - 1) / 2, right: (kw - 1) / 2 };
  }
  if (padding === "vae_down") return { top: 0, bottom: 1, left: 0, right: 1 };
  throw new Error(`unknown conv padding "${padding}"`);
}

/** Implicit-GEMM conv2d. Returns [pack x (when needed), conv]. */
export function conv2d(gpu: Gpu, p: Conv2dParams): Dispatch[] {
  const op = `conv2d${p.label ? ` ${p.label}` : ""}`;
  checkAct(gpu, p.act, op);
  const tiling = resolveTiling(gpu, p.tiling);
  const w = p.weight;
  if (w?.kind !== "conv-weight") throw new Error(`${op}: weight must come from prepareConvWeight`);
  if (w.storage !== storageOf(tiling.mode)) {
    throw new Error(
      `${op}: weight was prepared for ${w.storage} operands, tiling "${tiling.mode}" reads ${
        storageOf(tiling.mode)
      }`,
    );
  }
  if (p.stride !== 1 && p.stride !== 2) throw new Error(`${op}: stride must be 1 or 2, got ${p.stride}`);
  if (p.x.shape.length !== 4) throw new Error(`${op}: x must be NHWC [B, H, W, C], got [${p.x.shape}]`);
  const [B, H, W, cin] = p.x.shape;
  if (cin !== w.cin) throw new Error(`${op}: x has ${cin} channels, weight expects ${w.cin}`);
  const pad = convPadding(p.padding, w.kh, w.kw);
  const ho = convOutSize(H, w.kh, p.stride, pad.top, pad.bottom);
  const wo = convOutSize(W, w.kw, p.stride, pad.left, pad.right);
  if (ho < 1 || wo < 1) throw new Error(`${op}: input ${H}×${W} is too small for a ${w.kh}×${w.kw} kernel`);
  const outShape = [B, ho, wo, w.cout];
  if (p.out.shape.length !== 4 || p.out.shape.some((d, i) => d !== outShape[i])) {
    throw new Error(`${op}: out is [${p.out.shape}], expected [${outShape}] for x [${p.x.shape}]`);
  }
  checkDType(p.x, p.act, "x", op);
  checkDType(p.out, p.act, "out", op);
  if (p.bias) {
    checkDType(p.bias, "f16", "bias", op);
    if (p.bias.numel !== w.cout) throw new Error(`${op}: bias [${p.bias.shape}] must have ${w.cout} values`);
  }
  if (p.timeBias) {
    checkDType(p.timeBias, p.act, "timeBias", op);
    if (p.timeBias.numel !== B * w.cout) {
      throw new Error(`${op}: timeBias [${p.timeBias.shape}] must be [${B}, ${w.cout}]`);
    }
  }
  if (p.residual) {
    checkDType(p.residual, p.act, "residual", op);
    if (p.residual.numel !== p.out.numel) {
      throw new Error(`${op}: residual [${p.residual.shape}] must match out`);
    }
  }
  const scaleFactor = p.outputScaleFactor ?? 1;
  if (!(scaleFactor > 0) || !Number.isFinite(scaleFactor)) {
    throw new Error(`${op}: outputScaleFactor must be a positive number, got ${scaleFactor}`);
  }
  for (
    const [what, t] of [["x", p.x], ["out", p.out], ["residual", p.residual], [
      "timeBias",
      p.timeBias,
    ]] as const
  ) {
    if (t) checkBinding(gpu, t, what, op);
  }
  checkDistinct(op, p.out, { x: p.x, residual: p.residual, timeBias: p.timeBias });

  const { tm, tn, wg, mode } = fitShared(gpu, tiling, 1);
  const shared = mode === "shared";
  const xPack = activationOperand(gpu, p.x, B * H * W, cin, p.act, mode, op);
  const m = B * ho * wo;
  const n = w.cout;
  const vecOut = n % 4 === 0;
  const code = shared
    ? { SHARED: true, SHARED_A: 32 * (16 * tm + 1) }
    : tileCode({ tm, tn, xf16: p.act === "f16", conv: true });
  const defines: ShaderDefines = {
    CONV: true,
    ACT: p.act,
    XF16: p.act === "f16",
    TEX: mode === "texture",
    VEC_OUT: vecOut,
    HAS_BIAS: !!p.bias,
    HAS_TIME_BIAS: !!p.timeBias,
    HAS_RESIDUAL: !!p.residual,
    TM: tm,
    TN: tn,
    WG: wg,
    ...code,
  };
  const tilesN = Math.ceil(n / tn);
  const tiles = tilesN * Math.ceil(m / tm);
  const words = new Uint32Array(16);
  words.set([m, n, w.c8, tilesN, tiles, xRowTexels(cin, p.act), w.kh * w.kw, w.kw]);
  words.set([H, W, wo, ho * wo, p.stride, pad.top, pad.left], 8);
  new Float32Array(words.buffer)[15] = 1 / scaleFactor;
  const resources: Resource[] = [xPack.operand, w.operand, p.out.buffer, gpu.uniform(words, `${op} params`)];
  if (p.bias) {
    defines.BIAS_BINDING = resources.length;
    resources.push(p.bias.buffer);
  }
  if (p.timeBias) {
    defines.TIME_BIAS_BINDING = resources.length;
    resources.push(p.timeBias.buffer);
  }
  if (p.residual) {
    defines.RESIDUAL_BINDING = resources.length;
    resources.push(p.residual.buffer);
  }
  const pipeline = gpu.kernel("conv", defines, shared ? "conv_shared" : "conv");
  const grid: number | [number, number] = shared
    ? [Math.ceil(n / 64), Math.ceil(m / (16 * tm))]
    : Math.ceil(tiles / wg);
  return [...xPack.dispatches, makeDispatch(gpu, pipeline, resources, grid, op)];
}
