// CPU references (float64 arithmetic) for the GEMM family: linear with epilogues, GEGLU, conv2d (NHWC,
// checkpoint weight layout) and batched matmul. Written for clarity; the tests keep shapes small.

/** erf to ~1e-15: Maclaurin series for |x| < 3, continued fraction of erfc beyond. */
export function erf64(x: number): number {
  const z = Math.abs(x);
  let r: number;
  if (z < 3) {
    let term = z;
    let sum = z;
    for (let n = 1; n < 100; n++) {
      term *= (-z * z) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    r = (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    // erfc(z) = exp(-z²)/√π · 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + 2/(z + ...)))))
    let f = z;
    for (let n = 60; n >= 1; n--) f = z + n / 2 / f;
    r = 1 - Math.exp(-z * z) / Math.sqrt(Math.PI) / f;
  }
  return x < 0 ? -r : r;
}

export type ActivationName = "none" | "gelu" | "gelu_tanh" | "quick_gelu" | "silu";

export function activationRef(v: number, a: ActivationName): number {
  switch (a) {
    case "none":
      return v;
    case "gelu":
      return 0.5 * v * (1 + erf64(v / Math.SQRT2));
    case "gelu_tanh":
      return 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
    case "quick_gelu":
      return v / (1 + Math.exp(-1.702 * v));
    case "silu":
      return v / (1 + Math.exp(-v));
  }
}

/** y[M, N] = act(x[M, K] · w[N, K]ᵀ + bias) + residual. */
export function linearRef(
  x: Float32Array,
  w: Float32Array,
  m: number,
  k: number,
  n: number,
  opts: { bias?: Float32Array; residual?: Float32Array; activation?: ActivationName } = {},
): Float32Array {
  const out = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = opts.bias ? opts.bias[j] : 0;
      for (let q = 0; q < k; q++) s += x[i * k + q] * w[j * k + q];
      let v = activationRef(s, opts.activation ?? "none");
      if (opts.residual) v += opts.residual[i * n + j];
      out[i * n + j] = v;
    }
  }
  return out;
}

/** GEGLU: w [2D, K], bias [2D] → out[M, D] = (x·w_aᵀ + b_a) · gelu(x·w_gᵀ + b_g). */
export function gegluRef(
  x: Float32Array,
  w: Float32Array,
  bias: Float32Array | undefined,
  m: number,
  k: number,
  d: number,
) {
  const out = new Float32Array(m * d);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < d; j++) {
      let a = bias ? bias[j] : 0;
      let g = bias ? bias[d + j] : 0;
      for (let q = 0; q < k; q++) {
        a += x[i * k + q] * w[j * k + q];
        g += x[i * k + q] * w[(d + j) * k + q];
      }
      out[i * d + j] = a * activationRef(g, "gelu");
    }
  }
  return out;
}

export interface Conv2dRefParams {
  /** NHWC [B, H, W, Cin] */
  x: Float32Array;
  b: number;
  h: number;
  w: number;
  cin: number;
  /** checkpoint layout [Cout, Cin, kh, kw] */
  weight: Float32Array;
  cout: number;
  kh: number;
  kw: number;
  stride: number;
  padTop: number;
  padLeft: number;
  ho: number;
  wo: number;
  bias?: Float32Array;
  /** [B, Cout] */
  timeBias?: Float32Array;
  /** NHWC [B, Ho, Wo, Cout] */
  residual?: Float32Array;
  outputScaleFactor?: number;
  outputShift?: number;
  relu?: boolean;
}

/** NHWC conv2d with zero padding; out = relu?((conv + bias + timeBias + residual) / outputScaleFactor +
 * outputShift). */
export function conv2dRef(p: Conv2dRefParams): Float32Array {
  const out = new Float32Array(p.b * p.ho * p.wo * p.cout);
  for (let b = 0; b < p.b; b++) {
    for (let oy = 0; oy < p.ho; oy++) {
      for (let ox = 0; ox < p.wo; ox++) {
        const o = ((b * p.ho + oy) * p.wo + ox) * p.cout;
        for (let co = 0; co < p.cout; co++) {
          let s = p.bias ? p.bias[co] : 0;
          for (let ky = 0; ky < p.kh; ky++) {
            const iy = oy * p.stride + ky - p.padTop;
            if (iy < 0 || iy >= p.h) continue;
            for (let kx = 0; kx < p.kw; kx++) {
              const ix = ox * p.stride + kx - p.padLeft;
              if (ix < 0 || ix >= p.w) continue;
              const xi = ((b * p.h + iy) * p.w + ix) * p.cin;
              for (let ci = 0; ci < p.cin; ci++) {
                s += p.x[xi + ci] * p.weight[((co * p.cin + ci) * p.kh + ky) * p.kw + kx];
              }
            }
          }
          if (p.timeBias) s += p.timeBias[b * p.cout + co];
          if (p.residual) s += p.residual[o + co];
          const v = s / (p.outputScaleFactor ?? 1) + (p.outputShift ?? 0);
          out[o + co] = p.relu ? Math.max(v, 0) : v;
        }
      }
    }
  }
  return out;
}

/** out[b] = alpha · A[b] · B[b], A [B, M, K] (or [B, K, M] with transA), B [B, K, N] (or [B, N, K]). */
export function bmmRef(
  a: Float32Array,
  b: Float32Array,
  batch: number,
  m: number,
  k: number,
  n: number,
  opts: { transA?: boolean; transB?: boolean; alpha?: number } = {},
): Float32Array {
  const out = new Float32Array(batch * m * n);
  for (let t = 0; t < batch; t++) {
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let q = 0; q < k; q++) {
          const av = opts.transA ? a[t * m * k + q * m + i] : a[t * m * k + i * k + q];
          const bv = opts.transB ? b[t * k * n + j * k + q] : b[t * k * n + q * n + j];
          s += av * bv;
        }
        out[(t * m + i) * n + j] = s * (opts.alpha ?? 1);
      }
    }
  }
  return out;
}
