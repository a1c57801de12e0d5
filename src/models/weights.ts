// f16 weights on the GPU by diffusers name, loaded after checking every name and shape against the
// model's declaration, and repacked once for the GEMM kernels on first use.

import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../gpu/tensor.ts";
import { type ConvWeight, prepareConvWeight } from "../ops/conv.ts";
import { type LinearWeight, prepareLinearGroup, prepareLinearWeight } from "../ops/gemm_weights.ts";
import type { WeightShapes } from "./declare.ts";

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

/** Linear weights packed side by side into one operand (one GEMM over their common input). */
interface LinearGroup {
  /** Weight names, in the order of their output columns. */
  readonly names: readonly string[];
  packed?: { whole: LinearWeight; members: Map<string, LinearWeight> };
  /** The members' biases side by side (zeros for a member without one), or null when none has a bias. */
  bias?: Tensor | null;
}

/**
 * f16 weights on the GPU by diffusers name. `load` uploads exactly the expected tensors after checking
 * that none is missing, extra or misshapen. Conv and Linear weights are repacked once for the GEMM kernels
 * on first use (`conv(name)`, `linear(name)`), and the f16 original is then released unless the kernel reads
 * it as it is (buffer mode, Linear with K % 8 == 0), so a repacked weight occupies GPU memory once. Norm
 * weights, biases and embeddings stay as uploaded and are read through `get(name)`.
 * Linear weights that one GEMM reads together (models/builder_gemm.ts `linear(…, { joint: true })`) form a
 * group (`defineLinearGroups`, done by the model before anything is packed): they are packed side by side into
 * one operand (`linearGroup`), and `linear(name)` of a member is its row range there, which LoRA merges write.
 * Their biases are joined into one tensor too (`groupBias`); a GEMM over part of a group reads its weight
 * rows and bias values from an offset.
 */
export class Weights implements WeightShapes {
  private readonly tensors = new Map<string, Tensor>();
  private readonly convs = new Map<string, ConvWeight>();
  private readonly linears = new Map<string, LinearWeight>();
  /** Names whose f16 original was destroyed after repacking, and what it was repacked for. */
  private readonly released = new Map<string, "conv" | "linear" | "groupBias">();
  /** Member name → its packed group. */
  private readonly groups = new Map<string, LinearGroup>();

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
    // Tensors that stay as uploaded (1-D: norms, biases) first, then the multi-dimensional weights that are
    // repacked and released later, so that released originals share allocator blocks only with each other
    // and the driver can hand those blocks back (lavapipe, SD 1.5 UNet after its first plan build: 4.0 GiB
    // RSS with checkpoint order, 2.6 GiB with this order; 4.75 GiB keeping the originals).
    const names = [...expected.keys()];
    const flat = (name: string) => expected.get(name)!.length <= 1;
    for (const name of [...names.filter(flat), ...names.filter((n) => !flat(n))]) {
      w.tensors.set(name, await source.uploadF16(gpu, name));
      options.onProgress?.(++done, expected.size);
    }
    return w;
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  private tensor(name: string): Tensor {
    const t = this.tensors.get(name);
    if (!t) throw new WeightError(`${this.component}: weight "${name}" was not loaded`);
    return t;
  }

  /** The f16 tensor as uploaded (norm weights, biases, embeddings: anything not repacked). */
  get(name: string): Tensor {
    const t = this.tensor(name);
    const kind = this.released.get(name);
    if (kind === "groupBias") {
      throw new WeightError(
        `${this.component}: bias "${name}" was joined into its packed group's bias and released; use ` +
          `weights.groupBias(…)`,
      );
    }
    if (kind) {
      throw new WeightError(
        `${this.component}: weight "${name}" was repacked for the ${kind} kernel and its f16 original ` +
          `released; use weights.${kind}("${name}")`,
      );
    }
    return t;
  }

  /** The checkpoint shape of a weight (also after its original was released). */
  shape(name: string): readonly number[] {
    return this.tensor(name).shape;
  }

  /** Conv weight repacked for the conv kernel (cached); the f16 original is released. */
  conv(name: string): ConvWeight {
    let c = this.convs.get(name);
    if (!c) {
      const t = this.get(name);
      c = prepareConvWeight(this.gpu, t);
      this.convs.set(name, c);
      this.release(name, t, "conv");
    }
    return c;
  }

  /**
   * Linear weight [N, K] (or a 1×1 conv weight [N, K, 1, 1] used as one) repacked for the GEMM kernels
   * (cached). The f16 original is released unless it is the operand itself (buffer mode with K % 8 == 0).
   */
  linear(name: string): LinearWeight {
    const group = this.groups.get(name);
    if (group) return this.packGroup(group).members.get(name)!;
    let l = this.linears.get(name);
    if (!l) {
      const t = this.get(name);
      const [n, k, ...rest] = t.shape;
      if (t.shape.length < 2 || rest.some((d) => d !== 1)) {
        throw new WeightError(`${this.component}: weight "${name}" [${t.shape}] is not a Linear weight`);
      }
      l = prepareLinearWeight(this.gpu, t.shape.length === 2 ? t : t.view([n, k]));
      this.linears.set(name, l);
      if (l.operand !== t.buffer) this.release(name, t, "linear");
    }
    return l;
  }

  /**
   * Declares groups of Linear weights (same K) to be packed side by side, each in output-column order. A
   * group is declared once; a weight already packed on its own, or in another group, cannot join one.
   */
  defineLinearGroups(groups: readonly (readonly string[])[]): void {
    for (const names of groups) {
      if (names.length < 2) continue;
      const existing = this.groups.get(names[0]);
      if (existing && sameNames(existing.names, names)) continue;
      for (const name of names) {
        this.tensor(name);
        if (this.groups.has(name) || this.linears.has(name)) {
          throw new WeightError(
            `${this.component}: weight "${name}" is already packed; it cannot join the group [${names}]`,
          );
        }
      }
      const group: LinearGroup = { names: [...names] };
      for (const name of names) this.groups.set(name, group);
    }
  }

  /**
   * The operand of Linear weights one GEMM reads together: a declared group, consecutive members of one (a
   * joint GEMM keeps only what fits one binding; models/graph.ts), or one weight of no group. Names never
   * declared are declared now, if none of them is packed yet.
   */
  linearGroup(names: readonly string[]): LinearWeight {
    if (names.length === 1 && !this.groups.has(names[0])) return this.linear(names[0]);
    const group = this.groupOf(names);
    const packed = this.packGroup(group);
    if (names.length === group.names.length) return packed.whole;
    const first = packed.members.get(names[0])!;
    return { ...first, n: names.reduce((a, name) => a + packed.members.get(name)!.n, 0) };
  }

  /**
   * The biases of `linearGroup(names)`, side by side: the group's biases joined into one tensor (zeros for a
   * member without one) and where `names` start in it; undefined when no member has a bias.
   */
  groupBias(names: readonly string[]): { tensor: Tensor; offset: number } | undefined {
    if (names.length === 1 && !this.groups.has(names[0])) {
      const b = biasName(names[0]);
      return b && this.has(b) ? { tensor: this.get(b), offset: 0 } : undefined;
    }
    const group = this.groupOf(names);
    if (group.bias === undefined) {
      const biases = group.names.map((n) => biasName(n)).map((b) => (b && this.has(b) ? this.get(b) : null));
      group.bias = null;
      if (biases.some((b) => b)) {
        const rows = group.names.map((n) => this.shape(n)[0]);
        if (rows.some((r) => r % 2 !== 0)) {
          throw new WeightError(`${this.component}: group [${group.names}] needs even widths to join biases`);
        }
        const total = rows.reduce((a, r) => a + r, 0);
        const buffer = this.gpu.storage(Math.ceil((total * 2) / 4) * 4, `${group.names[0]} group bias`);
        const encoder = this.gpu.device.createCommandEncoder({ label: "group bias" });
        let at = 0;
        biases.forEach((b, i) => {
          if (b) encoder.copyBufferToBuffer(b.buffer, 0, buffer, at * 2, rows[i] * 2);
          at += rows[i];
        });
        this.gpu.device.queue.submit([encoder.finish()]);
        group.bias = new Tensor(buffer, [total], "f16", `${group.names[0]} group bias`);
        // Only GEMMs over the group read them now: one copy of each bias on the GPU.
        biases.forEach((b, i) => b && this.release(biasName(group.names[i])!, b, "groupBias"));
      }
    }
    if (!group.bias) return undefined;
    const before = group.names.slice(0, group.names.indexOf(names[0]));
    return { tensor: group.bias, offset: before.reduce((a, name) => a + this.shape(name)[0], 0) };
  }

  /** The declared group `names` are consecutive members of (declared now as a group if none is packed). */
  private groupOf(names: readonly string[]): LinearGroup {
    if (!this.groups.has(names[0])) this.defineLinearGroups([names]);
    const group = this.groups.get(names[0]);
    const first = group ? group.names.indexOf(names[0]) : -1;
    if (!group || !sameNames(group.names.slice(first, first + names.length), names)) {
      throw new WeightError(`${this.component}: [${names}] are not consecutive members of a declared group`);
    }
    return group;
  }

  private packGroup(group: LinearGroup): NonNullable<LinearGroup["packed"]> {
    if (!group.packed) {
      const tensors = group.names.map((name) => {
        const t = this.get(name);
        const [n, k, ...rest] = t.shape;
        if (t.shape.length < 2 || rest.some((d) => d !== 1)) {
          throw new WeightError(`${this.component}: weight "${name}" [${t.shape}] is not a Linear weight`);
        }
        return t.shape.length === 2 ? t : t.view([n, k]);
      });
      const { whole, members } = prepareLinearGroup(this.gpu, tensors, group.names[0]);
      group.packed = { whole, members: new Map(group.names.map((n, i) => [n, members[i]])) };
      group.names.forEach((name, i) => this.release(name, tensors[i], "linear"));
    }
    return group.packed;
  }

  private release(name: string, t: Tensor, kind: "conv" | "linear" | "groupBias"): void {
    // The repack dispatch is already submitted; WebGPU frees the buffer once the queue is done with it.
    t.buffer.destroy();
    this.released.set(name, kind);
  }

  /** GPU bytes held: unreleased originals plus repacked operands (textures: width·height·16 bytes). */
  get bytes(): number {
    let total = 0;
    const originals = new Set<GPUBuffer | GPUTextureView>();
    for (const [name, t] of this.tensors) {
      originals.add(t.buffer);
      if (!this.released.has(name)) total += t.buffer.size;
    }
    for (const w of [...this.convs.values(), ...this.linears.values(), ...this.packedGroups()]) {
      if (w.texture) total += w.texture.width * w.texture.height * 16;
      else if (!originals.has(w.operand)) total += (w.operand as GPUBuffer).size;
    }
    for (const g of new Set(this.groups.values())) if (g.bias) total += g.bias.buffer.size;
    return total;
  }

  /** The whole operand of every packed group, once each. */
  private packedGroups(): LinearWeight[] {
    return [...new Set(this.groups.values())].flatMap((g) => (g.packed ? [g.packed.whole] : []));
  }

  destroy(): void {
    for (const g of new Set(this.groups.values())) g.bias?.destroy();
    for (const w of [...this.convs.values(), ...this.linears.values(), ...this.packedGroups()]) {
      if (w.texture) w.texture.destroy();
      else if (w.operand instanceof GPUBuffer) w.operand.destroy(); // packed copy or the original itself
    }
    for (const t of this.tensors.values()) t.destroy();
    this.tensors.clear();
    this.convs.clear();
    this.linears.clear();
    this.released.clear();
    this.groups.clear();
  }
}

function sameNames(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((n, i) => n === b[i]);
}

/** `x.to_q.weight` → `x.to_q.bias`. */
function biasName(weight: string): string | null {
  return weight.endsWith(".weight") ? `${weight.slice(0, -".weight".length)}.bias` : null;
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
