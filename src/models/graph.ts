// Building blocks shared by the models: a plan builder that records one model call's dispatches and
// recycles activation buffers, and a weight store keyed by diffusers names that checks every shape.

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import { bytesPerElement, numel, Tensor } from "../gpu/tensor.ts";
import { type ConvWeight, prepareConvWeight } from "../ops/conv.ts";

/**
 * Records the dispatches of one model call at one shape. Activation buffers are recycled: `release(t)`
 * after the last op that reads `t` is recorded lets a later op of the same size write into it (ops in
 * one compute pass run in order, so this is safe). The plan owns its buffers until `destroy()`.
 */
export class Plan {
  readonly dispatches: Dispatch[] = [];
  private readonly free = new Map<number, GPUBuffer[]>();
  private readonly owned: GPUBuffer[] = [];
  /** Bytes of activation buffers this plan holds. */
  bytes = 0;

  constructor(readonly gpu: Gpu, readonly act: ActDType) {}

  /** A new activation tensor of the plan's activation dtype. */
  tensor(shape: readonly number[], label = ""): Tensor {
    return this.tensorOf(shape, this.act, label);
  }

  tensorOf(shape: readonly number[], dtype: "f32" | "f16", label = ""): Tensor {
    const size = Math.max(16, Math.ceil((numel(shape) * bytesPerElement(dtype)) / 16) * 16);
    const reused = this.free.get(size)?.pop();
    if (reused) return new Tensor(reused, shape, dtype, label);
    const buffer = this.gpu.storage(size, label);
    this.owned.push(buffer);
    this.bytes += size;
    return new Tensor(buffer, shape, dtype, label);
  }

  /** The tensor's buffer may be reused by tensors allocated after this call. */
  release(...tensors: Tensor[]): void {
    for (const t of tensors) {
      const list = this.free.get(t.buffer.size) ?? [];
      if (!list.includes(t.buffer)) list.push(t.buffer);
      this.free.set(t.buffer.size, list);
    }
  }

  add(dispatches: Dispatch[]): void {
    for (const d of dispatches) this.dispatches.push(d);
  }

  run(label: string): void {
    this.gpu.run(this.dispatches, label);
  }

  destroy(): void {
    for (const b of this.owned) b.destroy();
    this.owned.length = 0;
    this.free.clear();
    this.bytes = 0;
  }
}

/** Where weights come from: a safetensors file or a model folder component, by diffusers name. */
export interface WeightSource {
  names(): string[];
  info(name: string): { shape: number[]; dtype: string };
  uploadF16(gpu: Gpu, name: string): Promise<Tensor>;
}

export class WeightError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WeightError";
  }
}

/**
 * f16 weights on the GPU by diffusers name. `load` uploads exactly the expected tensors after checking
 * that none is missing, extra or misshapen; conv weights are repacked once for the conv kernel.
 */
export class Weights {
  private readonly tensors = new Map<string, Tensor>();
  private readonly convs = new Map<string, ConvWeight>();

  constructor(readonly gpu: Gpu, readonly component: string) {}

  static async load(
    gpu: Gpu,
    component: string,
    source: WeightSource,
    expected: Map<string, readonly number[]>,
    options: { allowExtra?: (name: string) => boolean; onProgress?: (done: number, total: number) => void } =
      {},
  ): Promise<Weights> {
    checkTensors(component, source, expected, options.allowExtra);
    const w = new Weights(gpu, component);
    let done = 0;
    for (const name of expected.keys()) {
      w.tensors.set(name, await source.uploadF16(gpu, name));
      options.onProgress?.(++done, expected.size);
    }
    return w;
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  get(name: string): Tensor {
    const t = this.tensors.get(name);
    if (!t) throw new WeightError(`${this.component}: weight "${name}" was not loaded`);
    return t;
  }

  /** Conv weight repacked for the conv kernel (cached; the f16 original is dropped afterwards). */
  conv(name: string): ConvWeight {
    let c = this.convs.get(name);
    if (!c) {
      c = prepareConvWeight(this.gpu, this.get(name));
      this.convs.set(name, c);
    }
    return c;
  }

  get bytes(): number {
    let total = 0;
    for (const t of this.tensors.values()) total += t.buffer.size;
    // Repacked conv weights: Cout·kh·kw·ceil(Cin/8) texels of 16 bytes.
    for (const c of this.convs.values()) total += c.cout * c.kh * c.kw * c.c8 * 16;
    return total;
  }

  destroy(): void {
    for (const t of this.tensors.values()) t.destroy();
    this.tensors.clear();
    this.convs.clear();
  }
}

/** Throws one error listing every missing, extra and misshapen tensor by name. */
export function checkTensors(
  component: string,
  source: WeightSource,
  expected: Map<string, readonly number[]>,
  allowExtra: (name: string) => boolean = () => false,
): void {
  const problems: string[] = [];
  const present = new Set(source.names());
  for (const [name, shape] of expected) {
    if (!present.has(name)) {
      problems.push(`missing tensor "${name}" [${shape}]`);
      continue;
    }
    const got = source.info(name).shape;
    if (got.length !== shape.length || got.some((d, i) => d !== shape[i])) {
      problems.push(`tensor "${name}" has shape [${got}], the config needs [${shape}]`);
    }
  }
  for (const name of present) {
    if (!expected.has(name) && !allowExtra(name)) problems.push(`unexpected tensor "${name}"`);
  }
  if (problems.length) {
    const shown = problems.slice(0, 12).join("; ");
    const more = problems.length > 12 ? `; and ${problems.length - 12} more` : "";
    throw new WeightError(`${component}: ${shown}${more}`);
  }
}
