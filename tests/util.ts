// Shared test helpers: one GPU per precision mode per test process, comparisons with stated tolerances.

import { Gpu } from "../src/gpu/device.ts";
import type { GenerateRequest, SamplerName } from "../src/pipeline/types.ts";
import type { HostTensor } from "../src/util/host_tensor.ts";
import { SafetensorsFile } from "../src/weights/safetensors.ts";
import { relError as sharedRelError } from "../src/util/rel_error.ts";

const gpus = new Map<string, Promise<Gpu>>();

/** The shared GPU. `f16: false` forces the f32 + unpack2x16float path even where shader-f16 exists. */
export function testGpu(opts: { f16?: boolean } = {}): Promise<Gpu> {
  const key = opts.f16 === false ? "nof16" : "f16";
  let g = gpus.get(key);
  if (!g) {
    g = Gpu.create({ disableF16: opts.f16 === false });
    gpus.set(key, g);
  }
  return g;
}

/** Deterministic pseudo-random floats in [-scale, scale) (mulberry32). */
export function randomArray(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const u = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    out[i] = (u * 2 - 1) * scale;
  }
  return out;
}

/** max|a − b| / max|b|: the golden fixtures' error measure (src/util/rel_error.ts); throws on a length
 * mismatch. */
export function relError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  return sharedRelError(actual, expected);
}

/** Throws with a useful message when relError exceeds `tol`. */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
  what = "",
): number {
  const err = relError(actual, expected);
  if (!(err <= tol)) {
    let worst = 0;
    let worstD = -1;
    for (let i = 0; i < expected.length; i++) {
      const d = Math.abs(actual[i] - expected[i]);
      if (!(d <= worstD)) {
        worstD = Number.isNaN(d) ? Infinity : d;
        worst = i;
      }
    }
    throw new Error(
      `${what}: relative error ${err.toExponential(3)} > ${tol} (worst at ${worst}: got ${actual[worst]}, ` +
        `want ${expected[worst]})`,
    );
  }
  return err;
}

/** f32 values rounded through f16, as an f16 weight holds them. */
export function roundF16(a: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  const f = new Float16Array(1);
  for (let i = 0; i < a.length; i++) {
    f[0] = a[i];
    out[i] = f[0];
  }
  return out;
}

/** Runs `fn` and requires it to throw an error whose text matches `pattern` (a RegExp, or a substring). */
export function expectThrow(fn: () => unknown, pattern: RegExp | string, what: string): void {
  try {
    fn();
  } catch (e) {
    const text = String(e);
    const ok = typeof pattern === "string" ? text.includes(pattern) : pattern.test(text);
    if (!ok) throw new Error(`${what}: error "${text}" does not match ${pattern}`);
    return;
  }
  throw new Error(`${what}: expected an error`);
}

/** Peak signal-to-noise ratio of two 8-bit images in dB (Infinity when equal). */
export function psnr(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) throw new Error(`psnr: ${a.length} vs ${b.length} bytes`);
  let se = 0;
  for (let i = 0; i < a.length; i++) se += (a[i] - b[i]) ** 2;
  const mse = se / a.length;
  return mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse);
}

/** A plain assertion with a message (no std library here). */
export function assert(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

/** Equality by JSON, with the values in the message. */
export function assertEquals<T>(actual: T, expected: T, what: string): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: got ${a}, want ${e}`);
}

/** What every diffusers fixture case (e2e, batch, inpaint manifests) names the same way. */
export interface FixtureCase {
  prompt: string;
  negative_prompt: string;
  width: number;
  height: number;
  guidance_scale: number;
  seed: number;
}

/** A case's request as diffusers ran it (long prompts truncated), with the case-specific fields on top. */
export function fixtureRequest(
  c: FixtureCase,
  rest: { steps: number; sampler: SamplerName } & Partial<GenerateRequest>,
): GenerateRequest {
  return {
    prompt: c.prompt,
    negativePrompt: c.negative_prompt,
    width: c.width,
    height: c.height,
    guidanceScale: c.guidance_scale,
    seed: c.seed,
    longPrompt: "truncate",
    ...rest,
  };
}

/** Every tensor of a safetensors file as f32 with its shape (fixtures, written outputs). */
export async function readHostTensors(path: string): Promise<Map<string, HostTensor>> {
  using f = await SafetensorsFile.open(path);
  const out = new Map<string, HostTensor>();
  for (const name of f.names()) out.set(name, { shape: f.info(name).shape, data: await f.readF32(name) });
  return out;
}

/** Every tensor of a safetensors file as f32 values. */
export async function readF32Tensors(path: string): Promise<Map<string, Float32Array>> {
  const all = await readHostTensors(path);
  return new Map([...all].map(([name, t]) => [name, t.data]));
}
