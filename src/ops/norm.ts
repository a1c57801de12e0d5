// Normalisation op builders: GroupNorm (NHWC feature maps and [B, T, C] token maps) and LayerNorm (last dim).
//
// GroupNorm is two dispatches for maps of a few MiB (the UNet's):
//   1. gn_fused, one workgroup of 64 per (batch, group): statistics of chunks of ≤ R rows (≤ 256 chunks; the
//      chunk's mean and Σ(x − mean)², two passes over a chunk that is still in cache), merged by Chan's
//      formula (4 chunks per invocation in order, then a fixed tree) → mean, rstd, folded with gamma/beta into
//      a per-(batch, channel) table,
//   2. gn_apply: y = ((x − mean_hi) − mean_lo) · gamma·rstd + beta (+ SiLU), vectorised, 16 rows per invocation;
//      or, given a GEMM operand as `out`, the same values written as that GEMM's x texels (ops/operand.ts), so
//      the GEMM needs no pack dispatch.
// Until the SD 1.5 UNet's dispatch diet (issue #16), pass 1 was always two dispatches (per-chunk partials,
// then one invocation per group merging 256 chunks × channels serially); on maps that stay in cache one
// workgroup per group is as fast (measurements at FUSED_STATS_MAX_BYTES) and merges 64-wide, so there the
// split cost a dispatch per norm for nothing (61 per SD 1.5 UNet call).
// Larger maps take pass 1 as gn_partial (chunk statistics, lanes over adjacent groups: coalesced reads) and
// gn_merge (the same merge code), see FUSED_STATS_MAX_BYTES. Maps larger than one storage binding (VAE
// decoder at 512² and up: [1, 512, 512, 256] f32 is 256 MiB) run gn_partial and gn_apply per row band over
// windows of x/out (bands.ts). Band starts are multiples of the chunk length, and every path computes the
// same chunk statistics and merge, so all of them give bit-identical results.

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import { bytesPerElement, type Tensor } from "../gpu/tensor.ts";
import { bandBinding, type BandedTensor, bindingLimit, type RowBand, rowBands } from "./bands.ts";
import { operandDefines, type PackedActivations } from "./operand.ts";
import { checkDType, grid, resourceOf, uniformOf, unitDefines } from "./unit.ts";

export interface GroupNormParams {
  /** [B, H, W, C] (NHWC) or [B, T, C] */
  x: Tensor;
  /** f16 [C], or null/undefined for no affine */
  gamma?: Tensor | null;
  /** f16 [C] */
  beta?: Tensor | null;
  /**
   * Like x; may be x itself (in-place). Or a GEMM's x operand (ops/operand.ts; C % 8 == 0, map within one
   * binding): the result is written as that operand's texels.
   */
  out: Tensor | PackedActivations;
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
  /** Forces pass 1 as one dispatch or as partials + merge (tests, benchmarks); default: by map size. */
  stats?: "fused" | "split";
}

/**
 * Maps up to this size take pass 1 as one dispatch (gn_fused); larger ones as partials + merge. A workgroup
 * per group reads its channels' slice of every row, fine while the map stays in cache; the partials' lanes
 * take adjacent groups of the same rows instead. Per GroupNorm + SiLU, f16, 32 groups (bench/groupnorm.ts,
 * lavapipe, ms fused / split): [2,32,32,320] 1.3 MiB 3.14 / 3.16; [2,64,64,320] 5 MiB 8.63 / 8.83;
 * [1,64,64,512] 4 MiB 6.86 / 6.84; [1,128,128,256] 8 MiB 14.5 / 13.3; [1,256,256,128] 16 MiB 33.7 / 27.6.
 * So the UNet's maps (≤ 5 MiB at 512², f16) keep one dispatch and the VAE's large ones take two.
 */
const FUSED_STATS_MAX_BYTES = 6 * 2 ** 20;
/** Target number of row chunks per batch item (≤ 256: the merge holds one chunk per workgroup slot). */
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

/** Checks a packed output against rows × C activations (C % 8 == 0, the operand large enough). */
function checkPacked(out: PackedActivations, rows: number, c: number, act: ActDType, what: string): void {
  if (c % 8 !== 0) throw new Error(`${what}: a GEMM operand output needs C % 8 == 0, got ${c}`);
  if (out.shape[out.shape.length - 1] !== c || out.shape.reduce((a, b) => a * b, 1) !== rows * c) {
    throw new Error(`${what}: operand shape [${out.shape}] does not hold ${rows}×${c} values`);
  }
  if (out.act !== act) throw new Error(`${what}: operand holds ${out.act} activations, act is ${act}`);
  const texels = rows * (act === "f16" ? c / 8 : c / 4);
  if (out.operand.texels < texels) {
    throw new Error(`${what}: operand of ${out.operand.texels} texels cannot hold ${rows}×${c} values`);
  }
}

/** torch.nn.GroupNorm over NHWC (stats per batch item and group over H·W·C/groups), optional fused SiLU. */
export function groupNorm(gpu: Gpu, p: GroupNormParams): Dispatch[] {
  const shape = p.x.shape;
  if (shape.length < 2) throw new Error(`groupNorm: x must be [B, …, C], got [${shape}]`);
  checkDType(p.x, p.act, "groupNorm x");
  const packed = "operand" in p.out ? p.out : null;
  const outTensor = "operand" in p.out ? null : p.out;
  if (outTensor) {
    checkDType(outTensor, p.act, "groupNorm out");
    if (outTensor.numel !== p.x.numel) {
      throw new Error(`groupNorm: out [${outTensor.shape}] does not match x [${shape}]`);
    }
  }
  const batch = shape[0];
  const c = shape[shape.length - 1];
  const hw = p.x.numel / (batch * c);
  if (!Number.isInteger(c / p.groups)) {
    throw new Error(`groupNorm: ${c} channels not divisible by ${p.groups} groups`);
  }
  if (packed) checkPacked(packed, batch * hw, c, p.act, "groupNorm");
  checkAffine(p.gamma, p.beta, c, "groupNorm");
  const affine = !!p.gamma;

  const vec = c % 4 === 0;
  const units = vec ? c / 4 : c;
  const rowsPerChunk = Math.max(MIN_ROWS_PER_CHUNK, Math.ceil(hw / TARGET_CHUNKS));
  const chunks = Math.ceil(hw / rowsPerChunk);
  const table = gpu.storage(batch * 4 * c * 4, "groupNorm table"); // [B][4][C] f32: mean hi/lo, scale, beta
  const unit = unitDefines(p.act, vec);
  const inplace = outTensor?.buffer === p.x.buffer;

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
    if (packed) throw new Error(`groupNorm: [${shape}] exceeds one binding; it cannot write a GEMM operand`);
    bands = rowBands(gpu, `groupNorm [${shape}]`, hw, [rowBytes], limit, rowsPerChunk);
  }
  const xPart: BandedTensor = { tensor: p.x, rowBytes };
  // One pass-1 and one pass-3 dispatch per band (null: unbanded, the whole map).
  const bandList: (RowBand | null)[] = bands ?? [null];

  const statsParams = (band: RowBand | null) => {
    const bandRows = band ? band.end - band.start : hw;
    return uniformOf(gpu, [
      [hw, "u"],
      [units, "u"],
      [c, "u"],
      [p.groups, "u"],
      [c / p.groups, "u"],
      [rowsPerChunk, "u"],
      [chunks, "u"],
      [p.eps, "f"],
      [bandRows, "u"],
      [Math.ceil(bandRows / rowsPerChunk), "u"],
      [band ? band.start / rowsPerChunk : 0, "u"],
    ]);
  };
  const affineBindings = (entries: GPUBindGroupEntry[]) => {
    if (p.gamma && p.beta) {
      entries.push({ binding: 3, resource: { buffer: p.gamma.buffer } });
      entries.push({ binding: 4, resource: { buffer: p.beta.buffer } });
    }
    return entries;
  };
  const statsGrid: [number, number, number] = [p.groups, batch, 1];
  checkGrid(gpu, statsGrid, "groupNorm stats");
  const statsDispatches: Dispatch[] = [];
  const fused = !bands &&
    (p.stats ?? (p.x.byteLength <= FUSED_STATS_MAX_BYTES ? "fused" : "split")) === "fused";
  if (fused) {
    // Pass 1, one dispatch: chunk statistics and their merge.
    const pipeline = gpu.kernel("norm", {
      ...unit,
      GN_STATS_ANY: true,
      GN_CHUNKS: true,
      GN_MERGES: true,
      GN_FUSED: true,
      AFFINE: affine,
    }, "gn_fused");
    const bindGroup = gpu.device.createBindGroup({
      label: "groupNorm stats",
      layout: pipeline.getBindGroupLayout(0),
      entries: affineBindings([
        { binding: 0, resource: { buffer: p.x.buffer } },
        { binding: 1, resource: { buffer: table } },
        { binding: 2, resource: { buffer: statsParams(null) } },
      ]),
    });
    statsDispatches.push({ pipeline, bindGroup, workgroups: statsGrid, label: "groupNorm stats" });
  } else {
    // Pass 1 per band (unbanded: one): the band's chunks write their slots of `stats`; then one merge.
    const stats = gpu.storage(batch * p.groups * chunks * 16, "groupNorm chunk stats"); // [B][G][chunks] vec4
    const partial = gpu.kernel(
      "norm",
      { ...unit, GN_STATS_ANY: true, GN_CHUNKS: true, GN_PARTIAL: true },
      "gn_partial",
    );
    for (const band of bandList) {
      const bandRows = band ? band.end - band.start : hw;
      const bandChunks = Math.ceil(bandRows / rowsPerChunk);
      const workgroups: [number, number, number] = [
        Math.ceil(p.groups / 8),
        Math.ceil(bandChunks / 8),
        batch,
      ];
      checkGrid(gpu, workgroups, "groupNorm partial");
      const bindGroup = gpu.device.createBindGroup({
        label: "groupNorm partial",
        layout: partial.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: resourceOf(bandBinding(gpu, xPart, band)) },
          { binding: 2, resource: { buffer: statsParams(band) } },
          { binding: 5, resource: { buffer: stats } },
        ],
      });
      statsDispatches.push({ pipeline: partial, bindGroup, workgroups, label: "groupNorm partial" });
    }
    const merge = gpu.kernel("norm", {
      ...unit,
      GN_STATS_ANY: true,
      GN_MERGES: true,
      GN_MERGE: true,
      AFFINE: affine,
    }, "gn_merge");
    const bindGroup = gpu.device.createBindGroup({
      label: "groupNorm stats",
      layout: merge.getBindGroupLayout(0),
      entries: affineBindings([
        { binding: 1, resource: { buffer: table } },
        { binding: 2, resource: { buffer: statsParams(null) } },
        { binding: 5, resource: { buffer: stats } },
      ]),
    });
    statsDispatches.push({ pipeline: merge, bindGroup, workgroups: statsGrid, label: "groupNorm stats" });
  }

  // Pass 3, per band: windowed x and out (in place: out's window only); or the packed operand.
  const apply = gpu.kernel(
    "norm",
    {
      ...unit,
      GN_APPLY: true,
      SILU: p.silu ?? false,
      INPLACE: inplace,
      ...(packed ? operandDefines(packed) : {}),
    },
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
    const out = packed
      ? packed.operand.resource
      : resourceOf(bandBinding(gpu, { tensor: outTensor!, rowBytes }, band));
    const bindGroup = gpu.device.createBindGroup({
      label: "groupNorm apply",
      layout: apply.getBindGroupLayout(0),
      entries: [
        ...(inplace ? [] : [{ binding: 0, resource: resourceOf(bandBinding(gpu, xPart, band)) }]),
        { binding: 1, resource: out instanceof GPUBuffer ? { buffer: out } : out },
        { binding: 2, resource: { buffer: table } },
        { binding: 3, resource: { buffer: params } },
      ],
    });
    const columns = packed ? (p.act === "f16" ? units / 2 : units) : units;
    const applyGrid: [number, number, number] = [Math.ceil(columns / 8), Math.ceil(blocks / 8), batch];
    checkGrid(gpu, applyGrid, "groupNorm apply");
    const d: Dispatch = { pipeline: apply, bindGroup, workgroups: applyGrid, label: "groupNorm apply" };
    return d;
  });
  return [...statsDispatches, ...applies];
}

export interface LayerNormParams {
  /** [M…, C]: normalised over the last dim */
  x: Tensor;
  /** f16 [C], or null/undefined for no affine */
  gamma?: Tensor | null;
  beta?: Tensor | null;
  /** Like x; must not be x. Or a GEMM's x operand (ops/operand.ts; C % 8 == 0): written as its texels. */
  out: Tensor | PackedActivations;
  eps: number;
  act: ActDType;
}

/** torch.nn.LayerNorm over the last dim: one invocation per row, mean and variance by two passes. */
export function layerNorm(gpu: Gpu, p: LayerNormParams): Dispatch[] {
  checkDType(p.x, p.act, "layerNorm x");
  const c = p.x.shape[p.x.shape.length - 1];
  const rows = p.x.numel / c;
  const packed = "operand" in p.out ? p.out : null;
  if (packed) checkPacked(packed, rows, c, p.act, "layerNorm");
  else {
    const out = p.out as Tensor;
    checkDType(out, p.act, "layerNorm out");
    if (out.numel !== p.x.numel) {
      throw new Error(`layerNorm: out [${out.shape}] does not match x [${p.x.shape}]`);
    }
    if (out.buffer === p.x.buffer) throw new Error("layerNorm: in-place is not supported");
  }
  checkAffine(p.gamma, p.beta, c, "layerNorm");
  const affine = !!p.gamma;
  const vec = c % 4 === 0;
  const units = vec ? c / 4 : c;
  const pipeline = gpu.kernel(
    "norm",
    {
      ...unitDefines(p.act, vec),
      LAYER_NORM: true,
      AFFINE: affine,
      ...(packed ? operandDefines(packed) : {}),
    },
    "layer_norm",
  );
  const params = uniformOf(gpu, [[rows, "u"], [units, "u"], [c, "u"], [p.eps, "f"]]);
  const out = packed ? packed.operand.resource : (p.out as Tensor).buffer;
  const entries: GPUBindGroupEntry[] = [
    { binding: 0, resource: { buffer: p.x.buffer } },
    { binding: 1, resource: out instanceof GPUBuffer ? { buffer: out } : out },
    { binding: 2, resource: { buffer: params } },
  ];
  if (p.gamma && p.beta) {
    entries.push({ binding: 3, resource: { buffer: p.gamma.buffer } });
    entries.push({ binding: 4, resource: { buffer: p.beta.buffer } });
  }
  const bindGroup = gpu.device.createBindGroup({
    label: "layerNorm",
    layout: pipeline.getBindGroupLayout(0),
    entries,
  });
  return [{ pipeline, bindGroup, workgroups: grid(rows, 64), label: "layerNorm" }];
}
