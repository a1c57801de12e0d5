// Activations that exist only as a GEMM's x operand. With texture operands (llvmpipe) every linear and conv
// packs its input into a scratch texture first (ops/gemm.ts `activationOperand`): one extra dispatch per GEMM.
// When the input is produced by a norm (GroupNorm apply, LayerNorm) or an attention and read by nothing but
// that GEMM, the producer can write the texels itself: the same bytes (8 f16 or 4 f32 values of K per texel,
// C % 8 == 0, so no padding), hence bit-identical results, one dispatch fewer, and no [rows, C] buffer at
// all. The model graph (models/graph.ts) pairs such a producer with the GEMM right after it.
//
// Counted on SD 1.5's UNet at batch 2 (lavapipe): 61 GroupNorms feed a conv or proj_in, 48 LayerNorms a
// q/k/v, q or GEGLU GEMM and 32 attentions their to_out — 141 pack dispatches of the 952 per call.
// Buffer operands (other GPUs) bind a [rows, C] tensor with C % 8 == 0 as it is, so there is no pack to save
// and the norm writes its ordinary output.

import type { Gpu } from "../gpu/device.ts";
import type { ActDType, ShaderDefines } from "../gpu/pipelines.ts";
import { numel } from "../gpu/tensor.ts";
import { type Operand, resolveTiling, scratchOperand, storageOf, xRowTexels } from "./gemm.ts";

/** [..., K] activations held as GEMM x texels: rows = numel / K rows of xRowTexels(K) texels from texel 0. */
export interface PackedActivations {
  readonly operand: Operand;
  readonly shape: readonly number[];
  readonly act: ActDType;
}

/** Shader defines of a kernel that writes `out` (norm.wgsl OPERAND). */
export function operandDefines(out: PackedActivations): ShaderDefines {
  return { OPERAND: true, TEX: out.operand.storage === "texture", XF16: out.act === "f16" };
}

/** Checks packed input of a GEMM over K against the operand storage the GEMM reads. */
export function checkPackedInput(
  x: PackedActivations,
  k: number,
  act: ActDType,
  mode: "texture" | "buffer" | "shared",
  op: string,
): number {
  const last = x.shape[x.shape.length - 1];
  if (last !== k) throw new Error(`${op}: packed x [${x.shape}] must have last dimension ${k}`);
  if (x.act !== act) throw new Error(`${op}: packed x holds ${x.act} activations, act is ${act}`);
  if (x.operand.storage !== storageOf(mode)) {
    throw new Error(
      `${op}: packed x is a ${x.operand.storage} operand, tiling "${mode}" reads ${storageOf(mode)}`,
    );
  }
  const rows = numel(x.shape) / k;
  if (x.operand.texels < rows * xRowTexels(k, act)) {
    throw new Error(`${op}: packed x operand of ${x.operand.texels} texels is too small for [${x.shape}]`);
  }
  return rows;
}

/**
 * Whether a producer should write x [..., K] of a linear / GEGLU as its operand: the GEMM packs its input
 * (texture operands) and a producer can write the texels (K % 8 == 0). Not on buffer operands, where a
 * GEMM over K % 8 == 0 binds x as it is: nothing to save. Pure (no GPU work), so plans can be sized ahead.
 */
export function linearTakesPackedInput(gpu: Gpu, shape: readonly number[]): boolean {
  const k = shape[shape.length - 1];
  return k % 8 === 0 && storageOf(resolveTiling(gpu).mode) === "texture";
}

/**
 * Where a producer writes x [..., K] for a linear / GEGLU (see linearTakesPackedInput): the scratch operand
 * the GEMM would pack into, so producer and GEMM must be adjacent in the dispatch list (see gemm.ts
 * `scratchOperand`).
 */
export function linearInputOperand(gpu: Gpu, shape: readonly number[], act: ActDType): PackedActivations {
  const k = shape[shape.length - 1];
  const rows = numel(shape) / k;
  return { operand: scratchOperand(gpu, resolveTiling(gpu).mode, rows * xRowTexels(k, act)), shape, act };
}
