// The GEMM core shared by linear / GEGLU (src/ops/linear.ts, shaders/matmul.wgsl) and the implicit-GEMM conv
// (src/ops/conv.ts, shaders/conv.wgsl): the per-adapter tiling table, packed operands (textures or storage
// buffers), activation packing and the dispatch helpers. Weight repacking is in gemm_weights.ts, the
// register-tile code generator in gemm_tile.ts.
//
// Operand layout (see the header of shaders/matmul.wgsl): both GEMM operands are streams of 16-byte texels
// with K zero-padded to a multiple of 8. The weight is repacked once (`prepareLinearWeight`, gemm_weights.ts;
// cached per weight buffer), x is packed by a small dispatch at the start of every call when needed:
//   texture mode (llvmpipe): x and W live in rgba32uint textures 8192 texels wide (straight-line texture
//     gathers are much cheaper than lavapipe's per-lane storage-buffer loads); x is packed into a scratch
//     texture shared by all GEMMs of the same size class.
//   buffer mode (other adapters): x and W are read from storage buffers; when K % 8 == 0 the tensors are
//     bound as they are (no packing, no copy), otherwise they are packed into padded buffers.

import { type Dispatch, type Gpu, GpuError } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import type { Tensor } from "../gpu/tensor.ts";
import type { TilingName } from "../gpu/choices.ts";
import { tunedChoice } from "./tuning.ts";

/** Register tile and operand storage of the GEMM kernels. */
export interface GemmTiling {
  /**
   * "texture": operands in textures, register tiles, no workgroup memory (llvmpipe).
   * "buffer": operands in storage buffers, same register-tile kernel.
   * "shared": operands in storage buffers, workgroup-memory tiling (discrete GPUs); tn = 4 and wg = 256
   * are fixed, tm (rows per thread, 1-8) sets the block height 16·tm.
   */
  mode: "texture" | "buffer" | "shared";
  /** Output rows per invocation. */
  tm: number;
  /** Output columns per invocation, a multiple of 4. */
  tn: number;
  /** Invocations per workgroup. */
  wg: number;
  /**
   * Linear/GEGLU only (texture or buffer operands): one workgroup is one subgroup (wg = the adapter's fixed
   * subgroup size) computing one tm×tn tile, its lanes taking interleaved k-steps, reduced with subgroupAdd.
   * For few rows and long K (the time embedding: M = 2, K = 1280; CLIP and the cross-attention K/V
   * projections: M = 154), where the register tile leaves most lanes idle. Needs the subgroups feature.
   */
  splitK?: boolean;
  /**
   * f16 products summed in f16 over short runs of K (8 values in a register tile, one k-step; 8 per run of
   * the 32-deep workgroup tile, staged as f16), each run added into the f32 accumulators. Applies where x is
   * f16 (f16 activations; f32 activations always accumulate in f32) and the device has shader-f16. Halves
   * the workgroup memory and its traffic and lets GPUs use packed f16 FMAs; the error of a run is a few
   * f16 roundings of that run's size, not of the whole dot product. The autotuner keeps it only where its
   * output matches the f32-accumulating default within an f16 rounding step or two.
   */
  f16Acc?: boolean;
}

/**
 * Per-adapter tiling table. llvmpipe: big register tiles, operands in textures, one SIMD row (8 lanes) per
 * workgroup (measured, see shaders/matmul.wgsl). Other adapters: workgroup-memory tiling with 64×64 blocks
 * (not measured here: no discrete GPU was available; "buffer" is the barrier-free alternative). The
 * autotuner (autotune.ts) may pick another candidate per shape on the adapter in use.
 */
export const GEMM_TILINGS: Record<"llvmpipe" | "gpu", GemmTiling> = {
  llvmpipe: { mode: "texture", tm: 16, tn: 16, wg: 8 },
  gpu: { mode: "shared", tm: 4, tn: 4, wg: 256 },
};

/** Defaults when a caller overrides only the mode (the table row for it, or a small register tile). */
const MODE_DEFAULTS: Record<GemmTiling["mode"], GemmTiling> = {
  texture: GEMM_TILINGS.llvmpipe,
  buffer: { mode: "buffer", tm: 4, tn: 4, wg: 64 },
  shared: GEMM_TILINGS.gpu,
};

/** The forced-choice names of the modes (src/gpu/choices.ts). */
const MODE_OF: Record<TilingName, GemmTiling["mode"]> = {
  texture: "texture",
  workgroup: "shared",
  registers: "buffer",
};

/** Texture or storage buffer: how a mode stores its packed operands. */
export function storageOf(mode: GemmTiling["mode"]): "texture" | "buffer" {
  return mode === "texture" ? "texture" : "buffer";
}

export interface TilingChoice {
  /** The adapter's table row. */
  name: keyof typeof GEMM_TILINGS;
  /** The tiling GEMMs and convs use unless tuned per shape: the table row, or the forced choice. */
  tiling: GemmTiling;
  /** "forced": --gpu-choices / SD_GPU_FORCE set the tiling, tile or split-K (no tuning then). */
  source: "adapter" | "forced";
}

const tilingCache = new WeakMap<Gpu, TilingChoice>();

/** The tiling chosen for this adapter (or forced), and the table row of the adapter. */
export function gemmTiling(gpu: Gpu): TilingChoice {
  let choice = tilingCache.get(gpu);
  if (!choice) {
    const a = gpu.report.adapter;
    const name = /llvmpipe|lavapipe|swiftshader/i.test(a.description) || a.fallback ? "llvmpipe" : "gpu";
    const c = gpu.choices;
    if (c.tiling || c.tile || c.splitK !== undefined || c.accumulate === "f16") {
      const mode = c.tiling ? MODE_OF[c.tiling] : GEMM_TILINGS[name].mode;
      const base = MODE_DEFAULTS[mode];
      const tile = c.tile ? { tm: c.tile.tm, tn: c.tile.tn, ...(c.tile.wg ? { wg: c.tile.wg } : {}) } : {};
      const tiling = checkTiling(
        gpu,
        { ...base, ...tile, splitK: c.splitK ?? false, f16Acc: c.accumulate === "f16" },
        "forced GPU choices",
      );
      choice = { name, tiling, source: "forced" };
    } else {
      choice = { name, tiling: GEMM_TILINGS[name], source: "adapter" };
    }
    tilingCache.set(gpu, choice);
  }
  return choice;
}

/**
 * The tiling of one GEMM or conv: the adapter's (or forced) tiling, else the autotuner's pick for `shapeKey`
 * (see tuning.ts), with a caller's override on top (tests, benchmarks).
 */
export function resolveTiling(gpu: Gpu, override?: Partial<GemmTiling>, shapeKey?: string): GemmTiling {
  const choice = gemmTiling(gpu);
  // A tuned tiling reads the same operand storage as the adapter's (weights are packed once for it).
  const tuned = choice.source === "adapter" && shapeKey ? tunedChoice<GemmTiling>(gpu, shapeKey) : undefined;
  const adapter = tuned && storageOf(tuned.mode) === storageOf(choice.tiling.mode) ? tuned : choice.tiling;
  const base = override?.mode && override.mode !== adapter.mode ? MODE_DEFAULTS[override.mode] : adapter;
  if (!base) throw new Error(`GEMM tiling: bad mode ${override?.mode}`);
  return checkTiling(gpu, { ...base, ...override }, "GEMM tiling");
}

function checkTiling(gpu: Gpu, t: GemmTiling, what: string): GemmTiling {
  if (t.f16Acc && !gpu.f16) {
    throw new Error(`${what}: f16 accumulation needs shader-f16, which this GPU lacks`);
  }
  const acc = t.f16Acc ? { f16Acc: true } : {};
  if (t.mode === "shared") {
    if (!Number.isInteger(t.tm) || t.tm < 1 || t.tm > 8) {
      throw new Error(`${what}: shared mode needs tm 1-8`);
    }
    if (t.splitK) throw new Error(`${what}: split-K needs texture or buffer operands, not workgroup tiling`);
    return { mode: "shared", tm: t.tm, tn: 4, wg: 256, ...acc };
  }
  for (const k of ["tm", "tn", "wg"] as const) {
    if (!Number.isInteger(t[k]) || t[k] < 1 || t[k] > 256) throw new Error(`${what}: bad ${k}=${t[k]}`);
  }
  if (t.tn % 4 !== 0) throw new Error(`${what}: tn=${t.tn} must be a multiple of 4`);
  if (t.mode !== "texture" && t.mode !== "buffer") throw new Error(`${what}: bad mode ${t.mode}`);
  if (!t.splitK) return { mode: t.mode, tm: t.tm, tn: t.tn, wg: t.wg, ...acc };
  const size = gpu.report.subgroupSize;
  if (size === null) {
    throw new Error(
      `${what}: split-K needs subgroups of a fixed size (subgroups: ${gpu.report.subgroups})`,
    );
  }
  return { mode: t.mode, tm: t.tm, tn: t.tn, wg: size, splitK: true, ...acc };
}

/**
 * Workgroup memory of a shared-mode kernel: the x tile (32 × (16·tm + 1) f32) and one or two weight
 * tiles (32 × 65 f32); half of that staged as f16 (f16Acc), still checked at f32 size. Where the device
 * cannot hold it, the op falls back to the barrier-free buffer mode.
 */
export function fitShared(gpu: Gpu, t: GemmTiling, weightTiles: number): GemmTiling {
  if (t.mode !== "shared") return t;
  const bytes = 4 * (32 * (16 * t.tm + 1) + weightTiles * 32 * 65);
  if (bytes <= gpu.device.limits.maxComputeWorkgroupStorageSize) return t;
  return { mode: "buffer", tm: 4, tn: 4, wg: 64 };
}

// ---------------------------------------------------------------- packed operands

/** Texture width in texels; the kernels map a linear texel index t to (t & 8191, t >> 13). */
export const TEXTURE_WIDTH = 8192;
const TEXTURE_FORMAT: GPUTextureFormat = "rgba32uint";

/** A stream of 16-byte texels in a texture or a storage buffer. */
export interface Operand {
  storage: "texture" | "buffer";
  texels: number;
  resource: GPUBuffer | GPUTextureView;
  texture?: GPUTexture;
}

function textureRows(texels: number): number {
  return Math.max(1, Math.ceil(texels / TEXTURE_WIDTH));
}

export function createOperand(gpu: Gpu, mode: GemmTiling["mode"], texels: number, label: string): Operand {
  if (storageOf(mode) === "buffer") {
    const bytes = texels * 16;
    if (bytes > gpu.maxBinding) {
      throw new GpuError(label, `${bytes} bytes exceed the ${gpu.maxBinding}-byte storage binding limit`);
    }
    return { storage: "buffer", texels, resource: gpu.storage(bytes, label) };
  }
  const rows = textureRows(texels);
  const maxRows = gpu.device.limits.maxTextureDimension2D;
  if (rows > maxRows) {
    throw new GpuError(label, `${texels} texels need ${rows} texture rows, more than the limit ${maxRows}`);
  }
  const texture = gpu.device.createTexture({
    label,
    size: [TEXTURE_WIDTH, rows],
    format: TEXTURE_FORMAT,
    // COPY_*: LoRA merging keeps a copy of a packed weight to restore it from (models/lora/merge.ts).
    usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.COPY_SRC |
      GPUTextureUsage.COPY_DST,
  });
  return { storage: "texture", texels, resource: texture.createView({ label }), texture };
}

/**
 * Scratch operand for per-call packing of activations. Shared by every op of the same gpu, mode and size
 * class: an op's pack dispatch and GEMM dispatch are adjacent in the dispatch list and WebGPU orders
 * dispatches, so a later op overwriting the scratch cannot disturb an earlier one.
 */
const scratch = new WeakMap<Gpu, Map<string, Operand>>();

function sizeClass(n: number): number {
  // Powers of two up to 256, then multiples of 256 (bounded waste for the large VAE feature maps).
  if (n <= 256) return 2 ** Math.ceil(Math.log2(Math.max(1, n)));
  return Math.ceil(n / 256) * 256;
}

export function scratchOperand(gpu: Gpu, mode: GemmTiling["mode"], texels: number): Operand {
  let byGpu = scratch.get(gpu);
  if (!byGpu) scratch.set(gpu, byGpu = new Map());
  // Textures are classed by rows of 8192 texels, buffers by 64 KiB blocks. Rounding up to a class never
  // crosses the texture-row or binding limit when the request itself fits (createOperand reports requests
  // that don't).
  const storage = storageOf(mode);
  let alloc: number; // texels
  if (storage === "texture") {
    const rows = textureRows(texels);
    const maxRows = gpu.device.limits.maxTextureDimension2D;
    alloc = Math.max(rows, Math.min(sizeClass(rows), maxRows)) * TEXTURE_WIDTH;
  } else {
    const blocks = Math.ceil(texels / 4096);
    const fits = (t: number) => t * 16 <= gpu.maxBinding;
    alloc = [sizeClass(blocks) * 4096, blocks * 4096].find(fits) ?? texels;
  }
  const key = `${storage}:${alloc}`;
  let op = byGpu.get(key);
  if (!op) {
    op = createOperand(gpu, mode, alloc, `gemm scratch ${key}`);
    byGpu.set(key, op);
  }
  return op;
}

// ---------------------------------------------------------------- dispatch helpers

/** A bind group resource: a whole buffer, a window of one (row-banded ops) or a texture view. */
export type Resource = GPUBuffer | GPUBufferBinding | GPUTextureView;

/**
 * A dispatch whose bindings may include texture views (gpu.dispatch binds buffers only). A workgroup count
 * is folded into a 2-D grid (kernels linearise wid.x + wid.y · nwg.x); a pair is used as it is.
 */
export function makeDispatch(
  gpu: Gpu,
  pipeline: GPUComputePipeline,
  resources: Resource[],
  workgroups: number | [number, number],
  label: string,
): Dispatch {
  const lim = gpu.device.limits.maxComputeWorkgroupsPerDimension;
  const [x, y] = typeof workgroups === "number"
    ? [Math.min(workgroups, lim), Math.ceil(workgroups / lim)]
    : workgroups;
  if (x > lim || y > lim) throw new GpuError(label, `workgroup grid ${x}×${y} exceeds the limit ${lim}`);
  const bindGroup = gpu.device.createBindGroup({
    label,
    layout: pipeline.getBindGroupLayout(0),
    entries: resources.map((r, i) => ({ binding: i, resource: r instanceof GPUBuffer ? { buffer: r } : r })),
  });
  return { pipeline, bindGroup, workgroups: [x, y, 1], label };
}

/** Throws unless the tensor fits one storage binding. */
export function checkBinding(gpu: Gpu, t: Tensor, what: string, op: string): void {
  if (t.buffer.size > gpu.maxBinding) {
    throw new GpuError(
      op,
      `${what} [${t.shape}] occupies ${t.buffer.size} bytes, more than the ${gpu.maxBinding}-byte storage ` +
        `binding limit; split the batch or use f16 activations`,
    );
  }
}

export function checkDType(t: Tensor, dtype: string, what: string, op: string): void {
  if (t.dtype !== dtype) throw new Error(`${op}: ${what} [${t.shape}] is ${t.dtype}, expected ${dtype}`);
}

export function checkAct(gpu: Gpu, act: ActDType, op: string): void {
  if (act !== "f32" && act !== "f16") throw new Error(`${op}: act must be "f32" or "f16", got ${act}`);
  if (act === "f16" && !gpu.f16) {
    throw new Error(`${op}: f16 activations need shader-f16, which this GPU lacks`);
  }
}

export function checkDistinct(op: string, out: Tensor, inputs: Record<string, Tensor | undefined>): void {
  for (const [name, t] of Object.entries(inputs)) {
    if (t && t.buffer === out.buffer) throw new Error(`${op}: out must not share its buffer with ${name}`);
  }
}

/** Texels per x row: 8 values of K per texel for f16, 4 for f32; K padded to a multiple of 8. */
export function xRowTexels(k: number, act: ActDType): number {
  const k8 = Math.ceil(k / 8);
  return act === "f16" ? k8 : 2 * k8;
}

/**
 * The x operand of a GEMM: [rows, k] activations as texel rows. Returns the operand and the pack
 * dispatches to run first (none when the tensor can be bound as it is).
 */
export function activationOperand(
  gpu: Gpu,
  x: Tensor,
  rows: number,
  k: number,
  act: ActDType,
  mode: GemmTiling["mode"],
  label: string,
): { operand: Resource; dispatches: Dispatch[] } {
  if (storageOf(mode) === "buffer" && k % 8 === 0) return { operand: x.buffer, dispatches: [] };
  const dst = scratchOperand(gpu, mode, rows * xRowTexels(k, act));
  return { operand: dst.resource, dispatches: [packRows(gpu, x.buffer, 0, rows, k, act, dst, label)] };
}

/**
 * The dispatch that packs `rows` rows of K activations from `src` into texel rows of `dst` (from texel 0).
 * `srcOffset` is where row 0 starts in `src`: in 16-byte texels when K % 8 == 0 (rows are copied texel by
 * texel), else in activation elements. Row-banded convs pack a window of the input this way.
 */
export function packRows(
  gpu: Gpu,
  src: Resource,
  srcOffset: number,
  rows: number,
  k: number,
  act: ActDType,
  dst: Operand,
  label: string,
): Dispatch {
  const xRow = xRowTexels(k, act);
  const total = rows * xRow;
  if (total > dst.texels) {
    throw new Error(`${label}: packing ${total} texels into an operand of ${dst.texels}`);
  }
  const pipeline = gpu.kernel("matmul", {
    PACK_ROWS: true,
    ACT: act,
    TEX: dst.storage === "texture",
    ALIGNED: k % 8 === 0,
    XF16: act === "f16",
  }, "pack_rows");
  const params = gpu.uniform(new Uint32Array([k, xRow, total, srcOffset]), `${label} pack params`);
  return makeDispatch(gpu, pipeline, [src, dst.resource, params], Math.ceil(total / 64), `${label} pack x`);
}
