// One component (UNet, VAE or text encoder) as found in a checkpoint: its config and its tensors, addressed
// by diffusers / transformers names whatever the file's own naming. A single file goes through the
// config-generated name map (single_file_names.ts): VAE 1×1-conv attention reshaped and OpenCLIP's fused
// q/k/v split on the fly.

import type { Gpu } from "../../gpu/device.ts";
import { type Tensor, uploadF16Bits } from "../../gpu/tensor.ts";
import { type ComponentConfig, type ComponentKind, expectedTensors, isIgnorableTensor } from "../expected.ts";
import type { NameMap, NameMapEntry } from "./single_file_names.ts";
import type { TensorStore } from "./store.ts";
import type { SafetensorsDType, TensorInfo } from "../../weights/safetensors.ts";

export interface TensorMeta {
  /** dtype as stored in the file (F16, BF16, F32; reads convert). */
  dtype: SafetensorsDType;
  /** Shape under the diffusers name. */
  shape: number[];
}

/** One component's config and tensors as found in a checkpoint (a folder's subfolder, a file's prefix). */
export class ComponentSource<C extends ComponentConfig = ComponentConfig> {
  private readonly expected: Map<string, number[]>;

  constructor(
    readonly kind: ComponentKind,
    readonly config: C,
    private readonly store: TensorStore,
    /** null: the file uses diffusers names. */
    readonly map: NameMap | null,
    /** Where the tensors come from (file, and the key prefix for single files). */
    readonly source: string,
    /** Assumptions made while building the config (single files). */
    readonly notes: string[] = [],
  ) {
    this.expected = expectedTensors(kind, config);
  }

  /** The expected tensors (diffusers name → shape) for this config. */
  expectedTensors(): Map<string, number[]> {
    return new Map(this.expected);
  }

  /** Diffusers names of the tensors present in the file (mapped ones for single files), ignorable ones excluded. */
  names(): string[] {
    if (!this.map) return this.store.keys().filter((k) => !isIgnorableTensor(this.kind, k));
    return this.map.entries.filter((e) => this.store.has(e.original)).map((e) => e.name);
  }

  has(name: string): boolean {
    if (!this.map) return this.store.has(name);
    const e = this.map.byName.get(name);
    return e !== undefined && this.store.has(e.original);
  }

  tensor(name: string): TensorMeta {
    const { entry, info } = this.resolve(name);
    return { dtype: info.dtype, shape: mappedShape(entry, info) };
  }

  /** dtype / shape / offsets of a key as stored in the file (file naming, no mapping). */
  fileInfo(key: string): TensorInfo {
    return this.store.info(key);
  }

  /** The file key a diffusers name is read from (itself for diffusers folders). */
  fileKey(name: string): string {
    return this.resolve(name).key;
  }

  async readF16Bits(name: string): Promise<Uint16Array> {
    const { entry, key, info } = this.resolve(name);
    const bits = await this.store.file(key).readF16Bits(key);
    return entry ? this.extract(entry, info, bits) : bits;
  }

  async readF32(name: string): Promise<Float32Array> {
    const { entry, key, info } = this.resolve(name);
    const values = await this.store.file(key).readF32(key);
    return entry ? this.extract(entry, info, values) : values;
  }

  /** A new f16 GPU tensor with the diffusers shape. Plain tensors stream in chunks; sliced ones go via the host. */
  async uploadF16(gpu: Gpu, name: string, label = name): Promise<Tensor> {
    const { entry, key, info } = this.resolve(name);
    const shape = mappedShape(entry, info);
    if (entry && (entry.rows || entry.transpose)) {
      return uploadF16Bits(gpu, await this.readF16Bits(name), shape, label);
    }
    const t = await this.store.file(key).uploadF16(gpu, key, label);
    return sameShape(t.shape, shape) ? t : t.view(shape);
  }

  /** File keys under this component that are neither expected nor known extras. */
  unknownKeys(): string[] {
    if (!this.map) {
      return this.store.keys().filter((k) => !this.expected.has(k) && !isIgnorableTensor(this.kind, k));
    }
    const map = this.map;
    return this.store.keys().filter((k) =>
      k.startsWith(map.prefix) && !map.byOriginal.has(k) && !map.isIgnorable(k)
    );
  }

  /** Keys under this component's prefix that are known non-weights (position_ids, OpenCLIP's unused layer). */
  ignoredKeys(): string[] {
    if (!this.map) return this.store.keys().filter((k) => isIgnorableTensor(this.kind, k));
    const map = this.map;
    return this.store.keys().filter((k) => k.startsWith(map.prefix) && map.isIgnorable(k));
  }

  private resolve(name: string): { entry: NameMapEntry | null; key: string; info: TensorInfo } {
    if (!this.map) {
      if (!this.store.has(name)) throw new Error(`${this.source}: ${this.kind} has no tensor "${name}"`);
      return { entry: null, key: name, info: this.store.info(name) };
    }
    const entry = this.map.byName.get(name);
    if (!entry) throw new Error(`${this.source}: "${name}" is not a tensor of this ${this.kind} config`);
    if (!this.store.has(entry.original)) {
      throw new Error(
        `${this.source}: ${this.kind} tensor "${name}" (file key "${entry.original}") is missing`,
      );
    }
    return { entry, key: entry.original, info: this.store.info(entry.original) };
  }

  private extract<T extends Uint16Array | Float32Array>(entry: NameMapEntry, info: TensorInfo, data: T): T {
    if (entry.rows) {
      if (!sameShape(info.shape, entry.originalShape)) {
        throw new Error(
          `${this.source}: "${entry.original}" has shape [${info.shape}], expected [${entry.originalShape}] to split into "${entry.name}"`,
        );
      }
      const rowLen = info.shape.slice(1).reduce((a, b) => a * b, 1);
      return data.slice(entry.rows[0] * rowLen, entry.rows[1] * rowLen) as T;
    }
    if (entry.transpose) {
      if (info.shape.length !== 2) throw new Error(`${this.source}: "${entry.original}" is not 2-D`);
      const [r, c] = info.shape;
      const out = new (data.constructor as { new (n: number): T })(data.length);
      for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = data[i * c + j];
      return out;
    }
    return data;
  }
}

function mappedShape(entry: NameMapEntry | null, info: TensorInfo): number[] {
  if (!entry) return [...info.shape];
  if (entry.transpose) return info.shape.length === 2 ? [info.shape[1], info.shape[0]] : [...info.shape];
  // Known layout differences (1×1 conv ↔ Linear, fused rows) apply only when the file has the original shape;
  // anything else is reported as is and caught by validate().
  return sameShape(info.shape, entry.originalShape) ? [...entry.shape] : [...info.shape];
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
