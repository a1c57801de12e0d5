// conv2d over NHWC activations as an implicit GEMM (shaders/conv.wgsl), sharing the operand packing, tiling
// table and tile code generator of the linear GEMM (src/ops/gemm.ts, src/ops/gemm_tile.ts).
//
// Weight layout: the checkpoint weight [Cout, Cin, kh, kw] f16 is repacked once by `prepareConvWeight` into
// [Cout, kh·kw, CinP/8] texels of 8 f16 input channels each, CinP = Cin rounded up to a multiple of 8 with
// zero channels. So K = (ky, kx, cin) is contiguous in cin, matching NHWC input pixels, and any Cin (3, 4,
// 37, ...) works. In texture mode (llvmpipe) the packed weight is a texture; in buffer mode a buffer. The
// input is packed per call the same way (pixels × CinP), except in buffer mode when Cin % 8 == 0, where the
// NHWC tensor is read directly.
//
// Output: out = relu?((conv(x) + bias[c] + timeBias[b, c] + residual) / outputScaleFactor + outputShift)
// (diffusers ResnetBlock2D adds the time embedding after conv1 and divides (shortcut + conv2) by
// output_scale_factor, 1 for SD; TAESD applies ReLU after its convs and after each block's residual sum,
// and maps its output with ·2 − 1 = outputScaleFactor 0.5, outputShift −1). Fused, a ReLU costs nothing
// measurable; as its own pass over a [1, 256, 256, 64] f16 map it measured 13.5 ms on lavapipe (2 shared
// cores), about 4 % of the 250–350 ms of the 64→64 3×3 conv that produces it, on 30 of TAESD's 33 convs.
//
// Maps larger than one storage binding (VAE decoder at 512²: [1, 512, 512, 256] f32 = 256 MiB), or whose
// packed input would not fit one operand texture, run in row bands (batch 1): each band computes a range
// of output rows into its window of out/residual, reading a window of x that holds just the input rows the
// band needs (in texture mode those rows are packed into the scratch texture). The kernel keeps global
// coordinates, so zero padding applies only at the real image border and banded results equal unbanded
// ones bit for bit.

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType, ShaderDefines } from "../gpu/pipelines.ts";
import { bytesPerElement, numel, type Tensor } from "../gpu/tensor.ts";
import { bindingLimit, type RowBand, rowBands, wholeOf, windowOf } from "./bands.ts";
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
  packRows,
  resolveTiling,
  type Resource,
  scratchOperand,
  storageOf,
  TEXTURE_WIDTH,
  xRowTexels,
} from "./gemm.ts";
import { tileCode } from "./gemm_tile.ts";
import { checkPackedInput, type PackedActivations } from "./operand.ts";
import { convKey } from "./tuning.ts";

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
  readonly operand: GPUBuffer | GPUTextureView;
  /** The texture behind `operand` in texture mode (for memory accounting and destroy). */
  readonly texture?: GPUTexture;
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
  return { kind: "conv-weight", cout, cin, kh, kw, c8, storage, operand: dst.resource, texture: dst.texture };
}

export interface Conv2dParams {
  /** [B, H, W, Cin], or the same already packed as x texels (ops/operand.ts; only where no row bands are needed) */
  x: Tensor | PackedActivations;
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
  /**
   * [B, Cout] act, added to every pixel of batch item b (ResnetBlock2D time embedding); or Cout columns from
   * `offset` of a wider [B, rowStride] tensor (one GEMM computes every resnet's time_emb_proj).
   */
  timeBias?: Tensor | { tensor: Tensor; offset: number; rowStride: number };
  /** [B, Ho, Wo, Cout] act, added before the output scale. */
  residual?: Tensor;
  /** Divides the result (diffusers output_scale_factor; default 1). */
  outputScaleFactor?: number;
  /** Added after the division (default 0). */
  outputShift?: number;
  /** max(·, 0) on the result, after everything else (TAESD's ReLUs, fused). */
  relu?: boolean;
  act: ActDType;
  tiling?: Partial<GemmTiling>;
  label?: string;
  /**
   * Storage binding limit to split at (tests force small bands with it); defaults to gpu.maxBinding. When x,
   * out or residual is larger, the conv runs in row bands, which needs batch 1.
   */
  maxBindingBytes?: number;
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

/** A conv's input as a producer would write it (ops/operand.ts). */
export interface ConvInput {
  x: readonly number[];
  /** [Cout, Cin, kh, kw] */
  weight: readonly number[];
  stride: 1 | 2;
  padding: Conv2dParams["padding"];
  residual: boolean;
  act: ActDType;
}

/**
 * Whether a producer should write this conv's input as its operand (ops/operand.ts): the conv packs x as a
 * whole (texture operands; not in row bands, where each band packs its own window) and a producer can write
 * the texels (Cin % 8 == 0). Pure (no GPU work), so plans can be sized ahead.
 */
export function convTakesPackedInput(gpu: Gpu, o: ConvInput): boolean {
  const mode = resolveTiling(gpu).mode;
  const [B, H, W, cin] = o.x;
  const [cout, , kh, kw] = o.weight;
  if (cin % 8 !== 0 || storageOf(mode) === "buffer") return false;
  const pad = convPadding(o.padding, kh, kw);
  const ho = convOutSize(H, kh, o.stride, pad.top, pad.bottom);
  const wo = convOutSize(W, kw, o.stride, pad.left, pad.right);
  const bpe = bytesPerElement(o.act);
  const out = B * ho * wo * cout * bpe;
  const bytes = { x: numel(o.x) * bpe, out, residual: o.residual ? out : undefined };
  const g: ConvGeometry = { B, H, W, cin, ho, wo, cout, kh, stride: o.stride, padTop: pad.top };
  return !needsBands(gpu, bytes, g, xRowTexels(cin, o.act), storageOf(mode), bindingLimit(gpu));
}

/** Where a producer writes the conv's input (see convTakesPackedInput): the scratch operand the conv packs into. */
export function convInputOperand(gpu: Gpu, o: ConvInput): PackedActivations {
  const [B, H, W, cin] = o.x;
  const texels = B * H * W * xRowTexels(cin, o.act);
  return { operand: scratchOperand(gpu, resolveTiling(gpu).mode, texels), shape: o.x, act: o.act };
}

/**
 * Implicit-GEMM conv2d. Returns [pack x (when needed), conv], or that pair per row band when a tensor is
 * larger than one storage binding (see the header).
 */
export function conv2d(gpu: Gpu, p: Conv2dParams): Dispatch[] {
  const op = `conv2d${p.label ? ` ${p.label}` : ""}`;
  checkAct(gpu, p.act, op);
  const w = p.weight;
  if (w?.kind !== "conv-weight") throw new Error(`${op}: weight must come from prepareConvWeight`);
  // Without an override, the autotuner's pick for this shape; split-K is a linear-only kernel, so a forced
  // split-K tile runs convs as the plain register tile.
  const key = p.x.shape.length === 4
    ? convKey(p.x.shape[1], p.x.shape[2], w.cin, w.cout, w.kh, p.stride, p.padding, p.act)
    : undefined;
  const tiling = { ...resolveTiling(gpu, p.tiling, p.tiling ? undefined : key), splitK: false };
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
  const xTensor = "operand" in p.x ? undefined : p.x;
  if (xTensor) checkDType(xTensor, p.act, "x", op);
  else checkPackedInput(p.x as PackedActivations, cin, p.act, tiling.mode, op);
  checkDType(p.out, p.act, "out", op);
  if (p.bias) {
    checkDType(p.bias, "f16", "bias", op);
    if (p.bias.numel !== w.cout) throw new Error(`${op}: bias [${p.bias.shape}] must have ${w.cout} values`);
  }
  const timeBias = p.timeBias &&
    ("offset" in p.timeBias
      ? p.timeBias
      : { tensor: p.timeBias, offset: 0, rowStride: p.timeBias.shape[p.timeBias.shape.length - 1] });
  if (timeBias) {
    const t = timeBias.tensor;
    checkDType(t, p.act, "timeBias", op);
    const fits = timeBias.offset >= 0 && timeBias.offset + w.cout <= timeBias.rowStride &&
      t.numel === B * timeBias.rowStride;
    if (!fits) {
      const where = "offset" in p.timeBias!
        ? ` (columns from ${timeBias.offset}, ${timeBias.rowStride} per row)`
        : "";
      throw new Error(`${op}: timeBias [${t.shape}]${where} must be [${B}, ${w.cout}]`);
    }
    checkBinding(gpu, t, "timeBias", op);
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
  const shift = p.outputShift ?? 0;
  if (!Number.isFinite(shift)) throw new Error(`${op}: outputShift must be a finite number, got ${shift}`);
  checkDistinct(op, p.out, { x: xTensor, residual: p.residual, timeBias: timeBias?.tensor });

  const { tm, tn, wg, mode } = fitShared(gpu, tiling, 1);
  const shared = mode === "shared";
  const n = w.cout;
  const xPix = xRowTexels(cin, p.act);
  const vecOut = n % 4 === 0;
  // f16 accumulation reads f16 x only; f32 activations accumulate in f32 whatever the tiling says.
  const acc16 = !!tiling.f16Acc && p.act === "f16";
  const f16Loads = acc16 && mode === "buffer";
  const code = shared
    ? { SHARED: true, SHARED_A: 32 * (16 * tm + 1) }
    : tileCode({ tm, tn, xf16: p.act === "f16", conv: true, acc16, f16Loads });
  const defines: ShaderDefines = {
    CONV: true,
    ACC16: acc16,
    STAGE: acc16 ? "f16" : "f32",
    X16_LOADS: f16Loads,
    ACT: p.act,
    XF16: p.act === "f16",
    TEX: mode === "texture",
    VEC_OUT: vecOut,
    HAS_BIAS: !!p.bias,
    HAS_TIME_BIAS: !!timeBias,
    HAS_RESIDUAL: !!p.residual,
    RELU: !!p.relu,
    TM: tm,
    TN: tn,
    WG: wg,
    ...code,
  };
  // Bindings after x, weight, out and params, in this order.
  const extras: ["BIAS_BINDING" | "TIME_BIAS_BINDING" | "RESIDUAL_BINDING", Tensor | undefined][] = [
    ["BIAS_BINDING", p.bias],
    ["TIME_BIAS_BINDING", timeBias?.tensor],
    ["RESIDUAL_BINDING", p.residual],
  ];
  let binding = 4;
  for (const [name, t] of extras) if (t) defines[name] = binding++;
  const pipeline = gpu.kernel("conv", defines, shared ? "conv_shared" : "conv");
  const tilesN = Math.ceil(n / tn);

  /** The conv dispatch for output rows [oy0, oy0 + rows), x operand starting at global texel xTex0. */
  const convDispatch = (
    x: Resource,
    out: Resource,
    residual: Resource | undefined,
    oy0: number,
    rows: number,
    xTex0: number,
  ): Dispatch => {
    const m = B * rows * wo;
    const tiles = tilesN * Math.ceil(m / tm);
    const words = new Uint32Array(24);
    words.set([m, n, w.c8, tilesN, tiles, xPix, w.kh * w.kw, w.kw]);
    words.set([H, W, wo, ho * wo, p.stride, pad.top, pad.left], 8);
    new Float32Array(words.buffer)[15] = 1 / scaleFactor;
    words.set([oy0, xTex0], 16);
    new Float32Array(words.buffer)[18] = shift;
    words.set([timeBias?.offset ?? 0, timeBias?.rowStride ?? n], 19);
    const resources: Resource[] = [x, w.operand, out, gpu.uniform(words, `${op} params`)];
    if (p.bias) resources.push(p.bias.buffer);
    if (timeBias) resources.push(timeBias.tensor.buffer);
    if (residual) resources.push(residual);
    const grid: number | [number, number] = shared
      ? [Math.ceil(n / 64), Math.ceil(m / (16 * tm))]
      : Math.ceil(tiles / wg);
    return makeDispatch(gpu, pipeline, resources, grid, op);
  };

  const geometry: ConvGeometry = {
    B,
    H,
    W,
    cin,
    ho,
    wo,
    cout: n,
    kh: w.kh,
    stride: p.stride,
    padTop: pad.top,
  };
  const bytes = {
    x: numel(p.x.shape) * bytesPerElement(p.act),
    out: p.out.byteLength,
    residual: p.residual?.byteLength,
  };
  const bands = convBands(
    gpu,
    op,
    bytes,
    geometry,
    xPix,
    storageOf(mode),
    bindingLimit(gpu, p.maxBindingBytes),
  );
  if (!xTensor && bands) throw new Error(`${op}: packed x cannot be read in row bands`);
  if (!xTensor) {
    const residual = p.residual ? wholeOf(gpu, p.residual) : undefined;
    const x = (p.x as PackedActivations).operand.resource;
    return [convDispatch(x, wholeOf(gpu, p.out), residual, 0, ho, 0)];
  }
  if (!bands) {
    const xPack = activationOperand(gpu, xTensor, B * H * W, cin, p.act, mode, op);
    const residual = p.residual ? wholeOf(gpu, p.residual) : undefined;
    return [...xPack.dispatches, convDispatch(xPack.operand, wholeOf(gpu, p.out), residual, 0, ho, 0)];
  }

  // Row bands (B = 1). Per band: the x window from the aligned offset at or before its first input row
  // (read in place in buffer mode when Cin % 8 == 0, else packed from texel 0 of a shared scratch operand),
  // and the windows of out and residual for its output rows.
  const bpe = bytesPerElement(p.act);
  const inRowBytes = W * cin * bpe;
  const outRowBytes = wo * n * bpe;
  const alignment = gpu.device.limits.minStorageBufferOffsetAlignment;
  const direct = storageOf(mode) === "buffer" && cin % 8 === 0;
  const inputRows = bands.map((b) => inputRowsOf(b, geometry));
  const scratch = direct
    ? null
    : scratchOperand(gpu, mode, Math.max(...inputRows.map((r) => (r.end - r.start) * W * xPix)));
  const dispatches: Dispatch[] = [];
  bands.forEach((band, i) => {
    const rows = inputRows[i];
    const first = rows.start * inRowBytes;
    const windowStart = Math.floor(first / alignment) * alignment;
    const xWindow = windowOf(xTensor, windowStart, rows.end * inRowBytes);
    let operand: Resource;
    let xTex0: number;
    if (!scratch) {
      operand = xWindow;
      xTex0 = windowStart / 16; // a pixel is xPix whole texels
    } else {
      const srcOffset = (first - windowStart) / (cin % 8 === 0 ? 16 : bpe);
      const pixels = (rows.end - rows.start) * W;
      dispatches.push(packRows(gpu, xWindow, srcOffset, pixels, cin, p.act, scratch, op));
      operand = scratch.resource;
      xTex0 = rows.start * W * xPix;
    }
    const outWindow = windowOf(p.out, band.start * outRowBytes, band.end * outRowBytes);
    const residual = p.residual
      ? windowOf(p.residual, band.start * outRowBytes, band.end * outRowBytes)
      : undefined;
    dispatches.push(convDispatch(operand, outWindow, residual, band.start, band.end - band.start, xTex0));
  });
  return dispatches;
}

interface ConvGeometry {
  B: number;
  H: number;
  W: number;
  cin: number;
  ho: number;
  wo: number;
  cout: number;
  kh: number;
  stride: number;
  padTop: number;
}

/** Input rows [start, end) that output rows `band` read: [r0·s − p, (r1−1)·s − p + kh) within [0, H). */
function inputRowsOf(band: RowBand, g: ConvGeometry): RowBand {
  const start = Math.max(0, band.start * g.stride - g.padTop);
  const end = Math.min(g.H, (band.end - 1) * g.stride - g.padTop + g.kh);
  return { start, end };
}

/**
 * Output row bands for a conv whose x, out or residual exceeds `limit` bytes, or whose packed input exceeds
 * one operand (a texture of maxTextureDimension2D rows, or a buffer binding); null when everything fits (the
 * unbanded path). A band of r output rows binds r output rows of out/residual, at most (r−1)·s + kh input
 * rows of x plus up to one alignment of bytes before them, and packs those input rows.
 */
/**
 * Whether a conv must run in row bands: x, out or residual is larger than `limit` bytes, or its packed
 * input exceeds one operand (a texture of maxTextureDimension2D rows, or a buffer binding).
 */
function needsBands(
  gpu: Gpu,
  bytes: { x: number; out: number; residual?: number },
  g: ConvGeometry,
  xPix: number,
  storage: "texture" | "buffer",
  limit: number,
): boolean {
  const packs = !(storage === "buffer" && g.cin % 8 === 0);
  const packCapacity = storage === "texture"
    ? gpu.device.limits.maxTextureDimension2D * TEXTURE_WIDTH
    : Math.floor(limit / 16); // texels
  return [bytes.x, bytes.out, bytes.residual ?? 0].some((b) => b > limit) ||
    (packs && g.B * g.H * g.W * xPix > packCapacity);
}

function convBands(
  gpu: Gpu,
  op: string,
  bytes: { x: number; out: number; residual?: number },
  g: ConvGeometry,
  xPix: number,
  storage: "texture" | "buffer",
  limit: number,
): RowBand[] | null {
  if (!needsBands(gpu, bytes, g, xPix, storage, limit)) return null;
  const packs = !(storage === "buffer" && g.cin % 8 === 0);
  const packCapacity = storage === "texture"
    ? gpu.device.limits.maxTextureDimension2D * TEXTURE_WIDTH
    : Math.floor(limit / 16); // texels
  const what = `${op} [${g.B}, ${g.H}, ${g.W}, ${g.cin}] → [${g.B}, ${g.ho}, ${g.wo}, ${g.cout}]`;
  if (g.B !== 1) {
    throw new Error(
      `${what}: a tensor exceeds the ${limit}-byte storage binding limit (or the packed input one ` +
        `operand texture); splitting into row bands needs batch 1, got ${g.B}`,
    );
  }
  const inRowBytes = bytes.x / (g.B * g.H);
  const outRowBytes = bytes.out / (g.B * g.ho);
  const alignment = gpu.device.limits.minStorageBufferOffsetAlignment;
  // Largest r with r·outRowBytes ≤ limit, ((r−1)·s + kh)·inRowBytes + alignment ≤ limit and, when packing,
  // ((r−1)·s + kh)·W·xPix ≤ packCapacity.
  const byInput = (capacity: number, perRow: number) =>
    Math.floor((Math.floor(capacity / perRow) - g.kh) / g.stride) + 1;
  let most = Math.min(Math.floor(limit / outRowBytes), byInput(limit - alignment, inRowBytes));
  if (packs) most = Math.min(most, byInput(packCapacity, g.W * xPix));
  if (most < 1) {
    throw new Error(
      `${what}: cannot split into row bands within the ${limit}-byte storage binding limit: one output ` +
        `row needs ${outRowBytes} bytes of out and ${g.kh} input rows of ${inRowBytes} bytes`,
    );
  }
  return rowBands(gpu, what, g.ho, [outRowBytes], most * outRowBytes);
}
