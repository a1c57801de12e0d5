// Linear weights as GEMM operands: a checkpoint Linear weight [N, K] f16 is repacked once into texels of 8
// values of K (K zero-padded to a multiple of 8; see the header of shaders/matmul.wgsl), cached per weight
// buffer and operand storage. Several weights with the same K can be packed one after the other into one
// operand (`prepareLinearGroup`): one GEMM then computes all their outputs side by side (q/k/v projections of
// the same tokens, every cross-attention k/v of the same context), and each member is a row range of it.

import type { Gpu } from "../gpu/device.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { checkDType, createOperand, type GemmTiling, gemmTiling, makeDispatch, storageOf } from "./gemm.ts";

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
  /**
   * A member of a packed group: its first row within the group's operand (texel row0 · k8). A GEMM over the
   * member alone reads its rows from there; LoRA merges write them.
   */
  readonly row0?: number;
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
    gpu.run([packWeightDispatch(gpu, weight.buffer, dst, n, k, 0, op)], op);
    operand = dst.resource;
    texture = dst.texture;
  }
  const w: LinearWeight = { kind: "linear-weight", n, k, k8, storage, operand, texture };
  if (!byStorage) preparedLinear.set(weight.buffer, byStorage = new Map());
  byStorage.set(storage, w);
  return w;
}

/** The dispatch packing an f16 weight [n, k] into `dst` from texel `dstOff` on. */
function packWeightDispatch(
  gpu: Gpu,
  src: GPUBuffer,
  dst: { storage: "texture" | "buffer"; resource: GPUBuffer | GPUTextureView },
  n: number,
  k: number,
  dstOff: number,
  label: string,
) {
  const k8 = Math.ceil(k / 8);
  const total = n * k8;
  const pipeline = gpu.kernel("matmul", { PACK_WEIGHT: true, TEX: dst.storage === "texture" }, "pack_weight");
  const params = gpu.uniform(new Uint32Array([k, k8, total, dstOff]), "pack weight params");
  return makeDispatch(gpu, pipeline, [src, dst.resource, params], Math.ceil(total / 64), label);
}

/**
 * Packs Linear weights [N_i, K] f16 (same K) one after the other into one operand [ΣN_i, K8]: the group's
 * weight (`whole`) and each member as its row range (`members`, with row0). Unlike a single weight, a group
 * always gets its own operand, so the originals may be destroyed afterwards in either mode.
 */
export function prepareLinearGroup(
  gpu: Gpu,
  weights: readonly Tensor[],
  label: string,
  mode?: GemmTiling["mode"],
): { whole: LinearWeight; members: LinearWeight[] } {
  const op = "prepareLinearGroup";
  if (!weights.length) throw new Error(`${op}: no weights`);
  const k = weights[0].shape[1];
  for (const w of weights) {
    if (w.shape.length !== 2 || w.shape[1] !== k) {
      throw new Error(`${op}: weights must be [N, ${k}], got [${w.shape}] (${w.label})`);
    }
    checkDType(w, "f16", "weight", op);
  }
  const storage = storageOf(mode ?? gemmTiling(gpu).tiling.mode);
  const k8 = Math.ceil(k / 8);
  const n = weights.reduce((a, w) => a + w.shape[0], 0);
  const dst = createOperand(gpu, storage, n * k8, `${label} packed`);
  const members: LinearWeight[] = [];
  const dispatches = [];
  let row0 = 0;
  for (const w of weights) {
    dispatches.push(packWeightDispatch(gpu, w.buffer, dst, w.shape[0], k, row0 * k8, op));
    const base = {
      kind: "linear-weight",
      k,
      k8,
      storage,
      operand: dst.resource,
      texture: dst.texture,
    } as const;
    members.push({ ...base, n: w.shape[0], row0 });
    row0 += w.shape[0];
  }
  gpu.run(dispatches, op);
  const whole: LinearWeight = {
    kind: "linear-weight",
    n,
    k,
    k8,
    storage,
    operand: dst.resource,
    texture: dst.texture,
  };
  return { whole, members };
}

/** The weight as prepared for `mode`'s operand storage: a prepared one is checked, a tensor is prepared. */
export function asLinearWeight(
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
