// Safetensors: validated header parsing, per-tensor reads through a file handle (the file is never read
// whole), uploads straight into GPU buffers (BF16 → F16 on the way), and a writer.
//
// Format: u64 LE header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {string: string}}, then the data; offsets are relative to the first byte after the header.

import { bf16ToF16Array, f16ToF32Array, f32ToF16Array, type Gpu } from "../gpu/device.ts";
import { emptyTensor, Tensor, writeBytes } from "../gpu/tensor.ts";

export type SafetensorsDType = "F16" | "BF16" | "F32" | "I32" | "I64";

const DTYPE_BYTES: Record<SafetensorsDType, number> = { F16: 2, BF16: 2, F32: 4, I32: 4, I64: 8 };

/** Headers beyond this are refused (the reference implementation's limit is 100 MB). */
export const MAX_HEADER_BYTES = 100_000_000;

export class SafetensorsError extends Error {
  constructor(readonly file: string, readonly tensor: string | null, message: string) {
    super(`${file}${tensor ? `: tensor "${tensor}"` : ""}: ${message}`);
    this.name = "SafetensorsError";
  }
}

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** Absolute byte offsets in the file. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
  /** Absolute offset of the data section. */
  dataStart: number;
}

/**
 * Validates and parses a header. `json` is the header text, `fileSize` the file's total size.
 * Checks: JSON object, known dtypes, integer shapes, shape × dtype = byte range, ranges inside the file,
 * no overlaps.
 */
export function parseHeader(
  json: string,
  headerLength: number,
  fileSize: number,
  file: string,
): SafetensorsHeader {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (e) {
    throw new SafetensorsError(file, null, `header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new SafetensorsError(file, null, "header is not a JSON object");
  }
  const dataStart = 8 + headerLength;
  const dataSize = fileSize - dataStart;
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        throw new SafetensorsError(file, null, "__metadata__ is not an object");
      }
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== "string") {
          throw new SafetensorsError(file, null, `__metadata__.${k} is not a string`);
        }
      }
      metadata = value as Record<string, string>;
      continue;
    }
    if (typeof value !== "object" || value === null) {
      throw new SafetensorsError(file, name, "entry is not an object");
    }
    const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
    if (typeof dtype !== "string" || !(dtype in DTYPE_BYTES)) {
      throw new SafetensorsError(
        file,
        name,
        `unsupported dtype ${JSON.stringify(dtype)} (F16, BF16, F32, I32, I64)`,
      );
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError(file, name, `invalid shape ${JSON.stringify(shape)}`);
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) || offsets[1] < offsets[0]
    ) {
      throw new SafetensorsError(file, name, `invalid data_offsets ${JSON.stringify(offsets)}`);
    }
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    const expected = count * DTYPE_BYTES[dtype as SafetensorsDType];
    const [b, e] = offsets as [number, number];
    if (e - b !== expected) {
      throw new SafetensorsError(
        file,
        name,
        `shape [${shape}] × ${dtype} needs ${expected} bytes but data_offsets span ${e - b}`,
      );
    }
    if (e > dataSize) {
      throw new SafetensorsError(
        file,
        name,
        `data_offsets [${b}, ${e}] run past the end of the data (${dataSize} bytes)`,
      );
    }
    tensors.set(name, {
      name,
      dtype: dtype as SafetensorsDType,
      shape: shape as number[],
      begin: dataStart + b,
      end: dataStart + e,
    });
  }
  const sorted = [...tensors.values()].filter((t) => t.end > t.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i].begin < sorted[i - 1].end) {
      throw new SafetensorsError(file, sorted[i].name, `data overlaps tensor "${sorted[i - 1].name}"`);
    }
  }
  return { tensors, metadata, dataStart };
}

/** Upload chunk: large tensors stream through a bounded host buffer into the GPU buffer. */
const CHUNK_BYTES = 16 << 20;

export class SafetensorsFile {
  private constructor(
    readonly path: string,
    private readonly file: Deno.FsFile,
    readonly header: SafetensorsHeader,
    readonly fileSize: number,
  ) {}

  static async open(path: string): Promise<SafetensorsFile> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (e) {
      throw new SafetensorsError(path, null, `cannot open (${(e as Error).message})`);
    }
    try {
      const size = (await file.stat()).size;
      if (size < 8) {
        throw new SafetensorsError(
          path,
          null,
          `file is ${size} bytes, shorter than the 8-byte header length`,
        );
      }
      const lenBytes = await readExact(file, 0, 8, path);
      const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
      if (n > BigInt(MAX_HEADER_BYTES)) {
        throw new SafetensorsError(
          path,
          null,
          `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`,
        );
      }
      const headerLength = Number(n);
      if (8 + headerLength > size) {
        throw new SafetensorsError(
          path,
          null,
          `header length ${headerLength} runs past the end of the file (${size} bytes)`,
        );
      }
      const headerBytes = await readExact(file, 8, headerLength, path);
      let json: string;
      try {
        json = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
      } catch {
        throw new SafetensorsError(path, null, "header is not valid UTF-8");
      }
      return new SafetensorsFile(path, file, parseHeader(json, headerLength, size, path), size);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  get metadata(): Record<string, string> {
    return this.header.metadata;
  }

  names(): string[] {
    return [...this.header.tensors.keys()];
  }

  has(name: string): boolean {
    return this.header.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.header.tensors.get(name);
    if (!t) throw new SafetensorsError(this.path, name, "no such tensor in this file");
    return t;
  }

  async readBytes(name: string): Promise<Uint8Array> {
    const t = this.info(name);
    return await readExact(this.file, t.begin, t.end - t.begin, this.path, name);
  }

  /** Any numeric dtype as f32 values (I64 through Number). */
  async readF32(name: string): Promise<Float32Array> {
    const t = this.info(name);
    const bytes = await this.readBytes(name);
    const buf = bytes.buffer as ArrayBuffer;
    switch (t.dtype) {
      case "F32":
        return new Float32Array(buf, bytes.byteOffset, bytes.byteLength / 4).slice();
      case "F16":
        return f16ToF32Array(new Uint16Array(buf, bytes.byteOffset, bytes.byteLength / 2));
      case "BF16": {
        const src = new Uint16Array(buf, bytes.byteOffset, bytes.byteLength / 2);
        const out = new Float32Array(src.length);
        const u = new Uint32Array(out.buffer);
        for (let i = 0; i < src.length; i++) u[i] = src[i] << 16;
        return out;
      }
      case "I32":
        return Float32Array.from(new Int32Array(buf, bytes.byteOffset, bytes.byteLength / 4));
      case "I64":
        return Float32Array.from(new BigInt64Array(buf, bytes.byteOffset, bytes.byteLength / 8), Number);
    }
  }

  /** Floating dtypes as f16 bits (F16 as stored, BF16 and F32 converted). */
  async readF16Bits(name: string): Promise<Uint16Array> {
    const t = this.info(name);
    const bytes = await this.readBytes(name);
    return toF16Bits(t, bytes, this.path);
  }

  async readI64(name: string): Promise<BigInt64Array> {
    const t = this.info(name);
    const bytes = await this.readBytes(name);
    if (t.dtype === "I64") {
      return new BigInt64Array(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength / 8);
    }
    if (t.dtype === "I32") {
      return BigInt64Array.from(
        new Int32Array(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength / 4),
        BigInt,
      );
    }
    throw new SafetensorsError(this.path, name, `is ${t.dtype}, expected an integer dtype`);
  }

  /**
   * Streams a floating tensor into a new f16 GPU tensor in bounded chunks: host memory stays at one chunk
   * however large the tensor.
   */
  async uploadF16(gpu: Gpu, name: string, label = name): Promise<Tensor> {
    const t = this.info(name);
    if (t.dtype === "I32" || t.dtype === "I64") {
      throw new SafetensorsError(
        this.path,
        name,
        `is ${t.dtype}; only floating tensors can be uploaded as f16`,
      );
    }
    const out = emptyTensor(gpu, t.shape, "f16", label);
    const srcElem = DTYPE_BYTES[t.dtype];
    const count = (t.end - t.begin) / srcElem;
    const chunkElems = Math.floor(CHUNK_BYTES / 8) * 2; // even, so f16 chunks stay 4-byte aligned
    for (let first = 0; first < count; first += chunkElems) {
      const n = Math.min(chunkElems, count - first);
      const bytes = await readExact(this.file, t.begin + first * srcElem, n * srcElem, this.path, name);
      const bits = toF16Bits({ ...t, dtype: t.dtype }, bytes, this.path);
      writeBytes(gpu, out.buffer, new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength), first * 2);
    }
    return out;
  }

  close(): void {
    try {
      this.file.close();
    } catch {
      // already closed
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function toF16Bits(t: TensorInfo, bytes: Uint8Array, path: string): Uint16Array {
  const buf = bytes.buffer as ArrayBuffer;
  switch (t.dtype) {
    case "F16":
      return bytes.byteOffset % 2 === 0
        ? new Uint16Array(buf, bytes.byteOffset, bytes.byteLength / 2)
        : new Uint16Array(bytes.slice().buffer);
    case "BF16":
      return bf16ToF16Array(new Uint16Array(bytes.slice().buffer));
    case "F32":
      return f32ToF16Array(new Float32Array(bytes.slice().buffer));
    default:
      throw new SafetensorsError(path, t.name, `is ${t.dtype}, expected a floating dtype`);
  }
}

async function readExact(file: Deno.FsFile, offset: number, length: number, path: string, tensor?: string) {
  const out = new Uint8Array(length);
  await file.seek(offset, Deno.SeekMode.Start);
  let got = 0;
  while (got < length) {
    const n = await file.read(out.subarray(got));
    if (n === null) {
      throw new SafetensorsError(path, tensor ?? null, `unexpected end of file at byte ${offset + got}`);
    }
    got += n;
  }
  return out;
}

// ---- writer ----

export type TensorData = Float32Array | Uint16Array | Int32Array | BigInt64Array;

export interface TensorToWrite {
  dtype: SafetensorsDType;
  shape: readonly number[];
  /** F32: Float32Array; F16/BF16: raw bits as Uint16Array; I32: Int32Array; I64: BigInt64Array. */
  data: TensorData;
}

/** Serializes tensors (sorted by name, as the reference writer does) into one buffer. */
export function serializeSafetensors(
  tensors: Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Uint8Array {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const name of names) {
    const t = tensors[name];
    const count = t.shape.reduce((a, b) => a * b, 1);
    const bytes = count * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== bytes) {
      throw new Error(`tensor "${name}": ${t.data.byteLength} bytes of data for ${t.dtype} [${t.shape}]`);
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((json.length + 8) % 8)) % 8);
  const jsonBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + jsonBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(jsonBytes.length), true);
  out.set(jsonBytes, 8);
  let pos = 8 + jsonBytes.length;
  for (const name of names) {
    const d = tensors[name].data;
    out.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), pos);
    pos += d.byteLength;
  }
  return out;
}

export async function writeSafetensors(
  path: string,
  tensors: Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Promise<void> {
  await Deno.writeFile(path, serializeSafetensors(tensors, metadata));
}

/**
 * Streaming writer for files too large to hold in memory (synthetic full-size weights): the header is
 * written first from the declared shapes, then each tensor's bytes in sorted name order.
 */
export async function writeSafetensorsStreaming(
  path: string,
  entries: { name: string; dtype: SafetensorsDType; shape: readonly number[] }[],
  produce: (name: string) => TensorData | Promise<TensorData>,
  metadata?: Record<string, string>,
): Promise<void> {
  const sorted = [...entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const e of sorted) {
    const bytes = e.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[e.dtype];
    header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((json.length + 8) % 8)) % 8);
  const jsonBytes = new TextEncoder().encode(json);
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    const len = new Uint8Array(8);
    new DataView(len.buffer).setBigUint64(0, BigInt(jsonBytes.length), true);
    await writeAll(file, len);
    await writeAll(file, jsonBytes);
    for (const e of sorted) {
      const d = await produce(e.name);
      const want = e.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[e.dtype];
      if (d.byteLength !== want) {
        throw new Error(`tensor "${e.name}": produced ${d.byteLength} bytes, expected ${want}`);
      }
      await writeAll(file, new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    }
  } finally {
    file.close();
  }
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await file.write(bytes.subarray(done));
}
