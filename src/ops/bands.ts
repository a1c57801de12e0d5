// Exact banded execution for tensors larger than one storage binding.
//
// A buffer may be up to maxBufferSize (2 GiB on lavapipe) but a dispatch may bind at most
// maxStorageBufferBindingSize (128 MiB) of it. Ops whose work splits along rows (image rows, pixel rows or
// flat vector units) run one dispatch per band of rows and bind only the band's window
// `{buffer, offset, size}` of each big tensor. Band starts are chosen so that every window offset is a
// multiple of minStorageBufferOffsetAlignment, and each op keeps its per-element arithmetic, so banded
// results equal unbanded ones bit for bit.

import type { Binding, Gpu } from "../gpu/device.ts";
import type { Tensor } from "../gpu/tensor.ts";

/** A band of rows [start, end) (global row indices). */
export interface RowBand {
  start: number;
  end: number;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

function lcm(a: number, b: number): number {
  return (a / gcd(a, b)) * b;
}

/**
 * The binding limit an op works to: the device's, or a smaller test override (rounded down to 4 bytes, as
 * storage binding sizes must be multiples of 4).
 */
export function bindingLimit(gpu: Gpu, override?: number): number {
  const limit = Math.min(override ?? gpu.maxBinding, gpu.maxBinding);
  if (!(limit >= 4)) throw new Error(`binding limit ${override} is too small`);
  return Math.floor(limit / 4) * 4;
}

/**
 * Splits `rows` rows into bands such that, for every tensor i, the window of the band (its rows times
 * `rowBytes[i]` bytes, starting at byte start·rowBytes[i]) fits in `limit` bytes and starts at an aligned
 * offset. Band starts are also multiples of `step` rows (e.g. the row chunks of a two-level reduction).
 * Bands are as large as allowed, so there are as few dispatches as possible. Throws when even the smallest
 * aligned band does not fit.
 */
export function rowBands(
  gpu: Gpu,
  what: string,
  rows: number,
  rowBytes: readonly number[],
  limit: number,
  step = 1,
): RowBand[] {
  const alignment = gpu.device.limits.minStorageBufferOffsetAlignment;
  // Smallest row count whose byte length is a multiple of the alignment, for every tensor.
  let align = step;
  for (const bytes of rowBytes) align = lcm(align, alignment / gcd(bytes, alignment));
  const maxRowBytes = Math.max(...rowBytes);
  const fit = Math.floor(limit / maxRowBytes);
  const bandRows = Math.floor(fit / align) * align;
  if (bandRows === 0) {
    throw new Error(
      `${what}: cannot split into row bands within the ${limit}-byte storage binding limit: the smallest ` +
        `aligned band (${align} row(s) of ${maxRowBytes} bytes) is already larger`,
    );
  }
  const bands: RowBand[] = [];
  for (let start = 0; start < rows; start += bandRows) {
    bands.push({ start, end: Math.min(rows, start + bandRows) });
  }
  return bands;
}

/**
 * The bytes [start, end) of `t`'s buffer as a binding, its size rounded up to 4 bytes (the rest of a
 * buffer's last 16-byte block is always there; the kernels never touch it).
 */
export function windowOf(t: Tensor, start: number, end: number): Binding {
  const size = Math.min(Math.ceil((end - start) / 4) * 4, t.buffer.size - start);
  return { buffer: t.buffer, offset: start, size };
}

/**
 * The whole tensor as a binding: the buffer itself (as the unbanded ops always bound it), or its first
 * byteLength bytes if the buffer is larger than the binding limit.
 */
export function wholeOf(gpu: Gpu, t: Tensor): Binding {
  return t.buffer.size <= gpu.maxBinding ? t.buffer : windowOf(t, 0, t.byteLength);
}

/** A tensor that an op splits into row bands, with the bytes of its part of one band row. */
export interface BandedTensor {
  tensor: Tensor;
  rowBytes: number;
}

/**
 * Row bands for an op whose bound tensors all split along the same `rows` rows, or null when every tensor
 * fits in one binding (the op then binds whole buffers, exactly as without banding).
 */
export function bandsIfNeeded(
  gpu: Gpu,
  what: string,
  rows: number,
  parts: readonly BandedTensor[],
  limit: number,
  step = 1,
): RowBand[] | null {
  if (parts.every((p) => p.tensor.byteLength <= limit)) return null;
  return rowBands(gpu, what, rows, parts.map((p) => p.rowBytes), limit, step);
}

/** The binding of `part` for `band` (its window), or of the whole tensor when unbanded (band null). */
export function bandBinding(gpu: Gpu, part: BandedTensor, band: RowBand | null): Binding {
  return band
    ? windowOf(part.tensor, band.start * part.rowBytes, band.end * part.rowBytes)
    : wholeOf(gpu, part.tensor);
}
