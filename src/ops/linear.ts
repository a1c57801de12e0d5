// Linear layers, GEGLU and batched matmul: builders for the GEMM kernels in shaders/matmul.wgsl.
//
//   linear: y[M, N] = act(x[M, K] · Wᵀ + b) (+ residual),  W [N, K] f16 (checkpoint Linear layout)
//   geglu:  y[M, D] = (x·W[0:D]ᵀ + b[0:D]) * gelu_erf(x·W[D:2D]ᵀ + b[D:2D]), one kernel, [M, 2D] never stored
//   bmm:    out[b] = alpha · A[b] · B[b] for act × act operands (optionally transposed), small and simple
//
// Operand layout (see the header of shaders/matmul.wgsl): both GEMM operands are streams of 16-byte texels
// with K zero-padded to a multiple of 8. The weight is repacked once (`prepareLinearWeight`, cached per
// weight buffer), x is packed by a small dispatch at the start of every call when needed:
//   texture mode (llvmpipe): x and W live in rgba32uint textures 8192 texels wide (straight-line texture
//     gathers are much cheaper than lavapipe's per-lane storage-buffer loads); x is packed into a scratch
//     texture shared by all GEMMs of the same size class.
//   buffer mode (other adapters): x and W are read from storage buffers; when K % 8 == 0 the tensors are
//     bound as they are (no packing, no copy), otherwise they are packed into padded buffers.
// The tile body is generated here as straight-line WGSL (one variable per accumulator) and spliced into the
// kernel through the {{SETUP}}/{{STEP}}/{{STORE}} defines; pipelines are cached per variant, not per shape
// (shapes travel in a uniform).

import { type Dispatch, type Gpu, GpuError } from "../gpu/device.ts";
import type { ActDType, ShaderDefines } from "../gpu/pipelines.ts";
import type { Tensor } from "../gpu/tensor.ts";

export type Activation = "none" | "gelu" | "gelu_tanh" | "quick_gelu" | "silu";

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
}

/**
 * Per-adapter tiling table. llvmpipe: big register tiles, operands in textures, one SIMD row (8 lanes) per
 * workgroup (measured, see shaders/matmul.wgsl). Other adapters: workgroup-memory tiling with 64×64 blocks
 * (not measured here: no discrete GPU was available; "buffer" is the barrier-free alternative).
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

/** Texture or storage buffer: how a mode stores its packed operands. */
export function storageOf(mode: GemmTiling["mode"]): "texture" | "buffer" {
  return mode === "texture" ? "texture" : "buffer";
}

const tilingCache = new WeakMap<Gpu, { name: keyof typeof GEMM_TILINGS; tiling: GemmTiling }>();

/** The tiling chosen for this adapter, and the table row it came from. */
export function gemmTiling(gpu: Gpu): { name: keyof typeof GEMM_TILINGS; tiling: GemmTiling } {
  let choice = tilingCache.get(gpu);
  if (!choice) {
    const a = gpu.report.adapter;
    const name = /llvmpipe|lavapipe|swiftshader/i.test(a.description) || a.fallback ? "llvmpipe" : "gpu";
    choice = { name, tiling: GEMM_TILINGS[name] };
    tilingCache.set(gpu, choice);
  }
  return choice;
}

export function resolveTiling(gpu: Gpu, override?: Partial<GemmTiling>): GemmTiling {
  const adapter = gemmTiling(gpu).tiling;
  const base = override?.mode && override.mode !== adapter.mode ? MODE_DEFAULTS[override.mode] : adapter;
  if (!base) throw new Error(`GEMM tiling: bad mode ${override?.mode}`);
  const t = { ...base, ...override };
  if (t.mode === "shared") {
    if (!Number.isInteger(t.tm) || t.tm < 1 || t.tm > 8) {
      throw new Error(`GEMM tiling: shared mode needs tm 1-8`);
    }
    return { mode: "shared", tm: t.tm, tn: 4, wg: 256 };
  }
  for (const k of ["tm", "tn", "wg"] as const) {
    if (!Number.isInteger(t[k]) || t[k] < 1 || t[k] > 256) throw new Error(`GEMM tiling: bad ${k}=${t[k]}`);
  }
  if (t.tn % 4 !== 0) throw new Error(`GEMM tiling: tn=${t.tn} must be a multiple of 4`);
  if (t.mode !== "texture" && t.mode !== "buffer") throw new Error(`GEMM tiling: bad mode ${t.mode}`);
  return t;
}

/**
 * Workgroup memory of a shared-mode kernel: the x tile (32 × (16·tm + 1) f32) and one or two weight
 * tiles (32 × 65 f32). Where the device cannot hold it, the op falls back to the barrier-free buffer mode.
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
    usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING,
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

// ---------------------------------------------------------------- tile code generation

export interface TileCodeOptions {
  tm: number;
  /** A multiple of 4 (the epilogue works on groups of 4 columns). */
  tn: number;
  /** x texels hold f16 (one per k-step) instead of f32 (two per k-step). */
  xf16: boolean;
  /** GEGLU: second accumulator set g_i_j over the gate weight rows (offset p.gate). */
  geglu?: boolean;
  /** conv: x offsets come from the per-tap TAP block and zero-padding taps are masked. */
  conv?: boolean;
}

/**
 * Straight-line WGSL for the register tile (see matmul.wgsl / conv.wgsl): SETUP (offsets, accumulators),
 * TAP (conv: per-tap input offsets), STEP (one k-step), COLLECT (accumulators → the epilogue's vec4 array),
 * plus the TILE_VEC4S / TN4 sizes.
 */
export function tileCode(o: TileCodeOptions): ShaderDefines {
  if (o.tn % 4 !== 0) throw new Error(`GEMM tiling: tn=${o.tn} must be a multiple of 4`);
  const rows = [...Array(o.tm).keys()];
  const cols = [...Array(o.tn).keys()];
  const setup: string[] = [];
  const tap: string[] = [];
  const step: string[] = [];
  const collect: string[] = [];
  if (o.conv) {
    for (const i of rows) {
      setup.push(
        // pb: the image's first texel relative to the operand's first texel (wrapping u32 arithmetic: a
        // row band's operand starts at global texel xTex0, and only in-image taps are ever selected).
        `  let m${i} = min(row0 + ${i}u, p.M - 1u); let r${i} = m${i} % p.HWo;` +
          ` let pb${i} = (m${i} / p.HWo) * p.H * p.W * p.xPix - p.xTex0;`,
        `  let iy${i} = i32(r${i} / p.Wo + p.oy0) * i32(p.stride) - i32(p.padTop);` +
          ` let ix${i} = i32(r${i} % p.Wo) * i32(p.stride) - i32(p.padLeft);`,
      );
      tap.push(
        `    let y${i} = iy${i} + ky; let x${i} = ix${i} + kx;`,
        `    let ok${i} = y${i} >= 0 && y${i} < i32(p.H) && x${i} >= 0 && x${i} < i32(p.W);`,
        `    let xr${i} = select(0u, pb${i} + (u32(y${i}) * p.W + u32(x${i})) * p.xPix, ok${i});`,
      );
    }
    for (const j of cols) setup.push(`  let wr${j} = min(col0 + ${j}u, p.N - 1u) * p.taps * p.C8;`);
  } else {
    for (const i of rows) setup.push(`  let xr${i} = min(row0 + ${i}u, p.M - 1u) * p.xRow;`);
    for (const j of cols) setup.push(`  let wr${j} = min(col0 + ${j}u, p.N - 1u) * p.K8;`);
  }
  for (const i of rows) {
    for (const j of cols) setup.push(`  var a${i}_${j} = 0.0;${o.geglu ? ` var g${i}_${j} = 0.0;` : ""}`);
  }
  // One k-step: 8 values of K. Conv masks padding taps on the raw texels (zero bits are 0.0 in f16 and f32).
  const k = o.conv ? "c" : "k";
  const wOff = o.conv ? `wt + c` : "k";
  const xLoad = (i: number, t: string) =>
    o.conv ? `select(vec4<u32>(), load_x(${t}), ok${i})` : `load_x(${t})`;
  for (const i of rows) {
    if (o.xf16) {
      step.push(
        `      let xt${i} = ${
          xLoad(i, `xr${i} + ${k}`)
        }; let xa${i} = lo8(xt${i}); let xb${i} = hi8(xt${i});`,
      );
    } else {
      step.push(
        `      let xa${i} = bitcast<vec4<f32>>(${xLoad(i, `xr${i} + 2u * ${k}`)});` +
          ` let xb${i} = bitcast<vec4<f32>>(${xLoad(i, `xr${i} + 2u * ${k} + 1u`)});`,
      );
    }
  }
  for (const j of cols) {
    step.push(
      `      let wt${j} = load_w(wr${j} + ${wOff}); let wa${j} = lo8(wt${j}); let wb${j} = hi8(wt${j});`,
    );
    for (const i of rows) step.push(`      a${i}_${j} += dot(xa${i}, wa${j}) + dot(xb${i}, wb${j});`);
    if (o.geglu) {
      step.push(
        `      let vt${j} = load_w(wr${j} + p.gate + ${wOff}); let va${j} = lo8(vt${j}); let vb${j} = hi8(vt${j});`,
      );
      for (const i of rows) step.push(`      g${i}_${j} += dot(xa${i}, va${j}) + dot(xb${i}, vb${j});`);
    }
  }
  const tn4 = o.tn / 4;
  for (const i of rows) {
    for (let c = 0; c < tn4; c++) {
      const q = i * tn4 + c;
      const v = (s: string) => `vec4<f32>(${[0, 1, 2, 3].map((d) => `${s}${i}_${4 * c + d}`).join(", ")})`;
      collect.push(`  o[${q}] = ${v("a")};${o.geglu ? ` og[${q}] = ${v("g")};` : ""}`);
    }
  }
  return {
    SETUP: setup.join("\n"),
    TAP: tap.join("\n"),
    STEP: step.join("\n"),
    COLLECT: collect.join("\n"),
    TILE_VEC4S: o.tm * tn4,
    TN4: tn4,
  };
}

// ---------------------------------------------------------------- weights

/** A Linear weight [N, K] f16 repacked into texels [N, ceil(K/8)] for one operand mode. */
export interface LinearWeight {
  readonly kind: "linear-weight";
  readonly n: number;
  readonly k: number;
  readonly k8: number;
  readonly storage: "texture" | "buffer";
  /** The packed texels, or (buffer mode, K % 8 == 0) the checkpoint weight's own buffer. */
  readonly operand: GPUBuffer | GPUTextureView;
  /** The texture behind `operand` in texture mode (for memory accounting and destroy). */
  readonly texture?: GPUTexture;
}

const preparedLinear = new WeakMap<GPUBuffer, Map<string, LinearWeight>>();

/**
 * Repacks a checkpoint Linear weight [N, K] f16 once (cached per weight buffer and mode). In texture mode
 * this makes a texture copy (the caller may destroy the original afterwards); in buffer mode with
 * K % 8 == 0 the original buffer is used as it is and must stay alive.
 */
export function prepareLinearWeight(gpu: Gpu, weight: Tensor, mode?: GemmTiling["mode"]): LinearWeight {
  const op = "prepareLinearWeight";
  if (weight.shape.length !== 2) throw new Error(`${op}: weight must be [N, K], got [${weight.shape}]`);
  checkDType(weight, "f16", "weight", op);
  const storage = storageOf(mode ?? gemmTiling(gpu).tiling.mode);
  let byStorage = preparedLinear.get(weight.buffer);
  const hit = byStorage?.get(storage);
  if (hit) return hit;
  const [n, k] = weight.shape;
  const k8 = Math.ceil(k / 8);
  let operand: GPUBuffer | GPUTextureView;
  let texture: GPUTexture | undefined;
  if (storage === "buffer" && k % 8 === 0) {
    operand = weight.buffer;
  } else {
    const total = n * k8;
    const dst = createOperand(gpu, storage, total, `${weight.label || "linear weight"} packed`);
    const pipeline = gpu.kernel("matmul", { PACK_WEIGHT: true, TEX: storage === "texture" }, "pack_weight");
    const params = gpu.uniform(new Uint32Array([k, k8, total, 0]), "pack weight params");
    gpu.run(
      [makeDispatch(gpu, pipeline, [weight.buffer, dst.resource, params], Math.ceil(total / 64), op)],
      op,
    );
    operand = dst.resource;
    texture = dst.texture;
  }
  const w: LinearWeight = { kind: "linear-weight", n, k, k8, storage, operand, texture };
  if (!byStorage) preparedLinear.set(weight.buffer, byStorage = new Map());
  byStorage.set(storage, w);
  return w;
}

function asLinearWeight(
  gpu: Gpu,
  weight: Tensor | LinearWeight,
  mode: GemmTiling["mode"],
  op: string,
): LinearWeight {
  if ("kind" in weight && weight.kind === "linear-weight") {
    if (weight.storage !== storageOf(mode)) {
      throw new Error(
        `${op}: weight was prepared for ${weight.storage} operands, tiling "${mode}" reads ${
          storageOf(mode)
        }`,
      );
    }
    return weight;
  }
  return prepareLinearWeight(gpu, weight as Tensor, mode);
}

// ---------------------------------------------------------------- linear / geglu

export interface LinearParams {
  /** [..., K] activations (M = numel / K rows). */
  x: Tensor;
  /** [N, K] f16 checkpoint weight, or one prepared by prepareLinearWeight. */
  weight: Tensor | LinearWeight;
  /** [N] f16. */
  bias?: Tensor;
  /** [..., N] activations, M rows. */
  out: Tensor;
  /** [..., N] added after the activation: out = act(x·Wᵀ + b) + residual. */
  residual?: Tensor;
  activation?: Activation;
  act: ActDType;
  /** Overrides the adapter's tiling (tests, benchmarks). */
  tiling?: Partial<GemmTiling>;
  label?: string;
}

const ACTIVATION_DEFINES: Record<Activation, string | null> = {
  none: null,
  gelu: "GELU",
  gelu_tanh: "GELU_TANH",
  quick_gelu: "QUICK_GELU",
  silu: "SILU",
};

interface GemmSpec {
  op: string;
  label: string;
  x: Tensor;
  weight: LinearWeight;
  m: number;
  /** Output columns (GEGLU: D). */
  n: number;
  geglu: boolean;
  bias?: Tensor;
  residual?: Tensor;
  out: Tensor;
  activation: Activation;
  act: ActDType;
  tiling: GemmTiling;
}

function gemm(gpu: Gpu, s: GemmSpec): Dispatch[] {
  const { tm, tn, wg, mode } = fitShared(gpu, s.tiling, s.geglu ? 2 : 1);
  const shared = mode === "shared";
  const k = s.weight.k;
  const xPack = activationOperand(gpu, s.x, s.m, k, s.act, mode, s.label);
  const vecOut = s.n % 4 === 0;
  const code = shared
    ? { SHARED: true, SHARED_A: 32 * (16 * tm + 1) }
    : tileCode({ tm, tn, xf16: s.act === "f16", geglu: s.geglu });
  const defines: ShaderDefines = {
    GEMM: true,
    ACT: s.act,
    XF16: s.act === "f16",
    TEX: mode === "texture",
    VEC_OUT: vecOut,
    GEGLU: s.geglu,
    HAS_BIAS: !!s.bias,
    HAS_RESIDUAL: !!s.residual,
    TM: tm,
    TN: tn,
    WG: wg,
    ...code,
  };
  const activation = ACTIVATION_DEFINES[s.activation];
  if (activation === undefined) throw new Error(`${s.op}: unknown activation "${s.activation}"`);
  if (activation) defines[activation] = true;
  const resources: Resource[] = [xPack.operand, s.weight.operand, s.out.buffer];
  const tilesN = Math.ceil(s.n / tn);
  const tiles = tilesN * Math.ceil(s.m / tm);
  const params = gpu.uniform(
    new Uint32Array([s.m, s.n, s.weight.k8, tilesN, tiles, xRowTexels(k, s.act), s.n * s.weight.k8, 0]),
    `${s.label} params`,
  );
  resources.push(params);
  if (s.bias) {
    defines.BIAS_BINDING = resources.length;
    resources.push(s.bias.buffer);
  }
  if (s.residual) {
    defines.RESIDUAL_BINDING = resources.length;
    resources.push(s.residual.buffer);
  }
  const pipeline = gpu.kernel("matmul", defines, shared ? "gemm_shared" : "gemm");
  const grid: number | [number, number] = shared
    ? [Math.ceil(s.n / 64), Math.ceil(s.m / (16 * tm))]
    : Math.ceil(tiles / wg);
  return [...xPack.dispatches, makeDispatch(gpu, pipeline, resources, grid, s.label)];
}

function lastDim(t: Tensor): number {
  return t.shape[t.shape.length - 1];
}

function checkRows(op: string, what: string, t: Tensor, cols: number): number {
  if (t.shape.length < 1 || lastDim(t) !== cols) {
    throw new Error(`${op}: ${what} [${t.shape}] must have last dimension ${cols}`);
  }
  return t.numel / cols;
}

/** y = act(x · Wᵀ + b) + residual. Returns [pack x (when needed), gemm]. */
export function linear(gpu: Gpu, p: LinearParams): Dispatch[] {
  const op = `linear${p.label ? ` ${p.label}` : ""}`;
  checkAct(gpu, p.act, op);
  const tiling = resolveTiling(gpu, p.tiling);
  const weight = asLinearWeight(gpu, p.weight, tiling.mode, op);
  const { n, k } = weight;
  const m = checkRows(op, "x", p.x, k);
  checkDType(p.x, p.act, "x", op);
  checkDType(p.out, p.act, "out", op);
  if (checkRows(op, "out", p.out, n) !== m) {
    throw new Error(`${op}: out [${p.out.shape}] must hold ${m}×${n} values for x [${p.x.shape}]`);
  }
  if (p.bias) {
    checkDType(p.bias, "f16", "bias", op);
    if (p.bias.numel !== n) throw new Error(`${op}: bias [${p.bias.shape}] must have ${n} values`);
  }
  if (p.residual) {
    checkDType(p.residual, p.act, "residual", op);
    if (p.residual.numel !== m * n) throw new Error(`${op}: residual [${p.residual.shape}] must match out`);
  }
  for (const [what, t] of [["x", p.x], ["out", p.out], ["residual", p.residual]] as const) {
    if (t) checkBinding(gpu, t, what, op);
  }
  checkDistinct(op, p.out, { x: p.x, residual: p.residual, bias: p.bias });
  return gemm(gpu, {
    op,
    label: op,
    x: p.x,
    weight,
    m,
    n,
    geglu: false,
    bias: p.bias,
    residual: p.residual,
    out: p.out,
    activation: p.activation ?? "none",
    act: p.act,
    tiling,
  });
}

export interface GegluParams {
  /** [..., K] */
  x: Tensor;
  /** [2·D, K] f16: rows 0..D-1 the value projection, D..2D-1 the gate. */
  weight: Tensor | LinearWeight;
  /** [2·D] f16. */
  bias?: Tensor;
  /** [..., D] */
  out: Tensor;
  act: ActDType;
  tiling?: Partial<GemmTiling>;
  label?: string;
}

/** Diffusers GEGLU: (x·W_aᵀ + b_a) * gelu_erf(x·W_gᵀ + b_g) in one GEMM kernel. */
export function geglu(gpu: Gpu, p: GegluParams): Dispatch[] {
  const op = `geglu${p.label ? ` ${p.label}` : ""}`;
  checkAct(gpu, p.act, op);
  // Two accumulator sets: half the columns keep the register tile (and compile time) of a linear.
  const base = resolveTiling(gpu, p.tiling);
  const tiling = p.tiling?.tn || base.mode === "shared"
    ? base
    : { ...base, tn: Math.max(4, 4 * Math.floor(base.tn / 8)) };
  const weight = asLinearWeight(gpu, p.weight, tiling.mode, op);
  const { n: n2, k } = weight;
  if (n2 % 2 !== 0) throw new Error(`${op}: weight has ${n2} rows, expected an even 2·D`);
  const d = n2 / 2;
  const m = checkRows(op, "x", p.x, k);
  checkDType(p.x, p.act, "x", op);
  checkDType(p.out, p.act, "out", op);
  if (checkRows(op, "out", p.out, d) !== m) {
    throw new Error(`${op}: out [${p.out.shape}] must hold ${m}×${d} values for x [${p.x.shape}]`);
  }
  if (p.bias) {
    checkDType(p.bias, "f16", "bias", op);
    if (p.bias.numel !== n2) throw new Error(`${op}: bias [${p.bias.shape}] must have ${n2} values`);
  }
  checkBinding(gpu, p.x, "x", op);
  checkBinding(gpu, p.out, "out", op);
  checkDistinct(op, p.out, { x: p.x });
  return gemm(gpu, {
    op,
    label: op,
    x: p.x,
    weight,
    m,
    n: d,
    geglu: true,
    bias: p.bias,
    out: p.out,
    activation: "none",
    act: p.act,
    tiling,
  });
}

// ---------------------------------------------------------------- batched matmul

export interface BmmParams {
  /** [B, M, K] ([B, K, M] with transA); 2-D means B = 1. */
  a: Tensor;
  /** [B, K, N] ([B, N, K] with transB). */
  b: Tensor;
  /** [B, M, N] */
  out: Tensor;
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  act: ActDType;
  label?: string;
}

function as3d(t: Tensor, op: string, what: string): [number, number, number] {
  if (t.shape.length === 2) return [1, t.shape[0], t.shape[1]];
  if (t.shape.length === 3) return [t.shape[0], t.shape[1], t.shape[2]];
  throw new Error(`${op}: ${what} must be 2-D or 3-D, got [${t.shape}]`);
}

/** out[b] = alpha · op(A[b]) · op(B[b]), both operands activations. */
export function bmm(gpu: Gpu, p: BmmParams): Dispatch[] {
  const op = `bmm${p.label ? ` ${p.label}` : ""}`;
  checkAct(gpu, p.act, op);
  for (const [what, t] of [["a", p.a], ["b", p.b], ["out", p.out]] as const) {
    checkDType(t, p.act, what, op);
    checkBinding(gpu, t, what, op);
  }
  const [ba, a1, a2] = as3d(p.a, op, "a");
  const [bb, b1, b2] = as3d(p.b, op, "b");
  const [bo, m, n] = as3d(p.out, op, "out");
  const [am, ak] = p.transA ? [a2, a1] : [a1, a2];
  const [bk, bn] = p.transB ? [b2, b1] : [b1, b2];
  if (ak !== bk || am !== m || bn !== n || ba !== bo || bb !== bo) {
    throw new Error(
      `${op}: shapes a [${p.a.shape}]${p.transA ? "ᵀ" : ""} · b [${p.b.shape}]${p.transB ? "ᵀ" : ""} ` +
        `do not give out [${p.out.shape}]`,
    );
  }
  checkDistinct(op, p.out, { a: p.a, b: p.b });
  const k = ak;
  // Element strides: A (m, k), B (k, n).
  const [aRow, aCol] = p.transA ? [1, m] : [k, 1];
  const [bRow, bCol] = p.transB ? [1, k] : [n, 1];
  const words = new Uint32Array(12);
  const f = new Float32Array(words.buffer);
  words.set([m, n, k]);
  f[3] = p.alpha ?? 1;
  words.set([m * k, aRow, aCol, k * n, bRow, bCol], 4);
  const params = gpu.uniform(words, `${op} params`);
  const pipeline = gpu.kernel("matmul", { BMM: true, ACT: p.act }, "bmm");
  const gx = Math.ceil(n / 32);
  const gy = Math.ceil(m / 32);
  const lim = gpu.device.limits.maxComputeWorkgroupsPerDimension;
  if (gx > lim || gy > lim || bo > lim) {
    throw new GpuError(op, `grid ${gx}×${gy}×${bo} exceeds the limit ${lim}`);
  }
  const bindGroup = gpu.bind(pipeline, [p.a.buffer, p.b.buffer, p.out.buffer, params], op);
  return [{ pipeline, bindGroup, workgroups: [gx, gy, bo], label: op }];
}
