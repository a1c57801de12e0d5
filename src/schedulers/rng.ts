// torch's CPU random generator (torch.Generator() on "cpu"), reproduced for `torch.randn`, which diffusers'
// `randn_tensor` calls for CPU generators: initial latents and the noise schedulers draw inside `step()`.
//
// Engine: MT19937 seeded with init_genrand(low 32 bits of the seed).
// randn(n), n ≥ 16 (float32): n uniforms u = (word & 0xFFFFFF)·2⁻²⁴, one word each; then Box–Muller over
//   each full block of 16 (element i pairs with i+8; torch's AVX2 kernel, bit-exact); if n % 16 ≠ 0 the
//   LAST 16 elements are refilled with 16 fresh uniforms and transformed as one block (overlapping the
//   previous block). Consumes n (+16) words.
// randn(n), n < 16 (double): per value, one cached sin-half from the previous draw if present, else two
//   53-bit uniforms u1, u2 from two 64-bit draws (hi << 32 | lo), r = √(−2·log1p(−u2)), θ = 2π·u1,
//   return r·cos θ and cache r·sin θ (the cache survives across randn calls on the same generator).

const N = 624;
const M = 397;
const MATRIX_A = 0x9908b0df;
const UPPER_MASK = 0x80000000;
const LOWER_MASK = 0x7fffffff;

/** Seeds torch accepts: integers in [-2⁶³, 2⁶⁴ − 1]; negatives are taken as two's complement 64-bit. */
export type Seed = number | bigint;

/** Low 32 bits of a 64-bit seed (what torch's mt19937 is seeded with). */
export function seedLow32(seed: Seed): number {
  const big = typeof seed === "bigint" ? seed : numberSeedToBigInt(seed);
  if (big < -(1n << 63n) || big >= 1n << 64n) throw new RangeError(`seed ${seed} outside [-2^63, 2^64 - 1]`);
  return Number(BigInt.asUintN(32, big));
}

function numberSeedToBigInt(seed: number): bigint {
  if (!Number.isInteger(seed)) throw new RangeError(`seed must be an integer, got ${seed}`);
  return BigInt(seed); // exact for every integral double, including those above 2^53
}

/** Plain MT19937 (32-bit words), seeded the standard way. */
export class Mt19937 {
  private readonly state = new Uint32Array(N);
  private index = N;

  constructor(seed32: number) {
    const s = this.state;
    s[0] = seed32 >>> 0;
    for (let i = 1; i < N; i++) {
      const prev = s[i - 1] ^ (s[i - 1] >>> 30);
      // 1812433253 * prev + i (mod 2^32)
      s[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
  }

  private twist(): void {
    const s = this.state;
    for (let i = 0; i < N; i++) {
      const y = (s[i] & UPPER_MASK) | (s[(i + 1) % N] & LOWER_MASK);
      s[i] = s[(i + M) % N] ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
    }
    this.index = 0;
  }

  /** Next 32-bit output as an unsigned number. */
  nextU32(): number {
    if (this.index >= N) this.twist();
    let y = this.state[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }
}

const TWO_PI_F32 = Math.fround(2 * Math.PI);
const TWO_POW_M24 = 2 ** -24;
const TWO_POW_M53 = 2 ** -53;
const f = Math.fround;

/** torch.Generator() (CPU) with `manual_seed(seed)`: `randn`, raw words, and the small-path normal cache. */
export class TorchGenerator {
  private engine: Mt19937;
  private cachedNormal: number | null = null;

  constructor(seed: Seed = 67280421310721n) {
    this.engine = new Mt19937(seedLow32(seed));
  }

  /** Re-seeds in place (also clears the cached normal, as torch's set_current_seed does). */
  manualSeed(seed: Seed): this {
    this.engine = new Mt19937(seedLow32(seed));
    this.cachedNormal = null;
    return this;
  }

  /** One raw 32-bit mt19937 output. */
  randomU32(): number {
    return this.engine.nextU32();
  }

  /** A 53-bit uniform in [0, 1) from one 64-bit draw (two words, first = high half). */
  private uniformDouble(): number {
    const hi = this.engine.nextU32();
    const lo = this.engine.nextU32();
    // ((hi << 32) | lo) & (2^53 − 1), exact in a double
    return ((hi & 0x1fffff) * 4294967296 + lo) * TWO_POW_M53;
  }

  /** at::normal_distribution<double>: one value, using/refilling the cached sin-half. */
  private normalDouble(): number {
    if (this.cachedNormal !== null) {
      const v = this.cachedNormal;
      this.cachedNormal = null;
      return v;
    }
    const u1 = this.uniformDouble();
    const u2 = this.uniformDouble();
    const r = Math.sqrt(-2 * Math.log1p(-u2));
    const theta = 2 * Math.PI * u1;
    this.cachedNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** `torch.randn(shape, generator=this)` as float32, row-major. `shape` may also be an element count. */
  randn(shape: number | readonly number[]): Float32Array {
    const n = typeof shape === "number" ? shape : shape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(n);
    if (n < 16) {
      for (let i = 0; i < n; i++) out[i] = this.normalDouble();
      return out;
    }
    for (let i = 0; i < n; i++) out[i] = (this.engine.nextU32() & 0xffffff) * TWO_POW_M24;
    for (let i = 0; i + 16 <= n; i += 16) boxMuller16(out, i);
    if (n % 16 !== 0) {
      const start = n - 16;
      for (let i = 0; i < 16; i++) out[start + i] = (this.engine.nextU32() & 0xffffff) * TWO_POW_M24;
      boxMuller16(out, start);
    }
    return out;
  }
}

/**
 * torch's normal_fill_16_AVX2 (x86 CPUs with AVX2, where diffusers runs on CPU): pairs element j with j+8 of
 * the block at `at`, all float32, with avx_mathfun's log256_ps / sincos256_ps as compiled with FMA. Reproduces
 * torch bit for bit on the fixtures (370,036 values); torch's scalar fallback (non-AVX2 CPUs) uses libm
 * log/sin/cos and differs by ≤ 1 ulp.
 */
function boxMuller16(data: Float32Array, at: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f(1 - data[at + j]);
    const u2 = data[at + j + 8];
    const radius = f(Math.sqrt(f(-2 * logF32(u1))));
    const theta = f(TWO_PI_F32 * u2);
    sinCosF32(theta);
    data[at + j] = f(radius * sinCosOut[1]);
    data[at + j + 8] = f(radius * sinCosOut[0]);
  }
}

/** Correctly rounded float32 fused multiply-add of float32 inputs. */
function fmaF32(a: number, b: number, c: number): number {
  const p = a * b; // exact: a 48-bit product fits a double
  const s = p + c;
  const r = f(s);
  if (r === s) return r;
  // Only when s fell exactly on a float32 tie can the double rounding of s matter: decide by the lost error.
  const other = 2 * s - r;
  if (f(other) !== other) return r;
  const bb = s - p;
  const err = (p - (s - bb)) + (c - bb);
  if (err === 0) return r;
  return err > 0 ? Math.max(r, other) : Math.min(r, other);
}

const bitsView = new DataView(new ArrayBuffer(4));
const LOG_P = [
  7.0376836292e-2,
  -1.1514610310e-1,
  1.1676998740e-1,
  -1.2420140846e-1,
  1.4249322787e-1,
  -1.6668057665e-1,
  2.0000714765e-1,
  -2.4999993993e-1,
  3.3333331174e-1,
].map(f);
const LOG_Q1 = f(-2.12194440e-4);
const LOG_Q2 = f(0.693359375);
const SQRT_HALF = f(0.707106781186547524);

/** avx_mathfun log256_ps (cephes logf) for one positive float32. */
function logF32(value: number): number {
  bitsView.setFloat32(0, value);
  const bits = bitsView.getUint32(0);
  let e = f(((bits >>> 23) & 0xff) - 0x7f + 1);
  bitsView.setUint32(0, ((bits & 0x807fffff) | 0x3f000000) >>> 0); // mantissa in [0.5, 1)
  let x = bitsView.getFloat32(0);
  const small = x < SQRT_HALF;
  const tmp = small ? x : 0;
  x = f(x - 1);
  if (small) e = f(e - 1);
  x = f(x + tmp);
  const z = f(x * x);
  let y = LOG_P[0];
  for (let i = 1; i < LOG_P.length; i++) y = fmaF32(y, x, LOG_P[i]);
  y = f(y * x);
  y = fmaF32(y, z, f(e * LOG_Q1));
  y = fmaF32(-z, 0.5, y);
  x = f(x + y);
  return fmaF32(e, LOG_Q2, x);
}

const FOUR_OVER_PI = f(1.27323954473516);
const DP = [-0.78515625, -2.4187564849853515625e-4, -3.77489497744594108e-8].map(f);
const COS_P = [2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2].map(f);
const SIN_P = [-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1].map(f);
/** [sin, cos] of the last sinCosF32 call (avoids an allocation per pair). */
const sinCosOut = [0, 0];

/** avx_mathfun sincos256_ps (cephes sinf/cosf) for one float32. */
function sinCosF32(value: number): void {
  let sinNegative = value < 0;
  let x = Math.abs(value);
  let j = Math.trunc(f(x * FOUR_OVER_PI));
  j = (j + 1) & ~1;
  const y = f(j);
  const swapSin = (j & 4) !== 0;
  const cosPoly = (j & 2) === 0; // polynomial choice: sin gets the sine polynomial
  for (const dp of DP) x = fmaF32(y, dp, x);
  const cosNegative = (~(j - 2) & 4) !== 0;
  sinNegative = sinNegative !== swapSin;
  const z = f(x * x);
  let yc = COS_P[0];
  yc = fmaF32(yc, z, COS_P[1]);
  yc = fmaF32(yc, z, COS_P[2]);
  yc = f(yc * z);
  yc = fmaF32(yc, z, -f(z * 0.5));
  yc = f(yc + 1);
  let ys = SIN_P[0];
  ys = fmaF32(ys, z, SIN_P[1]);
  ys = fmaF32(ys, z, SIN_P[2]);
  ys = f(ys * z);
  ys = fmaF32(ys, x, x);
  const sin = cosPoly ? ys : yc;
  const cos = cosPoly ? yc : ys;
  sinCosOut[0] = sinNegative ? -sin : sin;
  sinCosOut[1] = cosNegative ? -cos : cos;
}
