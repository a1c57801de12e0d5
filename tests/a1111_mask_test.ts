// CPU tests of A1111's mask handling (src/image/mask_blur.ts) and of the fill and overlay around inpainting
// (src/image/inpaint_fill.ts): the blur's kernel and borders, what binarising a blurred mask keeps, the
// mask's alpha / luminance / rounding / invert rules, the two pixel steps, and the engine's A1111 steps
// around a run (src/pipeline/a1111_inpaint.ts) against the HTTP-side code they replaced.

import { decodeImage, encodeImage, readPngText } from "../src/image/codec.ts";
import { a1111Mask, blurMask, gaussianKernel, gaussianRadius, reflect101 } from "../src/image/mask_blur.ts";
import { fillMasked, overlayMasked } from "../src/image/inpaint_fill.ts";
import { resizeLanczos } from "../src/image/resize.ts";
import { a1111InputProblem, checkA1111Inpaint, withA1111Inpaint } from "../src/pipeline/a1111_inpaint.ts";
import {
  type DoneEvent,
  type GenerateRequest,
  type GenerationEvent,
  RequestError,
} from "../src/pipeline/types.ts";
import { assert, assertEquals } from "./util.ts";

Deno.test("gaussian kernel: A1111's 2·⌊2.5σ + 0.5⌋ + 1 taps, normalised, symmetric", () => {
  assertEquals(
    [gaussianRadius(4), gaussianRadius(1), gaussianRadius(0.5), gaussianRadius(0)],
    [10, 3, 1, 0],
    "radii",
  );
  const k = gaussianKernel(4);
  assertEquals(k.length, 21, "taps for σ 4");
  assert(Math.abs(k.reduce((a, b) => a + b, 0) - 1) < 1e-12, "sums to 1");
  for (let i = 0; i < 10; i++) assert(k[i] === k[20 - i] && k[i] < k[i + 1], `symmetric, rising at ${i}`);
  // exp(−x²/2σ²) ratios.
  assert(Math.abs(k[10 + 4] / k[10] - Math.exp(-0.5)) < 1e-12, "one σ out is e^-½ of the centre");
  assertEquals([...gaussianKernel(0)], [1], "σ 0: identity");
});

Deno.test("reflect101: edges reflected without repeating the edge pixel", () => {
  assertEquals([-3, -2, -1, 0, 4, 5, 6, 7].map((i) => reflect101(i, 5)), [3, 2, 1, 0, 4, 3, 2, 1], "n = 5");
  assertEquals([reflect101(-7, 3), reflect101(9, 3), reflect101(5, 1)], [1, 1, 0], "far out, n = 1");
});

Deno.test("blurMask: an impulse becomes the outer product of the kernels; a step stays symmetric about 127.5", () => {
  const w = 31;
  const h = 25;
  const impulse = new Uint8Array(w * h);
  impulse[12 * w + 15] = 255;
  const out = blurMask(impulse, w, h, 2, 1);
  const kx = gaussianKernel(2);
  const ky = gaussianKernel(1);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const dx = x - 15 + 5;
      const dy = y - 12 + 3;
      const want = dx >= 0 && dx < kx.length && dy >= 0 && dy < ky.length ? 255 * kx[dx] * ky[dy] : 0;
      assert(out[y * w + x] === Math.round(want), `(${x}, ${y}): ${out[y * w + x]} vs ${want}`);
    }
  }
  // A vertical edge: left half 0, right half 255 (w even so the halves mirror).
  const W = 40;
  const step = new Uint8Array(W * 3);
  for (let y = 0; y < 3; y++) step.fill(255, y * W + W / 2, y * W + W);
  const blurred = blurMask(step, W, 3, 4);
  for (let x = 0; x < W; x++) {
    assert(blurred[x] + blurred[W - 1 - x] === 255, `mirror at ${x}: ${blurred[x]} + ${blurred[W - 1 - x]}`);
    if (x > 0) assert(blurred[x] >= blurred[x - 1], `monotonic at ${x}`);
  }
  assert(blurred[W / 2 - 11] === 0 && blurred[W / 2 + 10] === 255, "beyond the kernel: unchanged");
  assertEquals([...blurMask(step, W, 3, 0, 0)], [...step], "σ 0: identity");
});

Deno.test("blur then binarise at 0.5 (the pipeline's rule): straight edges stay, corners round off", () => {
  const n = 64;
  const square = new Uint8Array(n * n);
  for (let y = 16; y < 48; y++) square.fill(255, y * n + 16, y * n + 48);
  const binary = blurMask(square, n, n, 4).map((v) => (v >= 128 ? 255 : 0));
  const at = (x: number, y: number) => binary[y * n + x];
  assertEquals([at(16, 32), at(47, 32), at(32, 16), at(32, 47)], [255, 255, 255, 255], "edge midpoints kept");
  assertEquals([at(15, 32), at(32, 48)], [0, 0], "outside the edges: still kept out");
  assertEquals([at(16, 16), at(47, 47)], [0, 0], "corners cut");
  assertEquals(at(32, 32), 255, "inside");
  // A stroke thinner than the blur disappears.
  const thin = new Uint8Array(n * n);
  for (let y = 0; y < n; y++) thin[y * n + 32] = 255;
  assert(blurMask(thin, n, n, 4).every((v) => v < 128), "a 1-pixel line is gone after σ 4 and the cut");
});

Deno.test("a1111Mask: alpha when transparent, else luminance; rounded above 128; resized; inverted; blurred", () => {
  const rgbaMask = (pixels: number[][]) => {
    const rgba = new Uint8Array(pixels.flat());
    return decodeImage(encodeImage(rgba, pixels.length, 1, "png").bytes);
  };
  // Opaque: luminance, rounded: 128 → 0, 129 → 255.
  const opaque = rgbaMask([[128, 128, 128, 255], [129, 129, 129, 255], [255, 0, 0, 255], [0, 0, 0, 255]]);
  assertEquals([...a1111Mask(opaque, 4, 1)], [0, 255, 0, 0], "luminance, rounded");
  assertEquals([...a1111Mask(opaque, 4, 1, { round: false })], [128, 129, 76, 0], "unrounded luminance");
  assertEquals([...a1111Mask(opaque, 4, 1, { invert: true })], [255, 0, 255, 255], "inverted");
  // Any transparency: the alpha channel is the mask (opaque = repaint), colours ignored.
  const alpha = rgbaMask([[0, 0, 0, 255], [255, 255, 255, 0], [0, 0, 0, 200], [255, 255, 255, 100]]);
  assertEquals([...a1111Mask(alpha, 4, 1)], [255, 0, 255, 0], "alpha");
  // Resized to the output (Lanczos of a 0/255 mask: a 2× upscale keeps the halves).
  const half = decodeImage(encodeImage(new Uint8Array([0, 0, 0, 255, 255, 255]), 2, 1, "png").bytes);
  const up = a1111Mask(half, 8, 2);
  assertEquals([up[0], up[7], up[8], up[15]], [0, 255, 0, 255], "resized");
  // The blur's σ is in the mask's pixels: a mask at twice the output blurs half as much at the output.
  const big = new Uint8Array(64 * 32 * 3);
  for (let y = 0; y < 32; y++) big.fill(255, (y * 64 + 32) * 3, (y * 64 + 64) * 3);
  const bigMask = decodeImage(encodeImage(big, 64, 32, "png").bytes);
  const small = new Uint8Array(32 * 16 * 3);
  for (let y = 0; y < 16; y++) small.fill(255, (y * 32 + 16) * 3, (y * 32 + 32) * 3);
  const smallMask = decodeImage(encodeImage(small, 32, 16, "png").bytes);
  const a = a1111Mask(bigMask, 32, 16, { blurX: 4, blurY: 4 });
  const b = a1111Mask(smallMask, 32, 16, { blurX: 2, blurY: 2 });
  // Equal but for the downscale's rounding at the edge.
  assert(a.every((v, i) => Math.abs(v - b[i]) <= 1), "σ 4 at 64 px wide = σ 2 at 32");
  assert(a.some((v) => v > 0 && v < 255), "blurred");
});

Deno.test("fillMasked: kept pixels unchanged, the masked area takes its surroundings' colours", () => {
  const w = 48;
  const h = 32;
  const rgb = new Uint8Array(w * h * 3);
  const mask = new Uint8Array(w * h);
  for (let p = 0; p < w * h; p++) {
    const x = p % w;
    // Left: red; right (masked): green noise the fill must not see.
    rgb.set(x < 24 ? [200, 20, 10] : [0, 255, (p * 37) % 256], p * 3);
    mask[p] = x < 24 ? 0 : 255;
  }
  const out = fillMasked(rgb, mask, w, h);
  for (let p = 0; p < w * h; p++) {
    const x = p % w;
    const got = [...out.subarray(p * 3, p * 3 + 3)];
    if (x < 24) assertEquals(got, [200, 20, 10], `kept pixel ${p}`);
    else {assert(
        Math.abs(got[0] - 200) <= 1 && Math.abs(got[1] - 20) <= 1 && Math.abs(got[2] - 10) <= 1,
        `filled ${p}: ${got}`,
      );}
  }
  // Two colours around: a filled pixel is mostly the nearer one.
  const two = new Uint8Array(w * h * 3);
  const gap = new Uint8Array(w * h);
  for (let p = 0; p < w * h; p++) {
    const x = p % w;
    two.set(x < 16 ? [255, 0, 0] : [0, 0, 255], p * 3);
    gap[p] = x >= 16 && x < 32 ? 255 : 0;
  }
  const filled = fillMasked(two, gap, w, h);
  const px = (x: number) => [...filled.subarray((16 * w + x) * 3, (16 * w + x) * 3 + 3)];
  assert(px(17)[0] > px(17)[2] && px(30)[2] > px(30)[0], `near red ${px(17)}, near blue ${px(30)}`);
});

Deno.test("overlayMasked: the original where the mask is 0, the generated image from 128 up, a mix below", () => {
  const gen = new Uint8Array([200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200]);
  const orig = new Uint8Array([10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10]);
  const out = overlayMasked(gen, orig, new Uint8Array([0, 64, 128, 255]), 4, 1);
  const mixed = Math.round((200 * 128 + 10 * 127) / 255);
  assertEquals([out[0], out[3], out[6], out[9]], [10, mixed, 200, 200], "per mask value");
});

/** The HTTP-side preparation and overlay as the A1111 route had them before they moved into the engine
 * (src/server/routes/a1111/inpaint.ts at 08abad2), kept as the reference the engine's must equal. */
function formerPrepare(
  initImage: Uint8Array,
  maskBytes: Uint8Array,
  width: number,
  height: number,
  o: { round: boolean; invert: boolean; blurX: number; blurY: number; fill: number },
) {
  const img = decodeImage(initImage, 16);
  const n = img.width * img.height;
  const rgb = new Uint8Array(n * 3);
  for (let p = 0; p < n; p++) rgb.set(img.rgba.subarray(p * 4, p * 4 + 3), p * 3);
  const original = resizeLanczos(rgb, img.width, img.height, 3, width, height);
  const m = a1111Mask(decodeImage(maskBytes, 16), width, height, o);
  const start = o.fill === 0 ? fillMasked(original, m, width, height) : original;
  const grey = new Uint8Array(width * height * 3);
  for (let p = 0; p < m.length; p++) grey.fill(m[p], p * 3, p * 3 + 3);
  return {
    image: encodeImage(start, width, height, "png").bytes,
    mask: encodeImage(grey, width, height, "png").bytes,
    overlay(png: Uint8Array): Uint8Array {
      const out = decodeImage(png);
      const rgb = new Uint8Array(width * height * 3);
      for (let p = 0; p < width * height; p++) rgb.set(out.rgba.subarray(p * 4, p * 4 + 3), p * 3);
      const merged = overlayMasked(rgb, original, m, width, height);
      return encodeImage(merged, width, height, "png", { parameters: readPngText(png).parameters }).bytes;
    },
  };
}

Deno.test("withA1111Inpaint: the engine's image, mask and composited outputs equal the former HTTP-side ones", async () => {
  // A 96×72 gradient, a mask at twice its size (a disc, blurred, inverted), output 64×48, fill 0, a batch of 2.
  const iw = 96;
  const ih = 72;
  const pic = new Uint8Array(iw * ih * 3);
  for (let p = 0; p < iw * ih; p++) pic.set([(p % iw) * 2, Math.floor(p / iw) * 3, (p * 7) % 256], p * 3);
  const initImage = encodeImage(pic, iw, ih, "png").bytes;
  const maskRgb = new Uint8Array(4 * iw * ih * 3);
  for (let p = 0; p < 4 * iw * ih; p++) {
    const x = p % (2 * iw) - iw;
    const y = Math.floor(p / (2 * iw)) - ih;
    if (x * x + y * y < 60 * 60) maskRgb.fill(255, p * 3, p * 3 + 3);
  }
  const maskBytes = encodeImage(maskRgb, 2 * iw, 2 * ih, "png").bytes;
  const [width, height] = [64, 48];
  const options = { round: true, invert: true, blurX: 6, blurY: 3, fill: 0 as const };
  const req: GenerateRequest = {
    prompt: "p",
    width,
    height,
    steps: 2,
    guidanceScale: 7,
    initImage,
    mask: maskBytes,
    strength: 0.6,
    numImages: 2,
    a1111Inpaint: { ...options, overlay: true },
  };
  // A stand-in engine: two "generated" PNGs with their own parameters, recording the request it ran.
  const seen: GenerateRequest[] = [];
  const generated = [0, 1].map((i) => {
    const rgb = new Uint8Array(width * height * 3);
    for (let k = 0; k < rgb.length; k++) rgb[k] = (k * 13 + i * 101) % 256;
    return encodeImage(rgb, width, height, "png", { parameters: `p\nSeed: ${5 + i}` }).bytes;
  });
  async function* run(r: GenerateRequest): AsyncGenerator<GenerationEvent> {
    seen.push(r);
    yield { type: "started", seed: 5, steps: 2, width, height, numImages: 2 };
    const timings = { totalMs: 1, textEncoderMs: 0, denoiseMs: 1, vaeMs: 0, stepsPerSecond: 1 };
    yield {
      type: "done",
      image: generated[0],
      images: generated,
      seeds: [5, 6],
      mime: "image/png",
      seed: 5,
      width,
      height,
      parameters: "p\nSeed: 5",
      timings,
    };
  }
  const events: GenerationEvent[] = [];
  for await (const e of withA1111Inpaint(req, run)) events.push(e);

  const former = formerPrepare(initImage, maskBytes, width, height, options);
  const ran = seen[0];
  assertEquals(ran.initImage, former.image, "the engine's start image");
  assertEquals(ran.mask, former.mask, "the engine's mask");
  assertEquals([ran.a1111Inpaint, ran.strength, ran.numImages], [undefined, 0.6, 2], "the rest as asked");
  const done = events[1] as DoneEvent;
  assertEquals(
    done.images,
    generated.map((png) => former.overlay(png)),
    "the composited outputs, byte for byte",
  );
  assert(done.image === done.images![0], "image is images[0]");
  assertEquals(readPngText(done.images![1]).parameters, "p\nSeed: 6", "each keeps its parameters");
  const kept = rgbOf(done.images![0]);
  assert(!samePixels(kept, rgbOf(generated[0])), "the overlay changed something");
  // Without the options the run gets the request untouched.
  seen.length = 0;
  const plain = { ...req, a1111Inpaint: undefined };
  for await (const _ of withA1111Inpaint(plain, run)) { /* drain */ }
  assert(seen[0] === plain, "no A1111 options: the same request");
});

Deno.test("checkA1111Inpaint: header-level refusals name A1111's fields", () => {
  const png = encodeImage(new Uint8Array(8 * 8 * 3), 8, 8, "png").bytes;
  const base: GenerateRequest = {
    prompt: "",
    width: 8,
    height: 8,
    steps: 1,
    guidanceScale: 1,
    initImage: png,
    mask: png,
    a1111Inpaint: {},
  };
  const fieldOf = (req: GenerateRequest) => {
    try {
      checkA1111Inpaint(req);
      return "ok";
    } catch (e) {
      assert(e instanceof RequestError, `${e}`);
      return e.field;
    }
  };
  // A PNG header claiming 5000×5000 (25 MP): refused without decoding.
  const huge = png.slice();
  new DataView(huge.buffer).setUint32(16, 5000);
  new DataView(huge.buffer).setUint32(20, 5000);
  assertEquals(
    [
      fieldOf(base),
      fieldOf({ ...base, mask: undefined }),
      fieldOf({ ...base, a1111Inpaint: { blurX: 65 } }),
      fieldOf({ ...base, a1111Inpaint: { fill: 2 }, strength: 0.5 }),
      fieldOf({ ...base, a1111Inpaint: { fill: 3 } }),
      fieldOf({ ...base, initImage: huge }),
      fieldOf({ ...base, mask: huge }),
    ],
    ["ok", "mask", "mask_blur_x", "inpainting_fill", "ok", "image", "mask"],
    "fields",
  );
  assert(a1111InputProblem(huge)!.startsWith("image too large (5000x5000"), "the header's size");
});

function rgbOf(png: Uint8Array): Uint8Array {
  const d = decodeImage(png);
  return d.rgba.filter((_, i) => i % 4 !== 3);
}

function samePixels(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
