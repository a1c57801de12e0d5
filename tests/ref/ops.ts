// CPU references (float64 arithmetic) for the norm, attention and elementwise ops. Written for clarity, not
// speed; the tests keep shapes small or compare sampled rows.

/** GroupNorm over [B, HW, C] (NHWC flattened), biased variance, optional affine and SiLU. */
export function groupNormRef(
  x: Float32Array,
  batch: number,
  hw: number,
  c: number,
  groups: number,
  eps: number,
  gamma: Float32Array | null,
  beta: Float32Array | null,
  silu = false,
): Float32Array {
  const out = new Float32Array(x.length);
  const cpg = c / groups;
  for (let b = 0; b < batch; b++) {
    for (let g = 0; g < groups; g++) {
      let sum = 0;
      for (let p = 0; p < hw; p++) {
        for (let k = 0; k < cpg; k++) sum += x[(b * hw + p) * c + g * cpg + k];
      }
      const n = hw * cpg;
      const mean = sum / n;
      let m2 = 0;
      for (let p = 0; p < hw; p++) {
        for (let k = 0; k < cpg; k++) m2 += (x[(b * hw + p) * c + g * cpg + k] - mean) ** 2;
      }
      const rstd = 1 / Math.sqrt(m2 / n + eps);
      for (let p = 0; p < hw; p++) {
        for (let k = 0; k < cpg; k++) {
          const ch = g * cpg + k;
          const i = (b * hw + p) * c + ch;
          let y = (x[i] - mean) * rstd;
          if (gamma && beta) y = y * gamma[ch] + beta[ch];
          out[i] = silu ? siluRef(y) : y;
        }
      }
    }
  }
  return out;
}

/** LayerNorm over the last dim of [rows, C]. */
export function layerNormRef(
  x: Float32Array,
  c: number,
  eps: number,
  gamma: Float32Array | null,
  beta: Float32Array | null,
): Float32Array {
  const rows = x.length / c;
  const out = new Float32Array(x.length);
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    for (let k = 0; k < c; k++) sum += x[r * c + k];
    const mean = sum / c;
    let m2 = 0;
    for (let k = 0; k < c; k++) m2 += (x[r * c + k] - mean) ** 2;
    const rstd = 1 / Math.sqrt(m2 / c + eps);
    for (let k = 0; k < c; k++) {
      const y = (x[r * c + k] - mean) * rstd;
      out[r * c + k] = gamma && beta ? y * gamma[k] + beta[k] : y;
    }
  }
  return out;
}

/** Where element (b, token, h, d) of a token tensor (or a slice of one) lives. */
export interface TokenLayout {
  offset: number;
  rowStride: number;
  batchStride: number;
}

export interface AttentionRefParams {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  qLayout: TokenLayout;
  kLayout: TokenLayout;
  vLayout: TokenLayout;
  nk: number;
  heads: number;
  headDim: number;
  scale?: number;
  causal?: boolean;
}

/**
 * softmax(scale · q·kᵀ)·v for one (batch, query row) across all heads: returns [heads · D] in the
 * [B, N, H·D] channel order. Explicit softmax as diffusers' AttnProcessor (max-subtracted, float64).
 */
export function attentionRowRef(p: AttentionRefParams, b: number, i: number): Float64Array {
  const { heads, headDim: d, nk } = p;
  const scale = p.scale ?? 1 / Math.sqrt(d);
  const out = new Float64Array(heads * d);
  const scores = new Float64Array(nk);
  const at = (l: TokenLayout, t: number, h: number, e: number) =>
    l.offset + b * l.batchStride + t * l.rowStride + h * d + e;
  for (let h = 0; h < heads; h++) {
    let max = -Infinity;
    const keys = p.causal ? Math.min(nk, i + 1) : nk;
    for (let j = 0; j < keys; j++) {
      let s = 0;
      for (let e = 0; e < d; e++) s += p.q[at(p.qLayout, i, h, e)] * p.k[at(p.kLayout, j, h, e)];
      scores[j] = s * scale;
      max = Math.max(max, scores[j]);
    }
    let sum = 0;
    for (let j = 0; j < keys; j++) {
      scores[j] = Math.exp(scores[j] - max);
      sum += scores[j];
    }
    for (let e = 0; e < d; e++) {
      let acc = 0;
      for (let j = 0; j < keys; j++) acc += scores[j] * p.v[at(p.vLayout, j, h, e)];
      out[h * d + e] = acc / sum;
    }
  }
  return out;
}

export function siluRef(x: number): number {
  return x / (1 + Math.exp(-x));
}

/** Exact GELU with a float64 erf. */
export function geluRef(x: number): number {
  return 0.5 * x * (1 + erf(x / Math.SQRT2));
}

export function geluTanhRef(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
}

export function quickGeluRef(x: number): number {
  return x / (1 + Math.exp(-1.702 * x));
}

/** erf to ~1e-15: Taylor series for |x| < 3, asymptotic complement beyond (where erf = ±1 in f32 anyway). */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax >= 6) return Math.sign(x);
  if (ax < 3) {
    // erf(x) = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 200; n++) {
      term *= (-ax * ax) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(x) = exp(−x²) / (√π · (x + (1/2)/(x + 1/(x + (3/2)/(x + …))))), evaluated from the tail.
  let t = ax;
  for (let n = 80; n >= 1; n--) t = ax + n / 2 / t;
  return Math.sign(x) * (1 - Math.exp(-ax * ax) / (Math.sqrt(Math.PI) * t));
}

/**
 * diffusers get_timestep_embedding with torch's f32 argument rounding (frequency table and t·f rounded to
 * f32 as torch computes them) and float64 sin/cos.
 */
export function timestepEmbeddingRef(
  timesteps: Float32Array,
  dim: number,
  flipSinToCos: boolean,
  freqShift: number,
  scale = 1,
  maxPeriod = 10000,
): Float32Array {
  const half = Math.floor(dim / 2);
  const out = new Float32Array(timesteps.length * dim);
  const logPeriod = Math.fround(-Math.log(maxPeriod));
  const divisor = Math.fround(half - freqShift);
  for (let b = 0; b < timesteps.length; b++) {
    for (let i = 0; i < half; i++) {
      const freq = Math.fround(Math.exp(Math.fround(Math.fround(i * logPeriod) / divisor)));
      const arg = Math.fround(Math.fround(timesteps[b] * freq) * scale);
      const [first, second] = flipSinToCos ? [Math.cos(arg), Math.sin(arg)] : [Math.sin(arg), Math.cos(arg)];
      out[b * dim + i] = first;
      out[b * dim + half + i] = second;
    }
  }
  return out;
}

/** NCHW [B, C, H, W] → NHWC [B, H, W, C]. */
export function nchwToNhwcRef(x: Float32Array, b: number, c: number, h: number, w: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let n = 0; n < b; n++) {
    for (let ch = 0; ch < c; ch++) {
      for (let p = 0; p < h * w; p++) out[(n * h * w + p) * c + ch] = x[(n * c + ch) * h * w + p];
    }
  }
  return out;
}

/** NHWC [B, H, W, C] → NCHW [B, C, H, W]. */
export function nhwcToNchwRef(x: Float32Array, b: number, h: number, w: number, c: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let n = 0; n < b; n++) {
    for (let ch = 0; ch < c; ch++) {
      for (let p = 0; p < h * w; p++) out[(n * c + ch) * h * w + p] = x[(n * h * w + p) * c + ch];
    }
  }
  return out;
}

/** Nearest ×2 upsampling of NHWC [B, H, W, C]. */
export function upsample2xRef(x: Float32Array, b: number, h: number, w: number, c: number): Float32Array {
  const out = new Float32Array(x.length * 4);
  for (let n = 0; n < b; n++) {
    for (let y = 0; y < 2 * h; y++) {
      for (let xx = 0; xx < 2 * w; xx++) {
        for (let ch = 0; ch < c; ch++) {
          out[((n * 2 * h + y) * 2 * w + xx) * c + ch] = x[((n * h + (y >> 1)) * w + (xx >> 1)) * c + ch];
        }
      }
    }
  }
  return out;
}

/** Concatenation along the last dim of [rows, C1] and [rows, C2]. */
export function concatLastRef(a: Float32Array, b: Float32Array, c1: number, c2: number): Float32Array {
  const rows = a.length / c1;
  const out = new Float32Array(rows * (c1 + c2));
  for (let r = 0; r < rows; r++) {
    out.set(a.subarray(r * c1, (r + 1) * c1), r * (c1 + c2));
    out.set(b.subarray(r * c2, (r + 1) * c2), r * (c1 + c2) + c1);
  }
  return out;
}

export function mapRef(x: Float32Array, fn: (v: number) => number): Float32Array {
  return Float32Array.from(x, fn);
}
