// Two pixel steps of AUTOMATIC1111's inpainting around the diffusion itself (src/image/mask_blur.ts prepares
// the mask):
//
// - `fillMasked` (A1111's inpainting_fill 0, "fill"): before encoding, the area to repaint takes the colours
//   of its surroundings, so the model starts from a smooth guess instead of the old content. The kept pixels,
//   weighted by how much they are kept, are blurred at decreasing radii and each blur is laid over the
//   previous ones; the last layer is the kept pixels themselves.
// - `overlayMasked` (A1111's final overlay): the generated image is laid over the original through the mask,
//   doubled and clipped (A1111's "whole picture" overlay), so pixels outside the mask are the original's
//   exactly and a blurred mask gives a soft edge.
//
// Images are 8-bit RGB `[H, W, 3]`; masks 8-bit `[H, W]`, 255 = repaint.

/** (σ, repeats) of the fill's layers, widest first; σ 0 is the kept pixels themselves. */
const FILL_LAYERS: readonly (readonly [number, number])[] = [[256, 1], [64, 1], [16, 2], [4, 4], [2, 2], [
  0,
  1,
]];

/** The masked area painted from the blurred colours around it; kept pixels unchanged. */
export function fillMasked(rgb: Uint8Array, mask: Uint8Array, width: number, height: number): Uint8Array {
  const n = width * height;
  if (rgb.length !== n * 3 || mask.length !== n) {
    throw new Error(`fillMasked: ${rgb.length} RGB / ${mask.length} mask values are not ${width}x${height}`);
  }
  // Premultiplied planes: R·a, G·a, B·a and a, with a = how much of each pixel is kept.
  const planes = [0, 1, 2, 3].map(() => new Float64Array(n));
  for (let p = 0; p < n; p++) {
    const a = (255 - mask[p]) / 255;
    for (let c = 0; c < 3; c++) planes[c][p] = rgb[p * 3 + c] * a;
    planes[3][p] = a;
  }
  const acc = [0, 1, 2, 3].map(() => new Float64Array(n));
  for (const [sigma, repeats] of FILL_LAYERS) {
    const layer = sigma > 0 ? planes.map((p) => gaussianLikeBlur(p, width, height, sigma)) : planes;
    for (let k = 0; k < repeats; k++) {
      // "over": layer + acc · (1 − layer alpha), on premultiplied values.
      for (let p = 0; p < n; p++) {
        const keep = 1 - layer[3][p];
        for (let c = 0; c < 4; c++) acc[c][p] = layer[c][p] + acc[c][p] * keep;
      }
    }
  }
  const out = new Uint8Array(n * 3);
  for (let p = 0; p < n; p++) {
    const a = acc[3][p];
    for (let c = 0; c < 3; c++) {
      out[p * 3 + c] = a > 0 ? Math.min(255, Math.max(0, Math.round(acc[c][p] / a))) : 0;
    }
  }
  return out;
}

/**
 * `generated` over `original` through `mask` doubled and clipped (A1111: a mask pixel of 128 or more shows
 * only the generated image, below that they mix): out = (gen·m + orig·(255 − m)) / 255, rounded.
 */
export function overlayMasked(
  generated: Uint8Array,
  original: Uint8Array,
  mask: Uint8Array,
  width: number,
  height: number,
): Uint8Array {
  const n = width * height;
  if (generated.length !== n * 3 || original.length !== n * 3 || mask.length !== n) {
    throw new Error(`overlayMasked: the images and the mask are not all ${width}x${height}`);
  }
  const out = new Uint8Array(n * 3);
  for (let p = 0; p < n; p++) {
    const m = Math.min(255, mask[p] * 2);
    for (let c = 0; c < 3; c++) {
      const o = p * 3 + c;
      out[o] = Math.round((generated[o] * m + original[o] * (255 - m)) / 255);
    }
  }
  return out;
}

/**
 * A blur of about σ pixels: three box passes per axis (their variance adds up to σ²), edges extended — the
 * cost is independent of σ, as the fill's σ of 256 needs.
 */
export function gaussianLikeBlur(
  plane: Float64Array,
  width: number,
  height: number,
  sigma: number,
): Float64Array {
  // Three boxes of radius r have variance 3·((2r + 1)² − 1) / 12 = σ².
  const r = Math.max(1, Math.round((Math.sqrt(4 * sigma * sigma + 1) - 1) / 2));
  let out = plane;
  for (let pass = 0; pass < 3; pass++) {
    out = boxPass(out, width, height, r, true);
    out = boxPass(out, width, height, r, false);
  }
  return out;
}

/** Mean over [i − r, i + r] along rows (`horizontal`) or columns, edge values repeated beyond the border. */
function boxPass(
  src: Float64Array,
  width: number,
  height: number,
  r: number,
  horizontal: boolean,
): Float64Array {
  const out = new Float64Array(src.length);
  const n = horizontal ? width : height;
  const lines = horizontal ? height : width;
  const step = horizontal ? 1 : width;
  const prefix = new Float64Array(n + 1);
  for (let line = 0; line < lines; line++) {
    const base = horizontal ? line * width : line;
    for (let i = 0; i < n; i++) prefix[i + 1] = prefix[i] + src[base + i * step];
    const first = src[base];
    const last = src[base + (n - 1) * step];
    for (let i = 0; i < n; i++) {
      const a = i - r;
      const b = i + r;
      let s = prefix[Math.min(b, n - 1) + 1] - prefix[Math.max(a, 0)];
      if (a < 0) s += -a * first;
      if (b > n - 1) s += (b - n + 1) * last;
      out[base + i * step] = s / (2 * r + 1);
    }
  }
  return out;
}
