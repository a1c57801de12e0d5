// The shape every model entry point shares: a graph recorded on named inputs (`taesdDecoderGraph` …), and
// its compiled plan with the tensor of each named value (`TaesdDecodePlan` …).

import type { Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { type GraphOptions, ModelBuilder, type Value } from "./builder.ts";
import type { WeightShapes } from "./declare.ts";
import type { Plan } from "./plan.ts";
import type { Weights } from "./weights.ts";

/** A compiled entry point; its inputs and outputs are the named tensors of the types extending it. */
export interface ModelPlan {
  plan: Plan;
  /** Intermediate activations by fixture hook name (only when built with probes). */
  probes: Map<string, Tensor>;
}

/**
 * The graph of a forward from one input to one output: `{ b, [input]: Value, [output]: Value }`, the input
 * recorded under its key as label.
 */
export function singleInputGraph<I extends string, O extends string>(
  weights: WeightShapes,
  act: ActDType,
  options: GraphOptions,
  io: { input: I; shape: readonly number[]; output: O; forward: (b: ModelBuilder, x: Value) => Value },
): { b: ModelBuilder } & Record<I | O, Value> {
  const b = ModelBuilder.create(weights, act, options);
  const x = b.input(io.input, io.shape);
  const values = { [io.input]: x, [io.output]: b.output(io.forward(b, x)) } as Record<I | O, Value>;
  return { b, ...values };
}

/** Compiles the builder's graph: the plan, its probes and the tensor of every value in `values`, by name. */
export function compilePlan<V extends Record<string, Value>>(
  b: ModelBuilder,
  values: V,
  gpu: Gpu,
  weights: Weights,
): ModelPlan & { [K in keyof V]: Tensor } {
  const { plan, tensor, probes } = b.compile(gpu, weights);
  const tensors = Object.fromEntries(Object.entries(values).map(([k, v]) => [k, tensor(v)]));
  return { plan, probes, ...tensors as { [K in keyof V]: Tensor } };
}
