// Pillow's `Image.resize(size, Image.LANCZOS)` for 8-bit images, to the bit: diffusers' VaeImageProcessor
// resizes img2img / inpainting images and masks with it, so a mask or image that is not already at the
// requested size reaches the VAE with the values diffusers would give it.
//
// Pillow (src/libImaging/Resample.c): a separable two-pass resample, horizontal first, each pass with
// per-output-pixel coefficients of a 3-lobe Lanczos window stretched by the downscale factor, normalised in
// double precision, then turned into 22-bit fixed point; sums start at ½ and are clipped to 0..255.

const PRECISION_BITS = 32 - 8 - 2;
const SUPPORT = 3; // Lanczos-3

function sinc(x: number): number {
  if (x === 0) return 1;
  const px = x * Math.PI;
  return Math.sin(px) / px;
}

function lanczos(x: number): number {
  return -3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0;
}

/** One pass's coefficients: for output pixel i, the taps start at `first[i]`, `count[i]` of them, with
 * fixed-point weights `weights[i * kSize + k]` (Pillow's precompute_coeffs + normalize_coeffs_8bpc). */
interface Coefficients {
  kSize: number;
  first: Int32Array;
  count: Int32Array;
  weights: Float64Array;
}

function coefficients(inSize: number, outSize: number): Coefficients {
  const scale = inSize / outSize;
  const filterScale = Math.max(1, scale);
  const support = SUPPORT * filterScale;
  const kSize = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Float64Array(outSize * kSize);
  const pre = new Float64Array(kSize);
  const ss = 1 / filterScale; // Pillow multiplies by the reciprocal: the same last bit as it
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    // C's (int) truncates; values below 0 are clamped either way.
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let sum = 0;
    for (let x = 0; x < xmax; x++) {
      const w = lanczos((x + xmin - center + 0.5) * ss);
      pre[x] = w;
      sum += w;
    }
    for (let x = 0; x < xmax; x++) {
      const w = sum !== 0 ? pre[x] / sum : pre[x];
      const fixed = w * (1 << PRECISION_BITS);
      weights[i * kSize + x] = Math.trunc(w < 0 ? fixed - 0.5 : fixed + 0.5);
    }
    first[i] = xmin;
    count[i] = xmax;
  }
  return { kSize, first, count, weights };
}

function clip8(v: number): number {
  if (v >= 255 * (1 << PRECISION_BITS)) return 255;
  if (v <= 0) return 0;
  return Math.floor(v / (1 << PRECISION_BITS));
}

/**
 * Resizes interleaved 8-bit pixels (`channels` per pixel, row-major `[H, W, C]`) as Pillow's LANCZOS does.
 * Channels are independent (Pillow's L, RGB; not its premultiplied RGBA path). Same size: a copy.
 */
export function resizeLanczos(
  pixels: Uint8Array,
  width: number,
  height: number,
  channels: number,
  outWidth: number,
  outHeight: number,
): Uint8Array {
  if (pixels.length !== width * height * channels) {
    throw new Error(`resizeLanczos: ${pixels.length} bytes is not ${width}x${height}x${channels}`);
  }
  if (outWidth < 1 || outHeight < 1) throw new Error(`resizeLanczos: bad size ${outWidth}x${outHeight}`);
  let src = pixels;
  let w = width;
  if (outWidth !== width) {
    const k = coefficients(width, outWidth);
    const out = new Uint8Array(outWidth * height * channels);
    for (let y = 0; y < height; y++) {
      const row = y * width * channels;
      for (let x = 0; x < outWidth; x++) {
        const x0 = k.first[x];
        const n = k.count[x];
        const wOff = x * k.kSize;
        for (let c = 0; c < channels; c++) {
          let s = 1 << (PRECISION_BITS - 1);
          for (let t = 0; t < n; t++) s += src[row + (x0 + t) * channels + c] * k.weights[wOff + t];
          out[(y * outWidth + x) * channels + c] = clip8(s);
        }
      }
    }
    src = out;
    w = outWidth;
  }
  if (outHeight !== height) {
    const k = coefficients(height, outHeight);
    const out = new Uint8Array(w * outHeight * channels);
    const stride = w * channels;
    for (let y = 0; y < outHeight; y++) {
      const y0 = k.first[y];
      const n = k.count[y];
      const wOff = y * k.kSize;
      for (let i = 0; i < stride; i++) {
        let s = 1 << (PRECISION_BITS - 1);
        for (let t = 0; t < n; t++) s += src[(y0 + t) * stride + i] * k.weights[wOff + t];
        out[y * stride + i] = clip8(s);
      }
    }
    src = out;
  }
  return src === pixels ? pixels.slice() : src;
}
