// Normalisation op builders: GroupNorm (NHWC feature maps and [B, T, C] token maps) and LayerNorm (last dim).
//
// GroupNorm is three dispatches so that big maps (VAE 512×512×128 = 33M elements) spread over many
// workgroups and stay numerically robust:
//   1. gn_partial: per (batch, chunk of ≤ R rows, channel): the chunk's mean and Σ(x − mean)² (two passes over
//      a chunk that is still in cache),
//   2. gn_stats: per (batch, group): Chan's merge of the chunk statistics → mean, rstd; folded with gamma/beta
//      into a per-(batch, channel) table,
//   3. gn_apply: y = ((x − mean_hi) − mean_lo) · gamma·rstd + beta (+ SiLU), vectorised, 16 rows per invocation.
// Scratch (chunk statistics, scale/shift table) is allocated once per built op.
// Maps larger than one storage binding (VAE decoder at 512² and up: [1, 512, 512, 256] f32 is 256 MiB) run
// passes 1 and 3 in row bands that bind windows of x/out (bands.ts); band starts are multiples of the chunk
// length, so the chunk statistics and the result are exactly those of the unbanded op.

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import { bytesPerElement, type Tensor } from "../gpu/tensor.ts";
import { bandBinding, type BandedTensor, bindingLimit, type RowBand, rowBands } from "./bands.ts";
import { checkDType, grid, resourceOf, uniformOf, unitDefines } from "./unit.ts";

export interface GroupNormParams {
  /** [B, H, W, C] (NHWC) or [B, T, C] */
  x: Tensor;
  /** f16 [C], or null/undefined for no affine */
  gamma?: Tensor | null;
  /** f16 [C] */
  beta?: Tensor | null;
  /** like x; may be x itself (in-place) */
  out: Tensor;
  groups: number;
  eps: number;
  /** Fused SiLU after the affine (ResBlock norm1/norm2, conv_norm_out). */
  silu?: boolean;
  act: ActDType;
  /**
   * Storage binding limit to split at (tests force small bands with it); defaults to the device's. Maps
   * larger than this run in row bands, which needs batch 1.
   */
  maxBindingBytes?: number;
}

/** Target number of row chunks per batch item in pass 1 (parallelism vs. pass-2 merge length). */
const TARGET_CHUNKS = 256;
const MIN_ROWS_PER_CHUNK = 16;
/** Rows each pass-3 invocation normalises (its table values are loaded once). */
const APPLY_ROWS_PER_INVOCATION = 16;

function checkGrid(gpu: Gpu, workgroups: readonly number[], label: string): void {
  const limit = gpu.device.limits.maxComputeWorkgroupsPerDimension;
  if (workgroups.some((w) => w > limit)) {
    throw new Error(`${label}: workgroup count ${workgroups} exceeds ${limit}`);
  }
}

function checkAffine(
  gamma: Tensor | null | undefined,
  beta: Tensor | null | undefined,
  c: number,
  what: string,
) {
  if (!gamma !== !beta) throw new Error(`${what}: give both gamma and beta or neither`);
  for (const t of [gamma, beta]) {
    if (t && (t.dtype !== "f16" || t.numel !== c)) {
      throw new Error(`${what}: affine weights must be f16 [${c}], got ${t.dtype} [${t.shape}]`);
    }
  }
}

/** torch.nn.GroupNorm over NHWC (stats per batch item and group over H·W·C/groups), optional fused SiLU. */
export function groupNorm(gpu: Gpu, p: GroupNormParams): Dispatch[] {
  const shape = p.x.shape;
  if (shape.length < 2) throw new Error(`groupNorm: x must be [B, …, C], got [${shape}]`);
  checkDType(p.x, p.act, "groupNorm x");
  checkDType(p.out, p.act, "groupNorm out");
  if (p.out.numel !== p.x.numel) {
    throw new Error(`groupNorm: out [${p.out.shape}] does not match x [${shape}]`);
  }
  const batch = shape[0];
  const c = shape[shape.length - 1];
  const hw = p.x.numel / (batch * c);
  if (!Number.isInteger(c / p.groups)) {
    throw new Error(`groupNorm: ${c} channels not divisible by ${p.groups} groups`);
  }
  checkAffine(p.gamma, p.beta, c, "groupNorm");
  const affine = !!p.gamma;

  const vec = c % 4 === 0;
  const units = vec ? c / 4 : c;
  const rowsPerChunk = Math.max(MIN_ROWS_PER_CHUNK, Math.ceil(hw / TARGET_CHUNKS));
  const chunks = Math.ceil(hw / rowsPerChunk);
  const m2Offset = batch * chunks * units; // in units
  const stats = gpu.storage(2 * batch * chunks * c * 4, "groupNorm chunk stats"); // [2][B][chunks][C] f32
  const table = gpu.storage(batch * 4 * c * 4, "groupNorm table"); // [B][4][C] f32: mean hi/lo, scale, beta
  const unit = unitDefines(p.act, vec);
  const inplace = p.out.buffer === p.x.buffer;

  // Row bands (B = 1) when x/out exceed one binding: band starts are multiples of rowsPerChunk, so every
  // band holds whole chunks and the chunk statistics (hence the result) are those of the unbanded op.
  const limit = bindingLimit(gpu, p.maxBindingBytes);
  const rowBytes = c * bytesPerElement(p.act);
  let bands: RowBand[] | null = null;
  if (p.x.byteLength > limit) {
    if (batch !== 1) {
      throw new Error(
        `groupNorm: [${shape}] (${p.x.byteLength} bytes) exceeds the ${limit}-byte storage binding limit; ` +
          `splitting it into row bands needs batch 1, got ${batch}`,
      );
    }
    bands = rowBands(gpu, `groupNorm [${shape}]`, hw, [rowBytes], limit, rowsPerChunk);
  }
  const xPart: BandedTensor = { tensor: p.x, rowBytes };
  const outPart: BandedTensor = { tensor: p.out, rowBytes };
  // One pass-1 and one pass-3 dispatch per band (null: unbanded, the whole map).
  const bandList: (RowBand | null)[] = bands ?? [null];

  // Pass 1, per band: the band's chunks write their slots of `stats`.
  const partial = gpu.kernel("norm", { ...unit, GN_PARTIAL: true }, "gn_partial");
  const partials = bandList.map((band) => {
    const bandRows = band ? band.end - band.start : hw;
    const bandChunks = Math.ceil(bandRows / rowsPerChunk);
    const params = uniformOf(gpu, [
      [hw, "u"],
      [units, "u"],
      [rowsPerChunk, "u"],
      [chunks, "u"],
      [m2Offset, "u"],
      [bandRows, "u"],
      [bandChunks, "u"],
      [band ? band.start / rowsPerChunk : 0, "u"],
    ]);
    return gpu.dispatch(
      partial,
      [bandBinding(gpu, xPart, band), stats, params],
      [Math.ceil(units / 8), Math.ceil(bandChunks / 8), batch],
      "groupNorm partial",
    );
  });

  // Pass 2: merge over all chunks (small buffers only, never banded).
  const statsPipeline = gpu.kernel(
    "norm",
    { ...unitDefines(p.act, false), GN_STATS: true, AFFINE: affine },
    "gn_stats",
  );
  const statsParams = uniformOf(gpu, [
    [hw, "u"],
    [c, "u"],
    [rowsPerChunk, "u"],
    [chunks, "u"],
    [batch * chunks * c, "u"],
    [p.groups, "u"],
    [c / p.groups, "u"],
    [p.eps, "f"],
  ]);
  const statsBuffers = [stats, table, statsParams];
  if (p.gamma && p.beta) statsBuffers.push(p.gamma.buffer, p.beta.buffer);
  const merge = gpu.dispatch(
    statsPipeline,
    statsBuffers,
    [Math.ceil(p.groups / 64), batch, 1],
    "groupNorm stats",
  );

  // Pass 3, per band: windowed x and out (in place: out's window only).
  const apply = gpu.kernel(
    "norm",
    { ...unit, GN_APPLY: true, SILU: p.silu ?? false, INPLACE: inplace },
    "gn_apply",
  );
  const applies = bandList.map((band) => {
    const bandRows = band ? band.end - band.start : hw;
    const blocks = Math.ceil(bandRows / APPLY_ROWS_PER_INVOCATION);
    const params = uniformOf(gpu, [
      [hw, "u"],
      [units, "u"],
      [APPLY_ROWS_PER_INVOCATION, "u"],
      [blocks, "u"],
      [bandRows, "u"],
    ]);
    const bindGroup = gpu.device.createBindGroup({
      label: "groupNorm apply",
      layout: apply.getBindGroupLayout(0),
      entries: [
        ...(inplace ? [] : [{ binding: 0, resource: resourceOf(bandBinding(gpu, xPart, band)) }]),
        { binding: 1, resource: resourceOf(bandBinding(gpu, outPart, band)) },
        { binding: 2, resource: { buffer: table } },
        { binding: 3, resource: { buffer: params } },
      ],
    });
    const applyGrid: [number, number, number] = [Math.ceil(units / 8), Math.ceil(blocks / 8), batch];
    checkGrid(gpu, applyGrid, "groupNorm apply");
    const d: Dispatch = { pipeline: apply, bindGroup, workgroups: applyGrid, label: "groupNorm apply" };
    return d;
  });
  return [...partials, merge, ...applies];
}

export interface LayerNormParams {
  /** [M…, C]: normalised over the last dim */
  x: Tensor;
  /** f16 [C], or null/undefined for no affine */
  gamma?: Tensor | null;
  beta?: Tensor | null;
  /** like x; must not be x */
  out: Tensor;
  eps: number;
  act: ActDType;
}

/** torch.nn.LayerNorm over the last dim: one invocation per row, mean and variance by two passes. */
export function layerNorm(gpu: Gpu, p: LayerNormParams): Dispatch[] {
  checkDType(p.x, p.act, "layerNorm x");
  checkDType(p.out, p.act, "layerNorm out");
  if (p.out.numel !== p.x.numel) {
    throw new Error(`layerNorm: out [${p.out.shape}] does not match x [${p.x.shape}]`);
  }
  if (p.out.buffer === p.x.buffer) throw new Error("layerNorm: in-place is not supported");
  const c = p.x.shape[p.x.shape.length - 1];
  const rows = p.x.numel / c;
  checkAffine(p.gamma, p.beta, c, "layerNorm");
  const affine = !!p.gamma;
  const vec = c % 4 === 0;
  const units = vec ? c / 4 : c;
  const pipeline = gpu.kernel(
    "norm",
    { ...unitDefines(p.act, vec), LAYER_NORM: true, AFFINE: affine },
    "layer_norm",
  );
  const params = uniformOf(gpu, [[rows, "u"], [units, "u"], [c, "u"], [p.eps, "f"]]);
  const buffers = [p.x.buffer, p.out.buffer, params];
  if (p.gamma && p.beta) buffers.push(p.gamma.buffer, p.beta.buffer);
  return [gpu.dispatch(pipeline, buffers, grid(rows, 64), "layerNorm")];
}
