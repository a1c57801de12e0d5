// Elementwise and data-movement op builders: residual add, broadcast add, scale/affine, activations (SiLU,
// GELU, quick GELU), GEGLU, channel concat/slice, nearest ×2 upsampling (NHWC), diffusers' sinusoidal
// timestep embedding, NCHW ↔ NHWC layout conversion, dtype casts and classifier-free guidance.
// Each builder returns Dispatch[] built once per shape (pipelines cached, uniforms written at build time).
// add, map (and its activations), copyChannels (concat/slice) and upsampleNearest2x split into row bands
// when a tensor exceeds one storage binding (see bands.ts): one dispatch per band, binding only the band's
// window of each tensor, with the same per-element arithmetic (results equal the unbanded op's).

import type { Binding, Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType, ShaderDefines } from "../gpu/pipelines.ts";
import { bytesPerElement, type DType, type Tensor, uploadTensor } from "../gpu/tensor.ts";
import { bandBinding, type BandedTensor, bandsIfNeeded, bindingLimit } from "./bands.ts";

// ---- shared helpers (also used by norm.ts) ----

/** Workgroup grid for `n` invocations at `wgSize` per workgroup: x up to 65535, the rest in y. */
export function grid(n: number, wgSize = 256): [number, number, number] {
  const groups = Math.max(1, Math.ceil(n / wgSize));
  const x = Math.min(groups, 65535);
  return [x, Math.ceil(groups / x), 1];
}

/**
 * Defines for the "unit" access scheme of elementwise.wgsl / norm.wgsl: 4 elements per unit (vec4<f32>, or
 * 4 packed halves for f16) when `vec`, else one scalar element.
 */
export function unitDefines(act: ActDType, vec: boolean): ShaderDefines {
  if (!vec) return { ACT: act, VEC: false, UT: "f32", ELEM: "act", UNPACK: "f32", PACK: "act" };
  return act === "f32"
    ? { ACT: act, VEC: true, UT: "vec4<f32>", ELEM: "vec4<f32>", UNPACK: "vec4<f32>", PACK: "vec4<f32>" }
    : { ACT: act, VEC: true, UT: "vec4<f32>", ELEM: "vec2<u32>", UNPACK: "h4", PACK: "pk4" };
}

export function checkDType(t: Tensor, act: DType, what: string): void {
  if (t.dtype !== act) throw new Error(`${what}: tensor ${t.label || "?"} is ${t.dtype}, expected ${act}`);
}

/** A bind group resource for a whole buffer or a window of one. */
export function resourceOf(b: Binding): GPUBufferBinding {
  return b instanceof GPUBuffer ? { buffer: b } : { buffer: b.buffer, offset: b.offset, size: b.size };
}

/**
 * Flat bands over `units` vector units of `unitBytes` shared by all `tensors` (same shape and dtype), or a
 * single unbanded range [0, units) when they fit in one binding.
 */
function flatBands(
  gpu: Gpu,
  what: string,
  tensors: Tensor[],
  units: number,
  unitBytes: number,
  maxBindingBytes: number | undefined,
): { bind: (t: Tensor) => Binding; count: number }[] {
  const limit = bindingLimit(gpu, maxBindingBytes);
  const parts = tensors.map((tensor): BandedTensor => ({ tensor, rowBytes: unitBytes }));
  const bands = bandsIfNeeded(gpu, what, units, parts, limit);
  return (bands ?? [null]).map((band) => ({
    bind: (t: Tensor) => bandBinding(gpu, { tensor: t, rowBytes: unitBytes }, band),
    count: band ? band.end - band.start : units,
  }));
}

function checkNumel(t: Tensor, n: number, what: string): void {
  if (t.numel !== n) {
    throw new Error(`${what}: tensor ${t.label || "?"} [${t.shape}] should have ${n} elements`);
  }
}

/** A uniform buffer from 32-bit words, each given as [value, "u"] (u32) or [value, "f"] (f32). */
export function uniformOf(gpu: Gpu, words: ([number, "u"] | [number, "f"])[]): GPUBuffer {
  const data = new Uint32Array(Math.max(4, Math.ceil(words.length / 4) * 4));
  const f = new Float32Array(data.buffer);
  words.forEach(([value, kind], i) => {
    if (kind === "u") {
      if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new Error(`bad u32 ${value}`);
      data[i] = value;
    } else {
      f[i] = value;
    }
  });
  return gpu.uniform(data);
}

const u = (v: number): [number, "u"] => [v, "u"];
const f = (v: number): [number, "f"] => [v, "f"];

function scalarType(d: DType): string {
  return d === "f32" ? "f32" : "f16";
}

function needF16(gpu: Gpu, tensors: Tensor[], what: string): void {
  if (!gpu.f16 && tensors.some((t) => t.dtype === "f16")) {
    throw new Error(`${what}: f16 tensors need shader-f16, which this device lacks`);
  }
}

// ---- residual add ----

export interface AddParams {
  a: Tensor;
  b: Tensor;
  /** May be `a` itself (in-place). Must not be `b`. */
  out: Tensor;
  /** out = a · alpha + b · beta. Defaults 1, 1. */
  alpha?: number;
  beta?: number;
  act: ActDType;
  /** Storage binding limit to split at (tests); defaults to the device's. */
  maxBindingBytes?: number;
}

/** out = a · alpha + b · beta (residual add; diffusers' (x + h) / s is alpha = beta = 1/s). */
export function add(gpu: Gpu, p: AddParams): Dispatch[] {
  const n = p.a.numel;
  for (const [t, w] of [[p.a, "a"], [p.b, "b"], [p.out, "out"]] as const) {
    checkDType(t, p.act, `add ${w}`);
    checkNumel(t, n, `add ${w}`);
  }
  if (p.out.buffer === p.b.buffer) throw new Error("add: out must not be b (pass the in-place operand as a)");
  const inplace = p.out.buffer === p.a.buffer;
  const vec = n % 4 === 0;
  const units = vec ? n / 4 : n;
  const pipeline = gpu.kernel(
    "elementwise",
    { ...unitDefines(p.act, vec), ADD: true, INPLACE: inplace },
    "add",
  );
  const unitBytes = (vec ? 4 : 1) * bytesPerElement(p.act);
  const bands = flatBands(gpu, `add [${p.a.shape}]`, [p.a, p.b, p.out], units, unitBytes, p.maxBindingBytes);
  return bands.map(({ bind, count }) => {
    const params = uniformOf(gpu, [u(count), f(p.alpha ?? 1), f(p.beta ?? 1)]);
    // In place, the shader reads `a` through out's binding and never declares binding 0.
    const buffers = [bind(p.a), bind(p.b), bind(p.out), params];
    return dispatchSparse(gpu, pipeline, buffers, inplace ? [1, 2, 3] : [0, 1, 2, 3], grid(count), "add");
  });
}

/** A dispatch that binds only the listed binding indices (entry points that skip a binding slot). */
function dispatchSparse(
  gpu: Gpu,
  pipeline: GPUComputePipeline,
  buffers: Binding[],
  bindings: number[],
  workgroups: [number, number, number],
  label: string,
): Dispatch {
  const lim = gpu.device.limits.maxComputeWorkgroupsPerDimension;
  if (workgroups.some((w) => w > lim)) {
    throw new Error(`${label}: workgroup count ${workgroups} exceeds ${lim}`);
  }
  const bindGroup = gpu.device.createBindGroup({
    label,
    layout: pipeline.getBindGroupLayout(0),
    entries: bindings.map((binding) => ({ binding, resource: resourceOf(buffers[binding]) })),
  });
  return { pipeline, bindGroup, workgroups, label };
}

// ---- broadcast add ----

export interface AddBroadcastParams {
  /** [B, …, C] */
  x: Tensor;
  /** [B, C] (or [B, 1, …, C]): added to every position of batch item b */
  y: Tensor;
  /** like x; may be x itself (in-place) */
  out: Tensor;
  act: ActDType;
}

/** out[b, …, c] = x[b, …, c] + y[b, c] (a ResBlock's time-embedding projection added to every pixel). */
export function addBroadcast(gpu: Gpu, p: AddBroadcastParams): Dispatch[] {
  const batch = p.x.shape[0];
  const c = p.x.shape[p.x.shape.length - 1];
  checkDType(p.x, p.act, "addBroadcast x");
  checkDType(p.y, p.act, "addBroadcast y");
  checkDType(p.out, p.act, "addBroadcast out");
  checkNumel(p.y, batch * c, "addBroadcast y");
  checkNumel(p.out, p.x.numel, "addBroadcast out");
  const inplace = p.out.buffer === p.x.buffer;
  const vec = c % 4 === 0;
  const units = vec ? c / 4 : c;
  const n = vec ? p.x.numel / 4 : p.x.numel;
  const pipeline = gpu.kernel(
    "elementwise",
    { ...unitDefines(p.act, vec), ADD_BROADCAST: true, INPLACE: inplace },
    "add_broadcast",
  );
  const params = uniformOf(gpu, [u(n), u(units), u(n / batch)]);
  const buffers = [p.x.buffer, p.y.buffer, p.out.buffer, params];
  return [
    dispatchSparse(gpu, pipeline, buffers, inplace ? [1, 2, 3] : [0, 1, 2, 3], grid(n), "add_broadcast"),
  ];
}

// ---- scale / activations ----

export type Activation = "none" | "silu" | "gelu" | "gelu_tanh" | "quick_gelu";

export interface MapParams {
  x: Tensor;
  /** like x; may be x itself (in-place) */
  out: Tensor;
  /** y = activation(x · scale + bias), then optionally clamped to [lo, hi]. */
  scale?: number;
  bias?: number;
  activation?: Activation;
  clamp?: [number, number];
  act: ActDType;
  /** Storage binding limit to split at (tests); defaults to the device's. */
  maxBindingBytes?: number;
}

/** out = clamp(activation(x · scale + bias)): scaling, SiLU/GELU, VAE output mapping (x/2 + 0.5 clamped). */
export function map(gpu: Gpu, p: MapParams): Dispatch[] {
  checkDType(p.x, p.act, "map x");
  checkDType(p.out, p.act, "map out");
  checkNumel(p.out, p.x.numel, "map out");
  const n = p.x.numel;
  const vec = n % 4 === 0;
  const units = vec ? n / 4 : n;
  const inplace = p.out.buffer === p.x.buffer;
  const activation = p.activation ?? "none";
  const pipeline = gpu.kernel("elementwise", {
    ...unitDefines(p.act, vec),
    MAP: true,
    INPLACE: inplace,
    CLAMP: p.clamp !== undefined,
    ACTIVATION: activation === "none" ? "" : `act_${activation}`,
  }, "map");
  const [lo, hi] = p.clamp ?? [0, 0];
  const unitBytes = (vec ? 4 : 1) * bytesPerElement(p.act);
  const bands = flatBands(gpu, `map [${p.x.shape}]`, [p.x, p.out], units, unitBytes, p.maxBindingBytes);
  return bands.map(({ bind, count }) => {
    const params = uniformOf(gpu, [u(count), f(p.scale ?? 1), f(p.bias ?? 0), u(0), f(lo), f(hi)]);
    const buffers = [bind(p.x), bind(p.out), params];
    const bindings = inplace ? [1, 2] : [0, 1, 2];
    return dispatchSparse(gpu, pipeline, buffers, bindings, grid(count), `map ${activation}`);
  });
}

/** out = x · scale (+ bias). */
export function scale(
  gpu: Gpu,
  p: { x: Tensor; out: Tensor; scale: number; bias?: number; act: ActDType },
): Dispatch[] {
  return map(gpu, { x: p.x, out: p.out, scale: p.scale, bias: p.bias, act: p.act });
}

/** out = x · sigmoid(x) (time-embedding MLP input, ResBlock time projection input). */
export function silu(
  gpu: Gpu,
  p: { x: Tensor; out: Tensor; act: ActDType; maxBindingBytes?: number },
): Dispatch[] {
  return map(gpu, { ...p, activation: "silu" });
}

/** Exact (erf) GELU, as torch.nn.functional.gelu(approximate="none"). */
export function gelu(gpu: Gpu, p: { x: Tensor; out: Tensor; act: ActDType }): Dispatch[] {
  return map(gpu, { x: p.x, out: p.out, activation: "gelu", act: p.act });
}

/** CLIP's quick_gelu: x · sigmoid(1.702 x). */
export function quickGelu(gpu: Gpu, p: { x: Tensor; out: Tensor; act: ActDType }): Dispatch[] {
  return map(gpu, { x: p.x, out: p.out, activation: "quick_gelu", act: p.act });
}

/** GEGLU: x [M, 2F] → out [M, F] = x[:, :F] · gelu(x[:, F:]) (diffusers' GEGLU after its projection). */
export function geglu(gpu: Gpu, p: { x: Tensor; out: Tensor; act: ActDType }): Dispatch[] {
  checkDType(p.x, p.act, "geglu x");
  checkDType(p.out, p.act, "geglu out");
  const width = p.out.shape[p.out.shape.length - 1];
  const rows = p.out.numel / width;
  checkNumel(p.x, rows * 2 * width, "geglu x");
  const vec = width % 4 === 0;
  const units = vec ? width / 4 : width;
  const pipeline = gpu.kernel("elementwise", { ...unitDefines(p.act, vec), GEGLU: true }, "geglu");
  const params = uniformOf(gpu, [u(rows * units), u(units)]);
  return [gpu.dispatch(pipeline, [p.x.buffer, p.out.buffer, params], grid(rows * units), "geglu")];
}

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

// ---- timestep embedding ----

export interface TimestepEmbeddingParams {
  /** f32 [B] */
  timesteps: Tensor;
  /** [B, dim], f32 or f16 */
  out: Tensor;
  flipSinToCos: boolean;
  /** diffusers' downscale_freq_shift (UNet2DConditionModel's freq_shift) */
  freqShift: number;
  scale?: number;
  maxPeriod?: number;
  act?: ActDType;
}

/**
 * torch's f32 frequency table of get_timestep_embedding: exp(-ln(maxPeriod) · i / (half − shift)), every
 * step rounded to f32 as torch computes it (scalar operands are cast to f32 first).
 */
export function timestepFrequencies(dim: number, freqShift: number, maxPeriod = 10000): Float32Array {
  const half = Math.floor(dim / 2);
  const out = new Float32Array(half);
  const logPeriod = Math.fround(-Math.log(maxPeriod));
  const divisor = Math.fround(half - freqShift);
  for (let i = 0; i < half; i++) {
    const exponent = Math.fround(Math.fround(i * logPeriod) / divisor);
    out[i] = Math.fround(Math.exp(exponent));
  }
  return out;
}

/** diffusers get_timestep_embedding(timesteps, dim, flip_sin_to_cos, downscale_freq_shift, scale, max_period). */
export function timestepEmbedding(gpu: Gpu, p: TimestepEmbeddingParams): Dispatch[] {
  checkDType(p.timesteps, "f32", "timestepEmbedding timesteps");
  if (p.out.shape.length !== 2) {
    throw new Error(`timestepEmbedding: out must be [B, dim], got [${p.out.shape}]`);
  }
  const [batch, dim] = p.out.shape;
  checkNumel(p.timesteps, batch, "timestepEmbedding timesteps");
  needF16(gpu, [p.out], "timestepEmbedding");
  const half = Math.floor(dim / 2);
  const freqs = uploadTensor(
    gpu,
    half > 0 ? timestepFrequencies(dim, p.freqShift, p.maxPeriod) : new Float32Array(1),
    [
      Math.max(1, half),
    ],
    "f32",
    "timestep freqs",
  );
  const pipeline = gpu.kernel("elementwise", {
    ...unitDefines("f32", false),
    TIMESTEP_EMBEDDING: true,
    OUT_T: scalarType(p.out.dtype),
  }, "timestep_embedding");
  const params = uniformOf(gpu, [
    u(batch * dim),
    u(dim),
    u(half),
    u(p.flipSinToCos ? 1 : 0),
    f(p.scale ?? 1),
  ]);
  return [
    gpu.dispatch(
      pipeline,
      [p.timesteps.buffer, freqs.buffer, p.out.buffer, params],
      grid(batch * dim),
      "time_proj",
    ),
  ];
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

// ---- classifier-free guidance ----

export interface CfgParams {
  /** [2B, …]: unconditional half first, then conditional (diffusers' noise_pred.chunk(2)) */
  x: Tensor;
  /** [B, …]; any dtype (the scheduler usually wants f32) */
  out: Tensor;
  /** Guidance scale: a number (fixed at build time) or an f32 [1] tensor the caller rewrites per request. */
  guidance: number | Tensor;
}

/** out = u + g · (c − u) over the two batch halves of x. */
export function cfgCombine(gpu: Gpu, p: CfgParams): Dispatch[] {
  const n = p.out.numel;
  checkNumel(p.x, 2 * n, "cfgCombine x");
  needF16(gpu, [p.x, p.out], "cfgCombine");
  const g = typeof p.guidance === "number"
    ? uploadTensor(gpu, new Float32Array([p.guidance]), [1], "f32", "guidance")
    : p.guidance;
  checkDType(g, "f32", "cfgCombine guidance");
  const pipeline = gpu.kernel("elementwise", {
    ...unitDefines("f32", false),
    CFG: true,
    IN_T: scalarType(p.x.dtype),
    OUT_T: scalarType(p.out.dtype),
  }, "cfg");
  return [
    gpu.dispatch(pipeline, [p.x.buffer, p.out.buffer, g.buffer, uniformOf(gpu, [u(n)])], grid(n), "cfg"),
  ];
}
