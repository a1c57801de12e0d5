// Data-movement op builders (elementwise.wgsl kernels): channel copy / concat / slice, nearest ×2 upsampling
// (NHWC), NCHW ↔ NHWC layout conversion and dtype casts. copyChannels (concat/slice) and upsampleNearest2x
// split into row bands when a tensor exceeds one storage binding (see bands.ts): one dispatch per band,
// binding only the band's window of each tensor (results equal the unbanded op's).

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import { bytesPerElement, type Tensor } from "../gpu/tensor.ts";
import { bandBinding, type BandedTensor, bandsIfNeeded, bindingLimit } from "./bands.ts";
import { checkDType, checkNumel, grid, needF16, scalarType, u, uniformOf, unitDefines } from "./unit.ts";

// ---- channel copy / concat / slice ----

export interface CopyChannelsParams {
  /** [rows…, Cs] */
  x: Tensor;
  /** [rows…, Cd] */
  out: Tensor;
  srcStart: number;
  dstStart: number;
  count: number;
  act: ActDType;
  /** Storage binding limit to split at (tests); defaults to the device's. */
  maxBindingBytes?: number;
}

/** out[…, dstStart + i] = x[…, srcStart + i] for i < count, over all leading positions. */
export function copyChannels(gpu: Gpu, p: CopyChannelsParams): Dispatch[] {
  checkDType(p.x, p.act, "copyChannels x");
  checkDType(p.out, p.act, "copyChannels out");
  const cs = p.x.shape[p.x.shape.length - 1];
  const cd = p.out.shape[p.out.shape.length - 1];
  const rows = p.x.numel / cs;
  if (p.out.numel / cd !== rows) {
    throw new Error(`copyChannels: ${rows} rows in x, ${p.out.numel / cd} in out`);
  }
  if (p.srcStart + p.count > cs || p.dstStart + p.count > cd || p.srcStart < 0 || p.dstStart < 0) {
    throw new Error(
      `copyChannels: range out of bounds (src ${p.srcStart}+${p.count}/${cs}, dst ${p.dstStart}/${cd})`,
    );
  }
  if (p.x.buffer === p.out.buffer) throw new Error("copyChannels: in-place copies are not supported");
  const vec = [cs, cd, p.srcStart, p.dstStart, p.count].every((v) => v % 4 === 0);
  const k = vec ? 4 : 1;
  const pipeline = gpu.kernel(
    "elementwise",
    { ...unitDefines(p.act, vec), COPY_CHANNELS: true },
    "copy_channels",
  );
  // Bands of rows: the kernel's indices are relative to the bound windows.
  const bpe = bytesPerElement(p.act);
  const parts: BandedTensor[] = [{ tensor: p.x, rowBytes: cs * bpe }, { tensor: p.out, rowBytes: cd * bpe }];
  const limit = bindingLimit(gpu, p.maxBindingBytes);
  const bands = bandsIfNeeded(gpu, `copyChannels [${p.x.shape}] → [${p.out.shape}]`, rows, parts, limit);
  return (bands ?? [null]).map((band) => {
    const n = ((band ? band.end - band.start : rows) * p.count) / k;
    const params = uniformOf(gpu, [
      u(n),
      u(p.count / k),
      u(cs / k),
      u(p.srcStart / k),
      u(cd / k),
      u(p.dstStart / k),
    ]);
    const buffers = [bandBinding(gpu, parts[0], band), bandBinding(gpu, parts[1], band), params];
    return gpu.dispatch(pipeline, buffers, grid(n), "copy_channels");
  });
}

/** NHWC [B, H, W, C1] ++ [B, H, W, C2] → [B, H, W, C1 + C2] (UNet skip connections: torch.cat(dim=1)). */
export function concatChannels(
  gpu: Gpu,
  p: { a: Tensor; b: Tensor; out: Tensor; act: ActDType; maxBindingBytes?: number },
): Dispatch[] {
  const c1 = p.a.shape[p.a.shape.length - 1];
  const c2 = p.b.shape[p.b.shape.length - 1];
  const c = p.out.shape[p.out.shape.length - 1];
  if (c !== c1 + c2) throw new Error(`concatChannels: ${c1} + ${c2} != ${c}`);
  const common = { out: p.out, srcStart: 0, act: p.act, maxBindingBytes: p.maxBindingBytes };
  return [
    ...copyChannels(gpu, { ...common, x: p.a, dstStart: 0, count: c1 }),
    ...copyChannels(gpu, { ...common, x: p.b, dstStart: c1, count: c2 }),
  ];
}

/** out = x[…, start : start + out's C]. */
export function sliceChannels(
  gpu: Gpu,
  p: { x: Tensor; out: Tensor; start: number; act: ActDType; maxBindingBytes?: number },
): Dispatch[] {
  const count = p.out.shape[p.out.shape.length - 1];
  const { x, out, act, maxBindingBytes } = p;
  return copyChannels(gpu, { x, out, srcStart: p.start, dstStart: 0, count, act, maxBindingBytes });
}

// ---- upsampling ----

/**
 * Nearest-neighbour ×2 upsampling, NHWC [B, H, W, C] → [B, 2H, 2W, C] (F.interpolate(scale_factor=2)).
 * `maxBindingBytes`: storage binding limit to split at (tests); defaults to the device's.
 */
export function upsampleNearest2x(
  gpu: Gpu,
  p: { x: Tensor; out: Tensor; act: ActDType; maxBindingBytes?: number },
): Dispatch[] {
  checkDType(p.x, p.act, "upsample x");
  checkDType(p.out, p.act, "upsample out");
  if (p.x.shape.length !== 4) {
    throw new Error(`upsampleNearest2x: x must be [B, H, W, C], got [${p.x.shape}]`);
  }
  const [b, h, w, c] = p.x.shape;
  const [ob, oh, ow, oc] = p.out.shape;
  if (ob !== b || oh !== 2 * h || ow !== 2 * w || oc !== c) {
    throw new Error(`upsampleNearest2x: out [${p.out.shape}] must be [${b}, ${2 * h}, ${2 * w}, ${c}]`);
  }
  const vec = c % 4 === 0;
  const units = vec ? c / 4 : c;
  const pipeline = gpu.kernel("elementwise", { ...unitDefines(p.act, vec), UPSAMPLE2X: true }, "upsample2x");
  // Bands of input rows over all B·H rows: input rows [r0, r1) make output rows [2·r0, 2·r1) (output row R
  // reads input row ⌊R/2⌋ across batch items too), so each band is itself an upsample of a
  // [1, r1 − r0, W, C] map and the kernel runs unchanged on the windows.
  const inRowBytes = w * c * bytesPerElement(p.act);
  const parts: BandedTensor[] = [
    { tensor: p.x, rowBytes: inRowBytes },
    { tensor: p.out, rowBytes: 4 * inRowBytes }, // two output rows of 2W pixels per input row
  ];
  const limit = bindingLimit(gpu, p.maxBindingBytes);
  const bands = bandsIfNeeded(gpu, `upsampleNearest2x [${p.x.shape}]`, b * h, parts, limit);
  return (bands ?? [null]).map((band) => {
    const [batch, rows] = band ? [1, band.end - band.start] : [b, h];
    const n = batch * 4 * rows * w * units;
    const params = uniformOf(gpu, [u(n), u(units), u(w), u(rows)]);
    const buffers = [bandBinding(gpu, parts[0], band), bandBinding(gpu, parts[1], band), params];
    return gpu.dispatch(pipeline, buffers, grid(n), "upsample2x");
  });
}

/**
 * Nearest resize NHWC [B, H, W, C] → [B, OH, OW, C] to any size (F.interpolate(size=(OH, OW), mode="nearest"):
 * source = min(⌊o · in/out⌋, in − 1) in f32). An exact ×2 takes upsampleNearest2x (bands, same values).
 */
export function resizeNearest(gpu: Gpu, p: { x: Tensor; out: Tensor; act: ActDType }): Dispatch[] {
  checkDType(p.x, p.act, "resize x");
  checkDType(p.out, p.act, "resize out");
  if (p.x.shape.length !== 4 || p.out.shape.length !== 4) {
    throw new Error("resizeNearest: tensors must be 4-D");
  }
  const [b, h, w, c] = p.x.shape;
  const [ob, oh, ow, oc] = p.out.shape;
  if (ob !== b || oc !== c) {
    throw new Error(`resizeNearest: out [${p.out.shape}] must be [${b}, OH, OW, ${c}]`);
  }
  if (oh === 2 * h && ow === 2 * w) return upsampleNearest2x(gpu, p);
  for (const [t, what] of [[p.x, "x"], [p.out, "out"]] as const) {
    if (t.byteLength > gpu.maxBinding) {
      throw new Error(`resizeNearest: ${what} [${t.shape}] exceeds one storage binding (only ×2 is banded)`);
    }
  }
  const vec = c % 4 === 0;
  const units = vec ? c / 4 : c;
  const pipeline = gpu.kernel(
    "elementwise",
    { ...unitDefines(p.act, vec), RESIZE_NEAREST: true },
    "resize_nearest",
  );
  const n = b * oh * ow * units;
  // torch: scale = (float)in / out, then floorf(o * scale).
  const params = uniformOf(gpu, [
    u(n),
    u(units),
    u(w),
    u(h),
    u(ow),
    u(oh),
    [Math.fround(w / ow), "f"],
    [Math.fround(h / oh), "f"],
  ]);
  return [gpu.dispatch(pipeline, [p.x.buffer, p.out.buffer, params], grid(n), "resize_nearest")];
}

// ---- layout / dtype conversion ----

function layout(gpu: Gpu, x: Tensor, out: Tensor, entry: "nchw_to_nhwc" | "nhwc_to_nchw"): Dispatch[] {
  if (x.shape.length !== 4 || out.shape.length !== 4) throw new Error(`${entry}: tensors must be 4-D`);
  const [b, c, h, w] = entry === "nchw_to_nhwc" ? x.shape : out.shape;
  const expected = entry === "nchw_to_nhwc" ? [b, h, w, c] : [b, h, w, c];
  const nhwc = entry === "nchw_to_nhwc" ? out.shape : x.shape;
  if (expected.some((v, i) => v !== nhwc[i])) {
    throw new Error(`${entry}: shapes [${x.shape}] → [${out.shape}] do not match`);
  }
  needF16(gpu, [x, out], entry);
  const pipeline = gpu.kernel("elementwise", {
    ...unitDefines("f32", false),
    LAYOUT: true,
    IN_T: scalarType(x.dtype),
    OUT_T: scalarType(out.dtype),
  }, entry);
  const n = x.numel;
  const params = uniformOf(gpu, [u(n), u(c), u(h), u(w)]);
  return [gpu.dispatch(pipeline, [x.buffer, out.buffer, params], grid(n), entry)];
}

/** NCHW [B, C, H, W] → NHWC [B, H, W, C]; dtypes may differ (f32 fixture → f16 activations). */
export function nchwToNhwc(gpu: Gpu, p: { x: Tensor; out: Tensor }): Dispatch[] {
  return layout(gpu, p.x, p.out, "nchw_to_nhwc");
}

/** NHWC [B, H, W, C] → NCHW [B, C, H, W]; dtypes may differ. */
export function nhwcToNchw(gpu: Gpu, p: { x: Tensor; out: Tensor }): Dispatch[] {
  return layout(gpu, p.x, p.out, "nhwc_to_nchw");
}

/** Element type conversion (f32 ↔ f16; same type is a copy). */
export function cast(gpu: Gpu, p: { x: Tensor; out: Tensor }): Dispatch[] {
  checkNumel(p.out, p.x.numel, "cast out");
  needF16(gpu, [p.x, p.out], "cast");
  const pipeline = gpu.kernel("elementwise", {
    ...unitDefines("f32", false),
    CAST: true,
    IN_T: scalarType(p.x.dtype),
    OUT_T: scalarType(p.out.dtype),
  }, "cast_dtype");
  const n = p.x.numel;
  return [gpu.dispatch(pipeline, [p.x.buffer, p.out.buffer, uniformOf(gpu, [u(n)])], grid(n), "cast")];
}
