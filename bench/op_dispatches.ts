// The linear and 3×3 conv dispatches the op benchmarks (ops.ts, gpu_report.ts) time: f16 weights and bias,
// `act` activations, every tensor from the caller's factory (which fills it and keeps it to destroy).

import type { Dispatch, Gpu } from "../src/gpu/device.ts";
import type { ActDType } from "../src/gpu/pipelines.ts";
import type { Tensor } from "../src/gpu/tensor.ts";
import { prepareLinearWeight } from "../src/ops/gemm_weights.ts";
import { linear } from "../src/ops/linear.ts";
import { conv2d, prepareConvWeight } from "../src/ops/conv.ts";

export type MakeTensor = (shape: number[], dtype: ActDType, scale?: number) => Tensor;

/** x [m, k] · weight [n, k]ᵀ + bias → [m, n]. */
export function linearDispatches(
  gpu: Gpu,
  tensor: MakeTensor,
  s: { m: number; k: number; n: number },
  act: ActDType,
  weightScale: number,
): Dispatch[] {
  const weight = prepareLinearWeight(gpu, tensor([s.n, s.k], "f16", weightScale));
  return linear(gpu, {
    x: tensor([s.m, s.k], act),
    weight,
    bias: tensor([s.n], "f16"),
    out: tensor([s.m, s.n], act),
    act,
  });
}

/** 3×3 conv, stride 1, "same" padding: [b, hw, hw, cin] → [b, hw, hw, cout] (NHWC). */
export function conv3x3Dispatches(
  gpu: Gpu,
  tensor: MakeTensor,
  s: { b: number; hw: number; cin: number; cout: number },
  act: ActDType,
  weightScale: number,
): Dispatch[] {
  const weight = prepareConvWeight(gpu, tensor([s.cout, s.cin, 3, 3], "f16", weightScale));
  return conv2d(gpu, {
    x: tensor([s.b, s.hw, s.hw, s.cin], act),
    weight,
    bias: tensor([s.cout], "f16"),
    out: tensor([s.b, s.hw, s.hw, s.cout], act),
    stride: 1,
    padding: "same",
    act,
  });
}
