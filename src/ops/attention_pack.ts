// Attention's first dispatch: Q, K and V token slices (or the GEMM operand an output is written as) viewed
// uniformly, and copied into rgba32f storage textures [b][token][h·dv + d/4] (cheap loads on lavapipe; see
// shaders/attention.wgsl). The textures are scratch shared by every attention built on the same Gpu with
// the same texture shape (see attention.ts for why that is safe).

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType, ShaderDefines } from "../gpu/pipelines.ts";
import type { Tensor } from "../gpu/tensor.ts";
import type { PackedActivations } from "./operand.ts";

/** A [B, N, ·] token tensor or a channel slice of one (offset and strides in elements). */
export interface TokenSlice {
  tensor: Tensor;
  /** Element offset of (b=0, token=0, head=0, d=0). Default 0. */
  offset?: number;
  /** Elements between consecutive tokens. Default: the tensor's last dimension. */
  rowStride?: number;
  /** Elements between consecutive batch items. Default: tokens · rowStride. */
  batchStride?: number;
}

/** A token tensor, slice or operand as the kernels address it (elements). */
export interface View {
  shape: readonly number[];
  numel: number;
  dtype: string;
  label: string;
  /** The tensor's buffer (an output written as GEMM texels: the operand). */
  resource: GPUBuffer | GPUTextureView;
  batch: number;
  tokens: number;
  offset: number;
  rowStride: number;
  batchStride: number;
}

/** `x` as a token view; `what` names it in errors. */
export function view(x: Tensor | TokenSlice, what: string): View {
  const s: TokenSlice = "tensor" in x ? x : { tensor: x };
  const shape = s.tensor.shape;
  if (shape.length !== 3) throw new Error(`attention: ${what} must be [B, N, C], got [${shape}]`);
  const [batch, tokens, channels] = shape;
  const rowStride = s.rowStride ?? channels;
  return {
    shape,
    numel: s.tensor.numel,
    dtype: s.tensor.dtype,
    label: s.tensor.label,
    resource: s.tensor.buffer,
    batch,
    tokens,
    offset: s.offset ?? 0,
    rowStride,
    batchStride: s.batchStride ?? tokens * rowStride,
  };
}

/** An output of `batch` × `tokens` rows written as GEMM x texels [rows, C]: a contiguous token view. */
export function operandView(x: PackedActivations, batch: number, tokens: number): View {
  const channels = x.shape[x.shape.length - 1];
  if (x.shape.reduce((a, b) => a * b, 1) !== batch * tokens * channels) {
    throw new Error(`attention: out [${x.shape}] does not hold ${batch}×${tokens} tokens`);
  }
  return {
    shape: [batch, tokens, channels],
    numel: batch * tokens * channels,
    dtype: x.act,
    label: "attention operand",
    resource: x.operand.resource,
    batch,
    tokens,
    offset: 0,
    rowStride: channels,
    batchStride: tokens * channels,
  };
}

/** A dispatch whose bindings include texture views (gpu.dispatch takes buffers only). */
export function textureDispatch(
  gpu: Gpu,
  pipeline: GPUComputePipeline,
  resources: (GPUBuffer | GPUTextureView)[],
  workgroups: [number, number, number],
  label: string,
): Dispatch {
  const limit = gpu.device.limits.maxComputeWorkgroupsPerDimension;
  if (workgroups.some((n) => n > limit)) {
    throw new Error(`${label}: workgroup count ${workgroups} exceeds ${limit}`);
  }
  const bindGroup = gpu.device.createBindGroup({
    label,
    layout: pipeline.getBindGroupLayout(0),
    entries: resources.map((r, i) => ({ binding: i, resource: r instanceof GPUBuffer ? { buffer: r } : r })),
  });
  return { pipeline, bindGroup, workgroups, label };
}

/** Scratch K/V textures, shared per Gpu by shape. */
const scratchTextures = new WeakMap<Gpu, Map<string, GPUTexture>>();

export function scratchTexture(
  gpu: Gpu,
  role: string,
  width: number,
  height: number,
  layers: number,
): GPUTexture {
  let map = scratchTextures.get(gpu);
  if (!map) {
    map = new Map();
    scratchTextures.set(gpu, map);
  }
  const key = `${role}:${width}x${height}x${layers}`;
  let tex = map.get(key);
  if (!tex) {
    const max = gpu.device.limits;
    if (width > max.maxTextureDimension2D || height > max.maxTextureDimension2D) {
      throw new Error(`attention: K/V texture ${width}×${height} exceeds maxTextureDimension2D`);
    }
    if (layers > max.maxTextureArrayLayers) {
      throw new Error(`attention: batch ${layers} exceeds maxTextureArrayLayers`);
    }
    tex = gpu.device.createTexture({
      label: `attention ${key}`,
      size: [width, height, layers],
      format: "rgba32float",
      usage: GPUTextureUsage.STORAGE_BINDING,
    });
    map.set(key, tex);
  }
  return tex;
}

/** Copies the Q, K and V token slices into their textures [b][token][h·dv + d/4] (one dispatch). */
export function packTokens(
  gpu: Gpu,
  sources: [View, View, View],
  textures: [GPUTexture, GPUTexture, GPUTexture],
  headDim: number,
  width: number,
  act: ActDType,
): { dispatch: Dispatch; views: GPUTextureView[] } {
  const aligned = headDim % 4 === 0 &&
    sources.every((src) => src.offset % 4 === 0 && src.rowStride % 4 === 0 && src.batchStride % 4 === 0);
  const defines: ShaderDefines = aligned
    ? {
      VEC: true,
      ELEM: act === "f32" ? "vec4<f32>" : "vec2<u32>",
      UNPACK: act === "f32" ? "vec4<f32>" : "h4",
    }
    : { VEC: false };
  const pipeline = gpu.kernel("attention", { ACT: act, PACK_KV: true, ...defines }, "pack_tokens");
  const dv = Math.ceil(headDim / 4);
  const batch = sources[0].batch;
  const params = new Uint32Array([
    batch,
    dv,
    width,
    headDim,
    ...sources.flatMap((src) => [src.tokens, src.offset, src.rowStride, src.batchStride]),
  ]);
  const views = textures.map((t) => t.createView({ dimension: "2d-array" }));
  const tokens = Math.max(...sources.map((src) => src.tokens));
  const dispatch = textureDispatch(
    gpu,
    pipeline,
    [...sources.map((src) => src.resource), ...views, gpu.uniform(params)],
    [Math.ceil(width / 64), tokens, 3 * batch],
    `attention pack ${sources[0].tokens}/${sources[1].tokens}×${width}`,
  );
  return { dispatch, views };
}
