// Linear weights as GEMM operands: a checkpoint Linear weight [N, K] f16 is repacked once into texels of 8
// values of K (K zero-padded to a multiple of 8; see the header of shaders/matmul.wgsl), cached per weight
// buffer and operand storage.

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
