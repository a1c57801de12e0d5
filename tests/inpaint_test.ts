// Inpainting against diffusers 0.27.2's StableDiffusionInpaintPipeline (tests/fixtures/inpaint): a 9-channel
// inpainting UNet (tiny_sd_inpaint) and an ordinary 4-channel one with the per-step blend (tiny_sd). The
// latents after every step and the final PNG (PSNR ≥ 40 dB at f32) must match; the request rules that
// answer 400; and the mask preprocessing (Pillow Lanczos resize, binarisation, latent-size mask).

import { assertClose, fixtureRequest, psnr, readF32Tensors, testGpu } from "./util.ts";
import { loadPipeline } from "../src/pipeline/load.ts";
import type { StableDiffusionPipeline } from "../src/pipeline/pipeline.ts";
import { inpaintingStart, latentMask } from "../src/pipeline/inpaint.ts";
import { createScheduler } from "../src/schedulers/index.ts";
import { TorchGenerator } from "../src/schedulers/rng.ts";
import { decodeImage } from "../src/image/convert.ts";
import { encodeImage, imageSize } from "../src/image/codec.ts";
import { maskSizeProblem, preprocessMask } from "../src/image/mask.ts";
import { resizeLanczos } from "../src/image/resize.ts";
import { decode as decodePng } from "fast-png";
import { readJsonFile } from "../src/util/json.ts";
import { type GenerateRequest, RequestError } from "../src/pipeline/types.ts";
import type { ActDType } from "../src/gpu/pipelines.ts";

const fixtures = new URL("./fixtures/", import.meta.url).pathname;

interface InpaintCase {
  name: string;
  model_folder: string;
  unet_in_channels: number;
  prompt: string;
  negative_prompt: string;
  image: string;
  mask: string;
  width: number;
  height: number;
  sampler: "ddim";
  steps: number;
  guidance_scale: number;
  strength: number;
  seed: number;
  png: string;
}

const manifest = await readJsonFile(`${fixtures}inpaint/manifest.json`) as { cases: InpaintCase[] };

const pipelines = new Map<string, Promise<StableDiffusionPipeline>>();
function pipeline(
  model: "tiny_sd" | "tiny_sd_inpaint",
  precision: ActDType,
): Promise<StableDiffusionPipeline> {
  const key = `${model}/${precision}`;
  let p = pipelines.get(key);
  if (!p) {
    p = testGpu().then((gpu) => loadPipeline(gpu, `${fixtures}${model}`, { precision }));
    pipelines.set(key, p);
  }
  return p;
}

function modelOf(c: InpaintCase): "tiny_sd" | "tiny_sd_inpaint" {
  return c.model_folder.endsWith("tiny_sd_inpaint") ? "tiny_sd_inpaint" : "tiny_sd";
}

async function requestOf(c: InpaintCase): Promise<GenerateRequest> {
  return fixtureRequest(c, {
    steps: c.steps,
    sampler: c.sampler,
    initImage: await Deno.readFile(`${fixtures}inpaint/${c.image}`),
    mask: await Deno.readFile(`${fixtures}inpaint/${c.mask}`),
    strength: c.strength,
  });
}

for (const c of manifest.cases) {
  for (const precision of ["f32", "f16"] as const) {
    const kind = c.unet_in_channels === 9 ? "9-channel inpainting UNet" : "4-channel UNet, blended";
    Deno.test(`inpaint ${c.name} (${kind}, strength ${c.strength}) reproduces diffusers (${precision})`, async () => {
      const p = await pipeline(modelOf(c), precision);
      if (p.unetKind !== (c.unet_in_channels === 9 ? "inpainting" : "plain")) throw new Error(p.unetKind);
      const ref = await readF32Tensors(`${fixtures}inpaint/${c.name}.safetensors`);
      // Read back the latents after every step (wrapping this instance's loop; restored below).
      const steps: Float32Array[] = [];
      const denoise = p.denoise;
      p.denoise = async function* (o) {
        for await (const s of denoise.call(p, o)) {
          steps.push(await s.read());
          yield s;
        }
      };
      let png: Uint8Array | undefined;
      try {
        for await (const ev of p.generate(await requestOf(c))) if (ev.type === "done") png = ev.image;
      } finally {
        p.denoise = denoise;
      }
      const want = ref.get("step_latents")!;
      const n = 4 * (c.height / 8) * (c.width / 8);
      if (steps.length * n !== want.length) {
        throw new Error(`${steps.length} steps, diffusers ran ${want.length / n}`);
      }
      // A wrong random-draw order or blend shows here first (f16: looser, as the e2e tests).
      const tol = precision === "f32" ? 2e-3 : 3e-2;
      steps.forEach((s, k) => assertClose(s, want.subarray(k * n, (k + 1) * n), tol, `step ${k}`));
      const got = decodeImage(png!);
      const wantPng = decodePng(await Deno.readFile(`${fixtures}inpaint/${c.png}`));
      const db = psnr(got.data, new Uint8Array(wantPng.data as Uint8Array));
      console.log(`${c.name} ${precision}: PSNR ${db.toFixed(2)} dB`);
      const minDb = precision === "f32" ? 40 : 25;
      if (!(db >= minDb)) throw new Error(`PSNR ${db.toFixed(2)} dB < ${minDb} dB`);
      const parameters = decodePng(png!).text.parameters ?? "";
      if (!parameters.includes(`Denoising strength: ${c.strength}`)) throw new Error(parameters);
    });
  }
}

/** A generator that keeps every tensor it draws. */
class RecordingGenerator extends TorchGenerator {
  readonly draws: Float32Array[] = [];
  override randn(shape: number | readonly number[]): Float32Array {
    const out = super.randn(shape);
    this.draws.push(out);
    return out;
  }
}

for (const c of manifest.cases) {
  Deno.test(`inpaint ${c.name}: every random draw before the loop, in diffusers' order`, async () => {
    const p = await pipeline(modelOf(c), "f32");
    const ref = await readF32Tensors(`${fixtures}inpaint/${c.name}.safetensors`);
    const want = [...ref.keys()].filter((k) => k.startsWith("randn_")).sort().map((k) => ref.get(k)!);
    const scheduler = createScheduler(c.sampler, p.parts.schedulerConfig);
    scheduler.setTimesteps(c.steps);
    const g = new RecordingGenerator(c.seed);
    await inpaintingStart(p, p.unetKind, await requestOf(c), scheduler, g);
    if (g.draws.length !== want.length) {
      throw new Error(`${g.draws.length} draws, diffusers made ${want.length}`);
    }
    g.draws.forEach((d, k) => assertClose(d, want[k], 1e-6, `randn_${k}`));
  });
}

function assertRequestError(f: () => void, field: string, text: string): void {
  try {
    f();
  } catch (e) {
    if (!(e instanceof RequestError)) throw e;
    if (e.field !== field || !e.message.includes(text)) {
      throw new Error(`RequestError(${e.field}): ${e.message}; want ${field} with "${text}"`);
    }
    return;
  }
  throw new Error(`no RequestError (want ${field})`);
}

Deno.test("inpainting requests: a mask without an image, a 9-channel model without a mask, a mask of another shape", async () => {
  const [c1, c2] = manifest.cases;
  const inpaintModel = await pipeline("tiny_sd_inpaint", "f32");
  const plain = await pipeline("tiny_sd", "f32");
  const base = await requestOf(c1);
  // Valid as given, on both kinds of model.
  inpaintModel.validate(base);
  plain.validate(await requestOf(c2));
  assertRequestError(
    () => plain.validate({ ...base, initImage: undefined }),
    "mask",
    "only applies with an image",
  );
  // Repainting everything (OpenAI's edits without a mask) needs no mask file, but not both.
  inpaintModel.validate({ ...base, mask: undefined, maskAll: true });
  assertRequestError(() => inpaintModel.validate({ ...base, maskAll: true }), "mask", "not both");
  assertRequestError(() => inpaintModel.validate({ ...base, mask: undefined }), "mask", "inpainting model");
  assertRequestError(
    () => inpaintModel.validate({ ...base, mask: undefined, initImage: undefined }),
    "mask",
    "inpainting model",
  );
  // 128×128 image: a 128×96 mask is refused, a 64×64 or a 129×128 one (within 1 %) is stretched.
  const solid = (w: number, h: number) => encodeImage(new Uint8Array(w * h * 3).fill(255), w, h, "png").bytes;
  assertRequestError(() => plain.validate({ ...base, mask: solid(128, 96) }), "mask", "aspect ratio");
  plain.validate({ ...base, mask: solid(64, 64) });
  plain.validate({ ...base, mask: solid(129, 128) });
  assertRequestError(
    () => plain.validate({ ...base, mask: new TextEncoder().encode("not an image") }),
    "mask",
    "not a readable PNG or JPEG",
  );
});

Deno.test("mask sizes: the aspect-ratio rule and header-only sizes of PNG and JPEG", () => {
  if (maskSizeProblem({ width: 512, height: 512 }, { width: 1024, height: 1024 })) {
    throw new Error("2x smaller");
  }
  if (maskSizeProblem({ width: 640, height: 480 }, { width: 643, height: 480 })) throw new Error("0.5 % off");
  if (!maskSizeProblem({ width: 640, height: 480 }, { width: 480, height: 640 })) throw new Error("rotated");
  const png = encodeImage(new Uint8Array(24 * 40 * 3), 24, 40, "png").bytes;
  const jpeg = encodeImage(new Uint8Array(24 * 40 * 3), 24, 40, "jpeg").bytes;
  for (const bytes of [png, jpeg]) {
    const s = imageSize(bytes);
    if (s?.width !== 24 || s.height !== 40) throw new Error(`size ${JSON.stringify(s)}`);
  }
  if (imageSize(png.subarray(0, 10)) !== undefined) throw new Error("truncated PNG");
});

Deno.test("mask preprocessing: binarised at 128, PNG or JPEG, resized with Pillow's Lanczos, alpha masks inverted, latent mask by nearest", async () => {
  const [c1, c2] = manifest.cases;
  // The fixtures' masks are binary L PNGs at the image size: preprocessing keeps them bit for bit.
  for (const c of [c1, c2]) {
    const bytes = await Deno.readFile(`${fixtures}inpaint/${c.mask}`);
    const raw = decodePng(bytes).data as Uint8Array;
    const m = preprocessMask(bytes, c.width, c.height);
    if (!m.every((v, i) => v === (raw[i] >= 128 ? 1 : 0))) throw new Error(`${c.mask} changed`);
    const small = latentMask(m, c.width, c.height);
    for (let y = 0; y < c.height / 8; y++) {
      for (let x = 0; x < c.width / 8; x++) {
        if (small[y * (c.width / 8) + x] !== m[y * 8 * c.width + x * 8]) {
          throw new Error(`latent mask ${x},${y}`);
        }
      }
    }
  }
  // Any JPEG will do too: the same ellipse, compressed, differs from the PNG's only along the edge.
  const png = decodePng(await Deno.readFile(`${fixtures}inpaint/${c2.mask}`)).data as Uint8Array;
  const jpeg = encodeImage(grey3(png), 128, 128, "jpeg", { quality: 80 }).bytes;
  const fromPng = preprocessMask(await Deno.readFile(`${fixtures}inpaint/${c2.mask}`), 128, 128);
  const fromJpeg = preprocessMask(jpeg, 128, 128);
  const jpegDiffers = fromJpeg.filter((v, i) => v !== fromPng[i]).length;
  if (jpegDiffers > 100) throw new Error(`${jpegDiffers} pixels of the JPEG mask differ`);
  // Threshold: 127 keeps, 128 repaints.
  const grey = (v: number) => encodeImage(new Uint8Array(8 * 8 * 3).fill(v), 8, 8, "png").bytes;
  if (preprocessMask(grey(127), 8, 8).some((v) => v !== 0)) throw new Error("127 repaints");
  if (preprocessMask(grey(128), 8, 8).some((v) => v !== 1)) throw new Error("128 keeps");
  // OpenAI's convention: transparent (alpha 0) repaints whatever the colour; opaque keeps.
  const rgba = new Uint8Array(8 * 8 * 4).fill(255);
  for (let p = 0; p < 32; p++) rgba[p * 4 + 3] = 0; // top half transparent
  const alpha = encodeImage(rgba, 8, 8, "png").bytes;
  const a = preprocessMask(alpha, 8, 8, "alpha");
  if (!a.every((v, p) => v === (p < 32 ? 1 : 0))) throw new Error(`alpha mask ${a}`);
  // Scaled down 2× and back up, the ellipse differs at most along its edge (the resize is smooth, not nearest).
  const bytes = await Deno.readFile(`${fixtures}inpaint/${c2.mask}`);
  const full = preprocessMask(bytes, 128, 128);
  const half = resizeLanczos(decodePng(bytes).data as Uint8Array, 128, 128, 1, 64, 64);
  const up = preprocessMask(encodeImage(grey3(half), 64, 64, "png").bytes, 128, 128);
  let differ = 0;
  for (let i = 0; i < full.length; i++) if (up[i] !== full[i]) differ++;
  if (differ > 200) {
    throw new Error(`${differ} of ${full.length} pixels differ after 2× down and up`);
  }
});

Deno.test("Pillow-style Lanczos resampling: same size copies, constants stay, a step edge stays mirror-symmetric", () => {
  const ramp = Uint8Array.from({ length: 6 * 4 }, (_, i) => i * 10);
  const same = resizeLanczos(ramp, 6, 4, 1, 6, 4);
  if (same === ramp || !same.every((v, i) => v === ramp[i])) throw new Error("same size is not a copy");
  const flat = resizeLanczos(new Uint8Array(7 * 5 * 3).fill(77), 7, 5, 3, 19, 3);
  if (!flat.every((v) => v === 77)) throw new Error("a constant image changed");
  // A black/white step edge, 8 → 16 pixels wide: overshoot and undershoot around the edge are clipped, and
  // the two halves mirror each other (v ↔ 255 − v).
  const step = Uint8Array.from({ length: 8 }, (_, i) => (i < 4 ? 0 : 255));
  const up = resizeLanczos(step, 8, 1, 1, 16, 1);
  for (let i = 0; i < 16; i++) {
    if (up[i] + up[15 - i] !== 255) throw new Error(`not mirror-symmetric: ${up}`);
  }
  if (up[0] !== 0 || up[15] !== 255 || !(up[7] < 128 && up[8] > 128)) throw new Error(`edge: ${up}`);
});

function grey3(l: Uint8Array): Uint8Array {
  const out = new Uint8Array(l.length * 3);
  for (let i = 0; i < l.length; i++) out.fill(l[i], i * 3, i * 3 + 3);
  return out;
}
