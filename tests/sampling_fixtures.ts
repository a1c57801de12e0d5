// Small self-contained helpers for the CPU sampling tests (rng, schedulers): a whole-file safetensors
// reader for the little F32/I64 fixtures and the golden error measure.

export interface FixtureTensor {
  dtype: string;
  shape: number[];
  /** F32 as Float32Array; I64 as plain numbers (all fixture integers are far below 2^53). */
  data: Float32Array | number[];
}

export function readSafetensors(path: string): Map<string, FixtureTensor> {
  const bytes = Deno.readFileSync(path);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  const dataStart = 8 + headerLength;
  const out = new Map<string, FixtureTensor>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const { dtype, shape, data_offsets: [begin, end] } = entry as {
      dtype: string;
      shape: number[];
      data_offsets: [number, number];
    };
    const raw = bytes.slice(dataStart + begin, dataStart + end);
    let data: Float32Array | number[];
    if (dtype === "F32") data = new Float32Array(raw.buffer);
    else if (dtype === "I64") data = Array.from(new BigInt64Array(raw.buffer), Number);
    else throw new Error(`${path}: ${name}: unsupported dtype ${dtype}`);
    out.set(name, { dtype, shape, data });
  }
  return out;
}

export function f32(t: FixtureTensor | undefined, what: string): Float32Array {
  if (!t || !(t.data instanceof Float32Array)) throw new Error(`${what}: missing or not F32`);
  return t.data;
}

export function maxAbsDiff(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  let maxDiff = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= maxDiff)) maxDiff = Number.isNaN(d) ? Infinity : d;
  }
  return maxDiff;
}
