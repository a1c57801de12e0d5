// What every scope of a model builder (models/builder.ts) shares: the recorded graph, weight names relative
// to the scope, the graph's edges (inputs, outputs, probes), its statistics, and compilation. The ops that
// record nodes are in builder_gemm.ts (conv, linear, GEGLU) and builder.ts (the rest).

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import { bytesPerElement, type DType, numel } from "../gpu/tensor.ts";
import type { OpShape } from "../ops/tuning.ts";
import type { WeightShapes } from "./declare.ts";
import {
  type Compiled,
  compileGraph,
  type GemmKind,
  type Graph,
  type Node,
  planBytes,
  type RecordContext,
  Storage,
  Value,
} from "./graph.ts";
import type { Weights } from "./weights.ts";

export abstract class BuilderBase {
  protected constructor(
    protected readonly graph: Graph,
    readonly weights: WeightShapes,
    readonly act: ActDType,
    readonly prefix: string,
    protected readonly withProbes: boolean,
  ) {}

  /** Shape of the weight `name` in this scope. */
  shapeOf(name: string): readonly number[] {
    return this.weights.shape(this.prefix + name);
  }

  has(name: string): boolean {
    return this.weights.has(this.prefix + name);
  }

  /** Weights the forward recorded so far reads: a test checks them against the declaration. */
  weightsRead(): ReadonlySet<string> {
    return this.graph.weightsRead;
  }

  /** Weights the forward recorded so far reads through the conv or the linear GEMM (full names). */
  gemmWeights(): ReadonlyMap<string, GemmKind> {
    return this.graph.gemmWeights;
  }

  /** Weight names each joint GEMM of two or more linears reads: the model declares them to its Weights. */
  linearGroups(): string[][] {
    return [...this.graph.joint.values()].flat().filter((g) => g.names.length > 1).map((g) => [...g.names]);
  }

  /** The full name of a weight this scope reads; a forward naming an undeclared weight fails here. */
  protected weight(name: string, gemm?: GemmKind): string {
    const full = this.prefix + name;
    if (!this.weights.has(full)) throw new Error(`model builder: weight "${full}" is not declared`);
    this.graph.weightsRead.add(full);
    if (gemm) this.graph.gemmWeights.set(full, gemm);
    return full;
  }

  /** `name.bias` when the module has one. */
  protected optionalBias(name: string): string | undefined {
    return this.has(`${name}.bias`) ? this.weight(`${name}.bias`) : undefined;
  }

  // ---- graph edges ----

  input(label: string, shape: readonly number[], dtype: DType = this.act): Value {
    const v = this.value(label, shape, dtype);
    this.graph.inputs.push(v);
    this.graph.pinned.add(v.storage);
    return v;
  }

  /** Keeps the value's buffer for the caller to read after a run. */
  output(v: Value): Value {
    this.graph.pinned.add(v.storage);
    return v;
  }

  /** Keeps an intermediate activation under a fixture hook name (absolute, not scoped) when probing. */
  probe(name: string, v: Value): void {
    if (!this.withProbes) return;
    this.graph.probes.set(name, v);
    this.graph.pinned.add(v.storage);
  }

  /** The GEMM, conv and attention shapes recorded so far, in order (the autotuner tunes these). */
  opShapes(): OpShape[] {
    return this.graph.nodes.flatMap((n) => (n.op ? [n.op] : []));
  }

  /** Sum of the GEMM-like work recorded so far (convs, linears, attention; a multiply-add = 2 FLOPs). */
  flops(): number {
    return this.graph.nodes.reduce((a, n) => a + n.flops, 0);
  }

  // ---- compilation ----

  /** The plan: every dispatch recorded once, buffers reused after their last read (models/graph.ts). */
  compile(gpu: Gpu, weights: Weights): Compiled {
    return compileGraph(this.graph, gpu, weights, this.act);
  }

  /**
   * The activation bytes `compile` would allocate on `gpu` (its `Plan.bytes`), without GPU work: the same
   * walk over the nodes, sizes and reuse of released buffers. Without a GPU, as if nothing were fused.
   */
  activationBytes(gpu?: Gpu): number {
    return planBytes(this.graph, gpu, this.act);
  }

  // ---- recording ----

  protected value(label: string, shape: readonly number[], dtype: DType = this.act): Value {
    return new Value(new Storage(numel(shape) * bytesPerElement(dtype), label), shape, dtype, label);
  }

  protected node(
    reads: (Value | undefined)[],
    out: Value,
    flops: number,
    record: (ctx: RecordContext) => Dispatch[],
    extra: Pick<Node, "op" | "writesOperand" | "gemmInput"> = {},
  ): Value {
    this.graph.nodes.push({
      reads: reads.filter((v): v is Value => v !== undefined),
      out,
      flops,
      record,
      ...extra,
    });
    return out;
  }
}
