// Opening a Stable Diffusion model: a diffusers folder (model_index.json, unet/, vae/, text_encoder/,
// tokenizer/, scheduler/) or a single-file checkpoint (.safetensors in the original LDM layout).
//
// Whatever the file's naming, components are accessed by DIFFUSERS / transformers tensor names; a
// single file goes through the config-generated name maps of names.ts (VAE 1×1-conv attention reshaped,
// OpenCLIP's fused q/k/v split, on the fly). Single files carry no configs: they are inferred from tensor
// shapes (see inferSingleFileConfigJson) plus the SD 1.x / 2.x family defaults for what shapes cannot show
// (GroupNorm groups, head counts). Whether an SD 2.x file predicts v or epsilon cannot be read from the
// weights at all: it is guessed (metadata, file name, else v-prediction as diffusers assumes) and can be
// overridden.

import type { Gpu } from "../gpu/device.ts";
import { type Tensor, uploadF16Bits } from "../gpu/tensor.ts";
import { type ClipTextConfig, parseClipTextConfig } from "./clip/config.ts";
import { familyConfigJson } from "./presets.ts";
import type { ReferenceModel } from "./presets.ts";
import { parseUNetConfig, type UNetConfig } from "./unet/config.ts";
import { parseVaeConfig, type VaeConfig } from "./vae/config.ts";
import { readJsonFile } from "../util/json.ts";
import {
  type ComponentConfig,
  type ComponentKind,
  expectedTensors,
  isIgnorableTensor,
  parameterCount,
} from "./expected.ts";
import {
  CLIP_TRANSFORMERS_PREFIX,
  clipNameMap,
  type ClipOriginalLayout,
  type NameMap,
  type NameMapEntry,
  OPENCLIP_PREFIX,
  UNET_ORIGINAL_PREFIX,
  unetNameMap,
  VAE_ORIGINAL_PREFIX,
  vaeNameMap,
} from "./single_file_names.ts";
import { type SafetensorsDType, SafetensorsFile, type TensorInfo } from "../weights/safetensors.ts";

export type SdVersion = "sd1" | "sd2";
export type PredictionType = "epsilon" | "v_prediction" | "sample";

export interface TensorMeta {
  /** dtype as stored in the file (F16, BF16, F32; reads convert). */
  dtype: SafetensorsDType;
  /** Shape under the diffusers name. */
  shape: number[];
}

// ---------------------------------------------------------------------------------------------------------
// Tensor storage: one safetensors file or a sharded set (*.safetensors.index.json).

class TensorStore {
  private constructor(
    readonly description: string,
    private readonly files: SafetensorsFile[],
    private readonly byKey: Map<string, SafetensorsFile>,
  ) {}

  static async openFile(path: string): Promise<TensorStore> {
    const f = await SafetensorsFile.open(path);
    return new TensorStore(path, [f], new Map(f.names().map((n) => [n, f])));
  }

  /** A sharded checkpoint: `{"weight_map": {name: "shard file"}}` next to the shards. */
  static async openIndex(indexPath: string): Promise<TensorStore> {
    const index = await readJsonFile(indexPath) as { weight_map?: Record<string, string> };
    if (!index || typeof index.weight_map !== "object") throw new Error(`${indexPath}: no weight_map`);
    const dir = dirname(indexPath);
    const files = new Map<string, SafetensorsFile>();
    const byKey = new Map<string, SafetensorsFile>();
    try {
      for (const shard of new Set(Object.values(index.weight_map))) {
        const f = await SafetensorsFile.open(`${dir}/${shard}`);
        files.set(shard, f);
        for (const n of f.names()) byKey.set(n, f);
      }
    } catch (e) {
      for (const f of files.values()) f.close();
      throw e;
    }
    for (const name of Object.keys(index.weight_map)) {
      if (!byKey.has(name)) throw new Error(`${indexPath}: "${name}" is listed but absent from its shard`);
    }
    return new TensorStore(indexPath, [...files.values()], byKey);
  }

  keys(): string[] {
    return [...this.byKey.keys()];
  }

  has(key: string): boolean {
    return this.byKey.has(key);
  }

  info(key: string): TensorInfo {
    const f = this.byKey.get(key);
    if (!f) throw new Error(`${this.description}: no tensor "${key}"`);
    return f.info(key);
  }

  file(key: string): SafetensorsFile {
    const f = this.byKey.get(key);
    if (!f) throw new Error(`${this.description}: no tensor "${key}"`);
    return f;
  }

  get metadata(): Record<string, string> {
    return this.files[0]?.metadata ?? {};
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}

// ---------------------------------------------------------------------------------------------------------
// A component (UNet, VAE, text encoder) with tensors addressed by diffusers names.

export interface ValidationIssue {
  kind: "missing" | "extra" | "shape" | "dtype";
  /** The diffusers name (for "extra" tensors of single files: the file's own key). */
  tensor: string;
  message: string;
}

export interface ValidationReport {
  component: ComponentKind;
  ok: boolean;
  issues: ValidationIssue[];
  /** When the tensors don't fit the config: which model the file looks like instead, or null. */
  looksLike: string | null;
  /** Human-readable, one issue per line (at most 20 lines of issues). */
  summary: string;
}

const FLOAT_DTYPES: SafetensorsDType[] = ["F16", "BF16", "F32"];

export class ModelComponent<C extends ComponentConfig = ComponentConfig> {
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

  validate(): ValidationReport {
    return validate(this);
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

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/**
 * Every expected tensor present with the expected shape and a floating dtype, nothing unexpected
 * (known non-weights such as position_ids are ignored). Issues name the tensor; for single files the
 * file key too. When the tensors don't fit, says which model the file looks like.
 */
export function validate(component: ModelComponent): ValidationReport {
  const issues: ValidationIssue[] = [];
  const where = (name: string) =>
    component.map ? ` (file key "${component.map.byName.get(name)?.original}")` : "";
  for (const [name, shape] of component.expectedTensors()) {
    if (!component.has(name)) {
      issues.push({
        kind: "missing",
        tensor: name,
        message: `missing tensor "${name}"${where(name)} [${shape}]`,
      });
      continue;
    }
    const meta = component.tensor(name);
    const entry = component.map?.byName.get(name);
    const raw = entry?.rows ? component.fileInfo(entry.original).shape : null;
    if (entry && raw && !sameShape(raw, entry.originalShape)) {
      // A fused q/k/v tensor of the wrong size: its slice could have any shape, so report the file's.
      issues.push({
        kind: "shape",
        tensor: name,
        message: `tensor "${name}"${
          where(name)
        }: the fused tensor has shape [${raw}], expected [${entry.originalShape}]`,
      });
    } else if (!sameShape(meta.shape, shape)) {
      issues.push({
        kind: "shape",
        tensor: name,
        message: `tensor "${name}"${where(name)} has shape [${meta.shape}], expected [${shape}]`,
      });
    }
    if (!FLOAT_DTYPES.includes(meta.dtype)) {
      issues.push({
        kind: "dtype",
        tensor: name,
        message: `tensor "${name}"${where(name)} is ${meta.dtype}, not a float`,
      });
    }
  }
  for (const key of component.unknownKeys()) {
    issues.push({
      kind: "extra",
      tensor: key,
      message: `unexpected tensor "${key}" (not part of this ${component.kind} config)`,
    });
  }
  const looksLike = issues.length > 0 ? describeMismatch(component) : null;
  const lines = [
    `${component.kind} (${component.source}): ${issues.length === 0 ? "OK" : `${issues.length} problem(s)`}`,
  ];
  for (const i of issues.slice(0, 20)) lines.push(`  ${i.message}`);
  if (issues.length > 20) lines.push(`  ... and ${issues.length - 20} more`);
  if (looksLike) lines.push(`  ${looksLike}`);
  return { component: component.kind, ok: issues.length === 0, issues, looksLike, summary: lines.join("\n") };
}

/** Throws with the validation summary unless the component is valid. */
export function assertValid(component: ModelComponent): void {
  const r = validate(component);
  if (!r.ok) throw new Error(r.summary);
}

// ---- "looks like": a structural signature of the file's tensors vs the config's ----

type ShapeList = [string, number[]][];

function fileShapes(component: ModelComponent): ShapeList {
  const keys = component.map
    ? [
      ...component.map.entries.filter((e) => component.has(e.name)).map((e) => e.name),
      ...component.unknownKeys(),
    ]
    : component.names();
  return keys.map((k) => {
    try {
      // unknown single-file keys: only their raw shape is known
      return [k, component.has(k) ? component.tensor(k).shape : component.fileInfo(k).shape];
    } catch {
      return [k, []];
    }
  });
}

function unetSignature(shapes: ShapeList): string | null {
  const toK = shapes.find(([k]) => /attn2\.to_k\.weight$/.test(k))?.[1];
  const projIn = shapes.find(([k]) => /proj_in\.weight$/.test(k))?.[1];
  const convIn = shapes.find(([k]) => /^(conv_in|input_blocks\.0\.0)\.weight$/.test(k))?.[1];
  if (!toK || !projIn) return null;
  return unetSignatureOf(projIn.length === 2, toK[1], convIn?.[0]);
}

function unetSignatureOf(linear: boolean, crossDim: number, width: number | undefined): string {
  const style = linear && crossDim === 1024
    ? "SD 2.x"
    : !linear && crossDim === 768
    ? "SD 1.x"
    : linear
    ? "SD 2.x-style"
    : "SD 1.x-style";
  return `${style} UNet (${
    linear ? "Linear" : "1×1 conv"
  } proj_in/proj_out, cross-attention context width ${crossDim}` +
    `${width ? `, base width ${width}` : ""})`;
}

function clipSignature(shapes: ShapeList): string | null {
  const tok = shapes.find(([k]) => /token_embedding\.weight$/.test(k))?.[1];
  if (!tok) return null;
  let layers = 0;
  for (const [k] of shapes) {
    const m = k.match(/(?:layers|resblocks)\.(\d+)\./);
    if (m) layers = Math.max(layers, +m[1] + 1);
  }
  return clipSignatureOf(tok[1], layers);
}

function clipSignatureOf(width: number, layers: number): string {
  const style = width === 768
    ? "SD 1.x's CLIP ViT-L/14"
    : width === 1024
    ? "SD 2.x's OpenCLIP ViT-H/14"
    : "a CLIP";
  return `${style} text encoder (width ${width}, ${layers} layers)`;
}

function vaeSignature(shapes: ShapeList): string | null {
  const widths: number[] = [];
  for (const [k, s] of shapes) {
    const m = k.match(/^encoder\.down_blocks\.(\d+)\.resnets\.0\.conv2\.weight$/);
    if (m) widths[+m[1]] = s[0];
  }
  const latent = shapes.find(([k]) => k === "decoder.conv_in.weight")?.[1]?.[1];
  if (widths.length === 0 || latent === undefined) return null;
  return `VAE with widths [${widths}] and ${latent} latent channels`;
}

function describeMismatch(component: ModelComponent): string | null {
  const shapes = fileShapes(component);
  let file: string | null;
  let config: string;
  switch (component.kind) {
    case "unet": {
      const c = component.config as UNetConfig;
      file = unetSignature(shapes);
      const cross = Array.isArray(c.cross_attention_dim) ? c.cross_attention_dim[0] : c.cross_attention_dim;
      config = unetSignatureOf(c.use_linear_projection, cross, c.block_out_channels[0]);
      break;
    }
    case "vae": {
      const c = component.config as VaeConfig;
      file = vaeSignature(shapes);
      config = `VAE with widths [${c.block_out_channels}] and ${c.latent_channels} latent channels`;
      break;
    }
    case "text_encoder": {
      const c = component.config as ClipTextConfig;
      file = clipSignature(shapes);
      config = clipSignatureOf(c.hidden_size, c.num_hidden_layers);
      break;
    }
  }
  for (const family of ["sd15", "sd21"] as ReferenceModel[]) {
    if (matchesFamily(component, family)) {
      return `the file's tensors match ${
        FAMILY_NAMES[family]
      }'s ${component.kind} exactly, but the config describes ${config}`;
    }
  }
  if (file && file !== config) return `the file looks like ${file}, but the config describes ${config}`;
  return null;
}

const FAMILY_NAMES: Record<ReferenceModel, string> = {
  sd15: "Stable Diffusion 1.5",
  sd21: "Stable Diffusion 2.1",
};

/** True when the component's diffusers-named tensors equal a reference model's (and the config is another). */
function matchesFamily(component: ModelComponent, family: ReferenceModel): boolean {
  if (component.map) return false; // single files: configs are inferred from the file itself
  const json = familyConfigJson(family);
  let expected: Map<string, number[]>;
  switch (component.kind) {
    case "unet":
      expected = expectedTensors("unet", parseUNetConfig(json.unet));
      break;
    case "vae":
      expected = expectedTensors("vae", parseVaeConfig(json.vae));
      break;
    case "text_encoder":
      expected = expectedTensors("text_encoder", parseClipTextConfig(json.text_encoder));
      break;
  }
  const names = component.names();
  if (names.length !== expected.size) return false;
  const own = component.expectedTensors();
  if (own.size === expected.size && [...own].every(([k, s]) => sameShape(expected.get(k) ?? [], s))) {
    return false;
  }
  return names.every((n) => {
    const s = expected.get(n);
    return s !== undefined && sameShape(component.tensor(n).shape, s);
  });
}

// ---------------------------------------------------------------------------------------------------------
// Whole models

export interface OpenModelOptions {
  /** Overrides the scheduler config / detection (the only way to know it for single files). */
  predictionType?: PredictionType;
  /** Config overrides (diffusers / transformers JSON keys), merged over config.json or the inferred config. */
  unet?: Record<string, unknown>;
  vae?: Record<string, unknown>;
  textEncoder?: Record<string, unknown>;
}

export interface OpenedModel {
  path: string;
  format: "diffusers" | "single-file";
  /** SD 1.x (CLIP ViT-L, 768-wide context, conv proj_in) or SD 2.x (OpenCLIP ViT-H, 1024, Linear proj_in). */
  version: SdVersion | null;
  unet: ModelComponent<UNetConfig> | null;
  vae: ModelComponent<VaeConfig> | null;
  textEncoder: ModelComponent<ClipTextConfig> | null;
  /** scheduler_config.json (diffusers), or the family's default scheduler config (single files). */
  scheduler: Record<string, unknown>;
  predictionType: PredictionType;
  /** Where predictionType came from, in words (a guess is said to be one). */
  predictionTypeSource: string;
  /** Folder with vocab.json / merges.txt (diffusers layout); null for single files. */
  tokenizerDir: string | null;
  notes: string[];
  /** Single files: keys outside all components (alphas_cumprod, model_ema.*, ...), ignored. */
  ignoredTensors: string[];
  close(): void;
}

export async function openModel(path: string, opts: OpenModelOptions = {}): Promise<OpenedModel> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(path);
  } catch (e) {
    throw new Error(`${path}: cannot open model (${(e as Error).message})`);
  }
  if (stat.isDirectory) return await openDiffusersFolder(path, opts);
  if (/\.safetensors$/i.test(path)) return await openSingleFile(path, opts);
  if (/\.(ckpt|pt|pth|bin)$/i.test(path)) {
    throw new Error(
      `${path}: pickle checkpoints are not supported (they can run code); convert to .safetensors`,
    );
  }
  throw new Error(`${path}: not a diffusers model folder or a .safetensors checkpoint`);
}

const WEIGHT_FILES: Record<ComponentKind, string[]> = {
  unet: ["diffusion_pytorch_model"],
  vae: ["diffusion_pytorch_model"],
  text_encoder: ["model"],
};

const FOLDERS: Record<ComponentKind, string> = { unet: "unet", vae: "vae", text_encoder: "text_encoder" };

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** fp16 variant first (it is what we upload), then the plain file, then sharded indexes. */
async function findWeights(dir: string, kind: ComponentKind): Promise<string | null> {
  for (const base of WEIGHT_FILES[kind]) {
    for (
      const name of [
        `${base}.fp16.safetensors`,
        `${base}.safetensors`,
        `${base}.fp16.safetensors.index.json`,
        `${base}.safetensors.index.json`,
      ]
    ) {
      if (await exists(`${dir}/${name}`)) return `${dir}/${name}`;
    }
  }
  for (const base of WEIGHT_FILES[kind]) {
    for (const ext of ["bin", "fp16.bin", "ckpt"]) {
      if (await exists(`${dir}/${base}.${ext}`)) {
        throw new Error(
          `${dir}: only ${base}.${ext} (a pickle file) is present; safetensors weights are required`,
        );
      }
    }
  }
  return null;
}

async function openDiffusersFolder(path: string, opts: OpenModelOptions): Promise<OpenedModel> {
  const notes: string[] = [];
  if (!await exists(`${path}/model_index.json`)) {
    notes.push("no model_index.json (components found by folder name)");
  }
  const stores: TensorStore[] = [];
  const openComponent = async <C extends ComponentConfig>(
    kind: ComponentKind,
    parse: (json: unknown, source: string) => C,
    overrides: Record<string, unknown> | undefined,
  ): Promise<ModelComponent<C> | null> => {
    const dir = `${path}/${FOLDERS[kind]}`;
    if (!await exists(dir)) {
      notes.push(`${FOLDERS[kind]}/ is missing`);
      return null;
    }
    const configPath = `${dir}/config.json`;
    if (!await exists(configPath)) throw new Error(`${configPath} is missing`);
    const json = await readJsonFile(configPath);
    const config = parse(overrides ? { ...(json as object), ...overrides } : json, configPath);
    const weights = await findWeights(dir, kind);
    if (!weights) throw new Error(`${dir}: no ${WEIGHT_FILES[kind][0]}[.fp16].safetensors`);
    const store = weights.endsWith(".index.json")
      ? await TensorStore.openIndex(weights)
      : await TensorStore.openFile(weights);
    stores.push(store);
    return new ModelComponent(kind, config, store, null, weights);
  };
  try {
    const unet = await openComponent("unet", parseUNetConfig, opts.unet);
    const vae = await openComponent("vae", parseVaeConfig, opts.vae);
    const textEncoder = await openComponent("text_encoder", parseClipTextConfig, opts.textEncoder);
    const schedulerPath = `${path}/scheduler/scheduler_config.json`;
    let scheduler: Record<string, unknown> = {};
    if (await exists(schedulerPath)) scheduler = await readJsonFile(schedulerPath) as Record<string, unknown>;
    else notes.push("scheduler/scheduler_config.json is missing");
    let predictionType: PredictionType;
    let predictionTypeSource: string;
    if (opts.predictionType) {
      predictionType = opts.predictionType;
      predictionTypeSource = "override";
    } else if (typeof scheduler.prediction_type === "string") {
      predictionType = checkPredictionType(scheduler.prediction_type, schedulerPath);
      predictionTypeSource = "scheduler/scheduler_config.json";
    } else {
      predictionType = "epsilon";
      predictionTypeSource =
        "scheduler/scheduler_config.json has no prediction_type (diffusers default: epsilon)";
    }
    const tokenizerDir = await exists(`${path}/tokenizer/vocab.json`) ? `${path}/tokenizer` : null;
    if (!tokenizerDir) notes.push("tokenizer/vocab.json is missing");
    return {
      path,
      format: "diffusers",
      version: versionFromConfigs(unet?.config ?? null, textEncoder?.config ?? null),
      unet,
      vae,
      textEncoder,
      scheduler,
      predictionType,
      predictionTypeSource,
      tokenizerDir,
      notes,
      ignoredTensors: [],
      close: () => stores.forEach((s) => s.close()),
    };
  } catch (e) {
    stores.forEach((s) => s.close());
    throw e;
  }
}

function checkPredictionType(v: string, source: string): PredictionType {
  if (v === "epsilon" || v === "v_prediction" || v === "sample") return v;
  throw new Error(`${source}: prediction_type "${v}" is not supported (epsilon, v_prediction, sample)`);
}

function versionFromConfigs(unet: UNetConfig | null, clip: ClipTextConfig | null): SdVersion | null {
  if (unet) return unet.use_linear_projection ? "sd2" : "sd1";
  if (clip) return clip.hidden_act === "gelu" ? "sd2" : "sd1";
  return null;
}

// ---- single files ----

export interface SingleFileConfigs {
  version: SdVersion | null;
  unet: Record<string, unknown> | null;
  vae: Record<string, unknown> | null;
  textEncoder: Record<string, unknown> | null;
  clipLayout: ClipOriginalLayout | null;
  /** transformers layout without the `text_model.` level (old SD 1.x files). */
  clipWithoutTextModelLevel: boolean;
  notes: string[];
}

/**
 * Configs (diffusers JSON) inferred from an original-layout checkpoint's tensor shapes: widths, levels,
 * layers, block types, context width, Linear vs conv projections, text encoder width and depth. Not in the
 * shapes, taken from the SD 1.x / 2.x defaults and listed in `notes`: GroupNorm groups (32), attention
 * heads (SD 1.x: 8 per level; SD 2.x: 64 channels per head), CLIP heads (64 channels per head).
 */
export function inferSingleFileConfigJson(shapes: Map<string, number[]>): SingleFileConfigs {
  const notes: string[] = [];
  const clipLayout: ClipOriginalLayout | null = shapes.has(`${OPENCLIP_PREFIX}token_embedding.weight`)
    ? "openclip"
    : shapes.has(`${CLIP_TRANSFORMERS_PREFIX}text_model.embeddings.token_embedding.weight`) ||
        shapes.has(`${CLIP_TRANSFORMERS_PREFIX}embeddings.token_embedding.weight`)
    ? "transformers"
    : null;
  const unetJson = inferUNet(shapes, notes);
  let version: SdVersion | null = null;
  if (unetJson) version = unetJson.use_linear_projection ? "sd2" : "sd1";
  else if (clipLayout) version = clipLayout === "openclip" ? "sd2" : "sd1";
  if (unetJson && version) {
    const family = familyConfigJson(version === "sd1" ? "sd15" : "sd21");
    const widths = unetJson.block_out_channels as number[];
    if (version === "sd1") {
      unetJson.attention_head_dim = family.unet.attention_head_dim;
      notes.push("unet: attention heads are not stored in the weights; assumed SD 1.x's 8 heads per level");
    } else {
      const heads = widths.map((w) => w / 64);
      if (heads.every((h) => Number.isInteger(h) && h > 0)) {
        unetJson.attention_head_dim = heads;
        notes.push(
          "unet: attention heads are not stored in the weights; assumed SD 2.x's 64 channels per head",
        );
      } else {
        unetJson.attention_head_dim = 1;
        notes.push(
          `unet: widths [${widths}] are not multiples of 64; assumed 1 attention head per level (override it)`,
        );
      }
      unetJson.upcast_attention = true;
      notes.push("unet: upcast_attention assumed true (SD 2.1; only affects f16 precision)");
    }
    unetJson.norm_num_groups = 32;
    notes.push("unet: norm_num_groups assumed 32 (not stored in the weights)");
  }
  if (clipLayout && clipLayout !== (version === "sd2" ? "openclip" : "transformers")) {
    notes.push(
      `text encoder layout (${clipLayout}) is unusual for an ${version === "sd2" ? "SD 2.x" : "SD 1.x"} UNet`,
    );
  }
  const vaeJson = inferVae(shapes, notes, version);
  const clip = clipLayout ? inferClip(shapes, clipLayout, notes) : null;
  return {
    version,
    unet: unetJson,
    vae: vaeJson,
    textEncoder: clip?.json ?? null,
    clipLayout,
    clipWithoutTextModelLevel: clip?.withoutTextModelLevel ?? false,
    notes,
  };
}

function maxIndex(shapes: Map<string, number[]>, re: RegExp): number {
  let max = -1;
  for (const k of shapes.keys()) {
    const m = k.match(re);
    if (m) max = Math.max(max, +m[1]);
  }
  return max;
}

function inferUNet(shapes: Map<string, number[]>, notes: string[]): Record<string, unknown> | null {
  const P = UNET_ORIGINAL_PREFIX;
  const get = (k: string) => shapes.get(P + k);
  const convIn = get("input_blocks.0.0.weight");
  const convOut = get("out.2.weight");
  const timeEmbed = get("time_embed.0.weight");
  if (!convIn || !convOut || !timeEmbed) return null;
  const esc = P.replace(/\./g, "\\.");
  const lastInput = maxIndex(shapes, new RegExp(`^${esc}input_blocks\\.(\\d+)\\.`));
  const transformerLayers = (block: string) =>
    maxIndex(
      shapes,
      new RegExp(`^${esc}${block.replace(/\./g, "\\.")}\\.1\\.transformer_blocks\\.(\\d+)\\.`),
    ) + 1;
  interface Level {
    width: number;
    layers: number;
    attention: boolean;
    transformerLayers: number;
  }
  const levels: Level[] = [];
  let cur: Level = { width: 0, layers: 0, attention: false, transformerLayers: 1 };
  for (let k = 1; k <= lastInput; k++) {
    if (get(`input_blocks.${k}.0.op.weight`)) {
      levels.push(cur);
      cur = { width: 0, layers: 0, attention: false, transformerLayers: 1 };
      continue;
    }
    const conv2 = get(`input_blocks.${k}.0.out_layers.3.weight`);
    if (!conv2) throw new Error(`single-file UNet: input_blocks.${k} is neither a resnet nor a downsampler`);
    cur.layers++;
    cur.width = conv2[0];
    if (get(`input_blocks.${k}.1.proj_in.weight`)) {
      cur.attention = true;
      cur.transformerLayers = transformerLayers(`input_blocks.${k}`);
    }
  }
  levels.push(cur);
  if (levels.some((l) => l.layers === 0)) throw new Error("single-file UNet: a level without resnets");
  const upTypes: string[] = [];
  let start = 0;
  for (const l of [...levels].reverse()) {
    upTypes.push(get(`output_blocks.${start}.1.proj_in.weight`) ? "CrossAttnUpBlock2D" : "UpBlock2D");
    start += l.layers + 1;
  }
  const toK = [...shapes].find(([k]) => k.startsWith(P) && k.endsWith("attn2.to_k.weight"))?.[1];
  const projIn = [...shapes].find(([k]) => k.startsWith(P) && k.endsWith(".proj_in.weight"))?.[1];
  const uniform = (a: number[]) => (a.every((v) => v === a[0]) ? a[0] : a);
  const json: Record<string, unknown> = {
    in_channels: convIn[1],
    out_channels: convOut[0],
    block_out_channels: levels.map((l) => l.width),
    layers_per_block: uniform(levels.map((l) => l.layers)),
    down_block_types: levels.map((l) => (l.attention ? "CrossAttnDownBlock2D" : "DownBlock2D")),
    up_block_types: upTypes,
    transformer_layers_per_block: uniform(levels.map((l) => l.transformerLayers)),
    cross_attention_dim: toK ? toK[1] : 768,
    use_linear_projection: projIn ? projIn.length === 2 : false,
  };
  if (timeEmbed[0] !== 4 * convIn[0]) json.time_embedding_dim = timeEmbed[0];
  if (!toK) notes.push("unet: no cross-attention found");
  return json;
}

function inferVae(
  shapes: Map<string, number[]>,
  notes: string[],
  version: SdVersion | null,
): Record<string, unknown> | null {
  const P = VAE_ORIGINAL_PREFIX;
  const get = (k: string) => shapes.get(P + k);
  const convIn = get("encoder.conv_in.weight");
  const convOut = get("decoder.conv_out.weight");
  const decIn = get("decoder.conv_in.weight");
  if (!convIn || !convOut || !decIn) return null;
  const esc = P.replace(/\./g, "\\.");
  const levels = maxIndex(shapes, new RegExp(`^${esc}encoder\\.down\\.(\\d+)\\.`)) + 1;
  const widths: number[] = [];
  for (let i = 0; i < levels; i++) {
    const w = get(`encoder.down.${i}.block.0.conv2.weight`);
    if (!w) throw new Error(`single-file VAE: encoder.down.${i}.block.0.conv2.weight is missing`);
    widths.push(w[0]);
  }
  notes.push("vae: norm_num_groups assumed 32, scaling_factor 0.18215 (not stored in the weights)");
  return {
    in_channels: convIn[1],
    out_channels: convOut[0],
    block_out_channels: widths,
    down_block_types: widths.map(() => "DownEncoderBlock2D"),
    up_block_types: widths.map(() => "UpDecoderBlock2D"),
    layers_per_block: maxIndex(shapes, new RegExp(`^${esc}encoder\\.down\\.0\\.block\\.(\\d+)\\.`)) + 1,
    latent_channels: decIn[1],
    norm_num_groups: 32,
    sample_size: version === "sd2" ? 768 : 512,
    scaling_factor: 0.18215,
    use_quant_conv: shapes.has(`${P}quant_conv.weight`),
    use_post_quant_conv: shapes.has(`${P}post_quant_conv.weight`),
    mid_block_add_attention: shapes.has(`${P}encoder.mid.attn_1.q.weight`),
  };
}

function inferClip(
  shapes: Map<string, number[]>,
  layout: ClipOriginalLayout,
  notes: string[],
): { json: Record<string, unknown>; withoutTextModelLevel: boolean } {
  const heads = (h: number) => {
    if (h % 64 === 0) return h / 64;
    notes.push(`text encoder: width ${h} is not a multiple of 64; assumed 1 attention head (override it)`);
    return 1;
  };
  if (layout === "openclip") {
    const P = OPENCLIP_PREFIX;
    const [vocab, h] = shapes.get(`${P}token_embedding.weight`)!;
    const positions = shapes.get(`${P}positional_embedding`)?.[0] ?? 77;
    const blocks =
      maxIndex(shapes, new RegExp(`^${P.replace(/\./g, "\\.")}transformer\\.resblocks\\.(\\d+)\\.`)) + 1;
    const fc1 = shapes.get(`${P}transformer.resblocks.0.mlp.c_fc.weight`);
    notes.push(
      `text encoder: OpenCLIP layout with ${blocks} layers; SD 2.x uses the penultimate layer, so ${
        blocks - 1
      } are loaded`,
    );
    return {
      json: {
        ...familyConfigJson("sd21").text_encoder,
        vocab_size: vocab,
        hidden_size: h,
        max_position_embeddings: positions,
        num_hidden_layers: blocks - 1,
        num_attention_heads: heads(h),
        intermediate_size: fc1 ? fc1[0] : 4 * h,
        hidden_act: "gelu",
      },
      withoutTextModelLevel: false,
    };
  }
  const withoutTextModelLevel = !shapes.has(
    `${CLIP_TRANSFORMERS_PREFIX}text_model.embeddings.token_embedding.weight`,
  );
  const P = CLIP_TRANSFORMERS_PREFIX + (withoutTextModelLevel ? "" : "text_model.");
  const [vocab, h] = shapes.get(`${P}embeddings.token_embedding.weight`)!;
  const positions = shapes.get(`${P}embeddings.position_embedding.weight`)?.[0] ?? 77;
  const layers = maxIndex(shapes, new RegExp(`^${P.replace(/\./g, "\\.")}encoder\\.layers\\.(\\d+)\\.`)) + 1;
  const fc1 = shapes.get(`${P}encoder.layers.0.mlp.fc1.weight`);
  return {
    json: {
      ...familyConfigJson("sd15").text_encoder,
      vocab_size: vocab,
      hidden_size: h,
      max_position_embeddings: positions,
      num_hidden_layers: layers,
      num_attention_heads: heads(h),
      intermediate_size: fc1 ? fc1[0] : 4 * h,
      hidden_act: "quick_gelu",
    },
    withoutTextModelLevel,
  };
}

/** Prediction type of a single file: override, ModelSpec metadata, file name, else the family's usual one. */
function singleFilePrediction(
  path: string,
  metadata: Record<string, string>,
  version: SdVersion | null,
  override: PredictionType | undefined,
): { type: PredictionType; source: string } {
  if (override) return { type: override, source: "override" };
  const spec = metadata["modelspec.prediction_type"];
  if (spec === "v" || spec === "v_prediction") {
    return { type: "v_prediction", source: "file metadata modelspec.prediction_type" };
  }
  if (spec === "epsilon") return { type: "epsilon", source: "file metadata modelspec.prediction_type" };
  const arch = metadata["modelspec.architecture"] ?? "";
  if (/768-v/.test(arch)) return { type: "v_prediction", source: "file metadata modelspec.architecture" };
  const file = path.split("/").pop() ?? path;
  if (/(^|[-_.])(768-?v|v-?pred(iction)?)([-_.]|$)/i.test(file)) {
    return { type: "v_prediction", source: `guessed from the file name "${file}"` };
  }
  if (/(^|[-_.])eps(ilon)?([-_.]|$)/i.test(file)) {
    return { type: "epsilon", source: `guessed from the file name "${file}"` };
  }
  if (version === "sd2") {
    // Stability's own names: v2-1_768-ema-pruned (v-prediction), v2-1_512-ema-pruned / 512-base (epsilon).
    if (/(^|[-_.])768([-_.]|$)/.test(file)) {
      return {
        type: "v_prediction",
        source: `guessed from the file name "${file}" (SD 2.x 768 px models predict v)`,
      };
    }
    if (/(^|[-_.])(512|base)([-_.]|$)/i.test(file)) {
      return {
        type: "epsilon",
        source: `guessed from the file name "${file}" (SD 2.x 512 px base models predict epsilon)`,
      };
    }
    return {
      type: "v_prediction",
      source: "GUESSED: SD 2.x weights do not say whether they predict v or epsilon (2.x-768 models are v, " +
        "2.x-base models epsilon); assumed v_prediction as diffusers does; override if images come out wrong",
    };
  }
  return { type: "epsilon", source: "assumed: SD 1.x models predict epsilon (not stored in the weights)" };
}

async function openSingleFile(path: string, opts: OpenModelOptions): Promise<OpenedModel> {
  const store = await TensorStore.openFile(path);
  try {
    const shapes = new Map(store.keys().map((k) => [k, store.info(k).shape]));
    const inferred = inferSingleFileConfigJson(shapes);
    const notes = [...inferred.notes];
    const pred = singleFilePrediction(path, store.metadata, inferred.version, opts.predictionType);
    const scheduler: Record<string, unknown> = {
      ...familyConfigJson(inferred.version === "sd2" ? "sd21" : "sd15").scheduler,
      prediction_type: pred.type,
    };
    let unet: ModelComponent<UNetConfig> | null = null;
    if (inferred.unet) {
      const json = { ...inferred.unet, ...opts.unet };
      if (json.sample_size === undefined) {
        json.sample_size = inferred.version === "sd2" && pred.type === "v_prediction" ? 96 : 64;
      }
      const config = parseUNetConfig(json, `${path} (inferred unet config)`);
      unet = new ModelComponent(
        "unet",
        config,
        store,
        unetNameMap(config),
        `${path} [${UNET_ORIGINAL_PREFIX}*]`,
        notes.filter((n) => n.startsWith("unet")),
      );
    } else notes.push(`no UNet (${UNET_ORIGINAL_PREFIX}*) in the file`);
    let vae: ModelComponent<VaeConfig> | null = null;
    if (inferred.vae) {
      const config = parseVaeConfig({ ...inferred.vae, ...opts.vae }, `${path} (inferred vae config)`);
      vae = new ModelComponent(
        "vae",
        config,
        store,
        vaeNameMap(config),
        `${path} [${VAE_ORIGINAL_PREFIX}*]`,
        notes.filter((n) => n.startsWith("vae")),
      );
    } else notes.push(`no VAE (${VAE_ORIGINAL_PREFIX}*) in the file`);
    let textEncoder: ModelComponent<ClipTextConfig> | null = null;
    if (inferred.textEncoder && inferred.clipLayout) {
      const config = parseClipTextConfig(
        { ...inferred.textEncoder, ...opts.textEncoder },
        `${path} (inferred text encoder config)`,
      );
      const map = clipNameMap(config, inferred.clipLayout, {
        withoutTextModelLevel: inferred.clipWithoutTextModelLevel,
      });
      textEncoder = new ModelComponent(
        "text_encoder",
        config,
        store,
        map,
        `${path} [${map.prefix}*]`,
        notes.filter((n) => n.startsWith("text encoder")),
      );
    } else notes.push("no text encoder (cond_stage_model.*) in the file");
    const prefixes = [UNET_ORIGINAL_PREFIX, VAE_ORIGINAL_PREFIX, "cond_stage_model."];
    const ignoredTensors = store.keys().filter((k) => !prefixes.some((p) => k.startsWith(p)));
    return {
      path,
      format: "single-file",
      version: inferred.version,
      unet,
      vae,
      textEncoder,
      scheduler,
      predictionType: pred.type,
      predictionTypeSource: pred.source,
      tokenizerDir: null,
      notes,
      ignoredTensors,
      close: () => store.close(),
    };
  } catch (e) {
    store.close();
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Summary

/** A human-readable description: format, SD version, prediction type, each component's state. */
export async function describeModel(path: string, opts: OpenModelOptions = {}): Promise<string> {
  const model = await openModel(path, opts);
  try {
    return describeOpenedModel(model);
  } finally {
    model.close();
  }
}

export function describeOpenedModel(model: OpenedModel): string {
  const lines: string[] = [];
  lines.push(
    `model: ${model.path} (${model.format === "diffusers" ? "diffusers folder" : "single-file checkpoint"})`,
  );
  const version = model.version === "sd1"
    ? "SD 1.x architecture (1×1 conv attention projections; CLIP ViT-L-style text encoder)"
    : model.version === "sd2"
    ? "SD 2.x architecture (Linear attention projections; OpenCLIP ViT-H-style text encoder)"
    : "unknown (no UNet or text encoder found)";
  lines.push(`version: ${version}`);
  lines.push(`prediction type: ${model.predictionType} (${model.predictionTypeSource})`);
  if (typeof model.scheduler._class_name === "string") {
    lines.push(`scheduler config: ${model.scheduler._class_name}`);
  }
  const components: [string, ModelComponent | null][] = [
    ["unet", model.unet],
    ["vae", model.vae],
    ["text_encoder", model.textEncoder],
  ];
  for (const [label, c] of components) {
    if (!c) {
      lines.push(`${label}: MISSING`);
      continue;
    }
    const report = validate(c);
    const names = c.names();
    const dtypes = [...new Set(names.map((n) => c.tensor(n).dtype))].join("/");
    const params = parameterCount(c.expectedTensors().values());
    lines.push(
      `${label}: ${names.length} tensors (${dtypes || "none"}), ${
        params.toLocaleString("en-US")
      } parameters expected — ` +
        (report.ok ? "OK" : `${report.issues.length} problem(s)`),
    );
    lines.push(`  ${describeConfig(c)}`);
    if (!report.ok) lines.push(...report.summary.split("\n").slice(1));
    for (const n of c.notes) lines.push(`  note: ${n}`);
  }
  lines.push(
    `tokenizer: ${
      model.tokenizerDir ??
        (model.format === "single-file" ? "not in single files (use the bundled CLIP tokenizer)" : "MISSING")
    }`,
  );
  for (const n of model.notes.filter((n) => !/^(unet|vae|text encoder):/.test(n))) lines.push(`note: ${n}`);
  if (model.ignoredTensors.length > 0) {
    const sample = model.ignoredTensors.slice(0, 4).join(", ");
    lines.push(
      `ignored: ${model.ignoredTensors.length} non-model tensors (${sample}${
        model.ignoredTensors.length > 4 ? ", ..." : ""
      })`,
    );
  }
  return lines.join("\n");
}

function describeConfig(c: ModelComponent): string {
  switch (c.kind) {
    case "unet": {
      const u = c.config as UNetConfig;
      return `widths [${u.block_out_channels}], ${JSON.stringify(u.layers_per_block)} layers/level, context ${
        JSON.stringify(u.cross_attention_dim)
      }, ` +
        `heads ${JSON.stringify(u.num_attention_heads ?? u.attention_head_dim)}, ${
          u.use_linear_projection ? "Linear" : "conv"
        } proj_in`;
    }
    case "vae": {
      const v = c.config as VaeConfig;
      return `widths [${v.block_out_channels}], ${v.latent_channels} latent channels, scaling_factor ${v.scaling_factor}`;
    }
    case "text_encoder": {
      const t = c.config as ClipTextConfig;
      return `width ${t.hidden_size}, ${t.num_hidden_layers} layers, ${t.num_attention_heads} heads, ${t.hidden_act}`;
    }
  }
}

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : path.slice(0, i);
}
