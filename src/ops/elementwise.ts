// Elementwise arithmetic op builders: residual add, broadcast add, scale/affine, activations (SiLU, GELU,
// quick GELU, tanh), GEGLU and classifier-free guidance. Data movement (channel concat/slice, upsampling, layout,
// casts) is in layout.ts, the timestep embedding in timestep.ts; all of them run elementwise.wgsl kernels.
// Each builder returns Dispatch[] built once per shape (pipelines cached, uniforms written at build time).
// add and map (and its activations) split into row bands when a tensor exceeds one storage binding (see
// bands.ts): one dispatch per band, binding only the band's window of each tensor, with the same
// per-element arithmetic (results equal the unbanded op's).

import type { Binding, Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import { bytesPerElement, type Tensor, uploadTensor } from "../gpu/tensor.ts";
import { bandBinding, type BandedTensor, bandsIfNeeded, bindingLimit } from "./bands.ts";
import {
  checkDType,
  checkNumel,
  f,
  grid,
  needF16,
  resourceOf,
  scalarType,
  u,
  uniformOf,
  unitDefines,
} from "./unit.ts";

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

export type Activation = "none" | "silu" | "gelu" | "gelu_tanh" | "quick_gelu" | "tanh";

export interface MapParams {
  x: Tensor;
  /** like x; may be x itself (in-place) */
  out: Tensor;
  /** y = activation(x · scale + bias) · outScale, then optionally clamped to [lo, hi]. */
  scale?: number;
  bias?: number;
  activation?: Activation;
  /** Multiplies the activation's result (TAESD's soft clamp tanh(x / 3) · 3 is scale 1/3, outScale 3). */
  outScale?: number;
  clamp?: [number, number];
  act: ActDType;
  /** Storage binding limit to split at (tests); defaults to the device's. */
  maxBindingBytes?: number;
}

/** out = clamp(activation(x · scale + bias) · outScale): scaling, SiLU/GELU, VAE output mapping (x/2 + 0.5
 * clamped), TAESD's tanh soft clamp. */
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
    const params = uniformOf(gpu, [
      u(count),
      f(p.scale ?? 1),
      f(p.bias ?? 0),
      f(p.outScale ?? 1),
      f(lo),
      f(hi),
    ]);
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
