// Batches (src/pipeline/batch.ts) on the tiny model: diffusers' num_images_per_prompt=2 image for image
// (tests/fixtures/batch/, PSNR ≥ 40 dB at f32), a batch split into one-image UNet calls equals the unsplit
// one, and per-image seeds give each image the single-image run of seed + i. Also the pure parts: the memory
// rule, the split, and the plan byte count the rule relies on.

import { assert, assertClose, assertEquals, fixtureRequest, psnr, testGpu } from "./util.ts";
import { loadPipeline } from "../src/pipeline/load.ts";
import type { StableDiffusionPipeline } from "../src/pipeline/pipeline.ts";
import { decodeImage, encodeImage } from "../src/image/convert.ts";
import { decode as decodePng } from "fast-png";
import { readJsonFile } from "../src/util/json.ts";
import type { DoneEvent, GenerateRequest } from "../src/pipeline/types.ts";
import { BatchRandom, imagesPerCall, splitBatch } from "../src/pipeline/batch.ts";
import { TorchGenerator } from "../src/schedulers/rng.ts";
import { unetGraph } from "../src/models/unet/unet.ts";
import { opKey } from "../src/ops/tuning.ts";

const fixtures = new URL("./fixtures/", import.meta.url).pathname;

let loaded: Promise<StableDiffusionPipeline> | undefined;
function pipeline(): Promise<StableDiffusionPipeline> {
  loaded ??= testGpu().then((gpu) => loadPipeline(gpu, `${fixtures}tiny_sd`, { precision: "f32" }));
  return loaded;
}

async function run(p: StableDiffusionPipeline, req: GenerateRequest): Promise<DoneEvent> {
  for await (const ev of p.generate(req)) if (ev.type === "done") return ev;
  throw new Error("no done event");
}

Deno.test("splitBatch and imagesPerCall: even calls within the budget, at least one image", () => {
  assertEquals(splitBatch(5, 4), [3, 2], "5 by 4");
  assertEquals(splitBatch(4, 4), [4], "4 by 4");
  assertEquals(splitBatch(3, 1), [1, 1, 1], "3 by 1");
  const bytes = (rows: number) => rows * 100 + 10;
  assertEquals(imagesPerCall(8, 2, 1000, bytes), 4, "4 images of 2 rows fit 1000 (810)");
  assertEquals(imagesPerCall(8, 2, 809, bytes), 3, "the exact count decides");
  assertEquals(imagesPerCall(2, 2, 10_000, bytes), 2, "never more than asked");
  assertEquals(imagesPerCall(8, 2, 1, bytes), 1, "one image whatever the budget");
});

Deno.test("BatchRandom: diffusers draws [N, …] at once, per-image draws from seed + i", () => {
  const d = new BatchRandom("diffusers", 7, 2).randn([1, 4, 4, 4]);
  assertEquals(Array.from(d), Array.from(new TorchGenerator(7).randn([2, 4, 4, 4])), "one draw");
  const p = new BatchRandom("per-image", 7, 2);
  assertEquals(p.seeds, [7, 8], "seeds");
  const got = p.randn([1, 4, 4, 4]);
  const want = [...new TorchGenerator(7).randn([1, 4, 4, 4]), ...new TorchGenerator(8).randn([1, 4, 4, 4])];
  assertEquals(Array.from(got), want, "two generators");
});

Deno.test("UNet.planBytes (recorded without a GPU) equals the compiled plan's bytes", async () => {
  const p = await pipeline();
  const unet = p.parts.unet;
  for (const batch of [1, 3]) {
    const predicted = unet.planBytes(batch, 8, 16, 77);
    const plan = unet.plan(batch, 8, 16, 77);
    assertEquals(predicted, plan.plan.bytes, `batch ${batch}`);
    unet.dropPlan(batch, 8, 16, 77);
  }
  // Linear in the batch, to within the tiny per-call inputs.
  const g = (b: number) =>
    unetGraph(unet.config, unet.weights, "f32", { batch: b, height: 8, width: 8, contextTokens: 77 }).b
      .activationBytes();
  if (!(g(4) > 3.5 * g(1))) throw new Error(`batch 4: ${g(4)} bytes, batch 1: ${g(1)}`);
});

Deno.test("tuning keys leave the batch out: one image and a batch of 8 (CFG) get the same tuned kernels", async () => {
  // A tuned pick may change a kernel's summation order; per-batch keys made image i of a batch differ in its
  // last bits from the single run with seed + i.
  const p = await pipeline();
  const unet = p.parts.unet;
  const keys = (batch: number) =>
    new Set(
      unetGraph(unet.config, unet.weights, "f16", { batch, height: 8, width: 16, contextTokens: 77 }).b
        .opShapes().map(opKey),
    );
  const one = keys(2);
  const eight = keys(16);
  assert(one.size > 10, `${one.size} keys`);
  assertEquals([...eight].sort(), [...one].sort(), "the same keys");
});

interface BatchCase {
  name: string;
  prompt: string;
  negative_prompt: string;
  sampler: "euler";
  steps: number;
  guidance_scale: number;
  seed: number;
  num_images_per_prompt: number;
  width: number;
  height: number;
  pngs: string[];
}

const manifest = await readJsonFile(`${fixtures}batch/manifest.json`) as { cases: BatchCase[] };

for (const c of manifest.cases) {
  Deno.test(`batch ${c.name}: num_images ${c.num_images_per_prompt} equals diffusers' num_images_per_prompt (f32), split or not`, async () => {
    const p = await pipeline();
    const request = fixtureRequest(c, {
      steps: c.steps,
      sampler: c.sampler,
      numImages: c.num_images_per_prompt,
      seedMode: "diffusers",
    });
    const whole = await run(p, request);
    assertEquals(whole.images?.length, c.num_images_per_prompt, "images");
    assertEquals(whole.seeds, Array(c.num_images_per_prompt).fill(c.seed), "seeds");
    for (const [i, png] of c.pngs.entries()) {
      const want = decodePng(await Deno.readFile(`${fixtures}batch/${png}`));
      const got = decodeImage(whole.images![i]);
      assertEquals([got.width, got.height], [want.width, want.height], `image ${i} size`);
      const db = psnr(got.data, new Uint8Array(want.data as Uint8Array));
      console.log(`${c.name} image ${i} f32: PSNR ${db.toFixed(2)} dB`);
      if (!(db >= 40)) throw new Error(`image ${i}: PSNR ${db.toFixed(2)} dB < 40 dB`);
    }
    // A budget below one image's plan: one image per UNet call, the same images.
    p.parts.batchBudgetBytes = 1;
    try {
      const split = await run(p, request);
      for (let i = 0; i < c.pngs.length; i++) {
        const db = psnr(decodeImage(split.images![i]).data, decodeImage(whole.images![i]).data);
        if (!(db >= 60)) throw new Error(`split image ${i}: PSNR ${db.toFixed(1)} dB against unsplit`);
      }
    } finally {
      p.parts.batchBudgetBytes = undefined;
    }
  });
}

Deno.test("per-image seeds: image i of a batch is the single-image run of seed + i (euler_a, img2img)", async () => {
  const p = await pipeline();
  const base: GenerateRequest = {
    prompt: "a red fox",
    width: 64,
    height: 64,
    steps: 3,
    guidanceScale: 5,
    sampler: "euler_a",
    seed: 40,
  };
  const init = (await run(p, { ...base, steps: 2 })).image;
  // The left half white: repaint there (a 4-channel model: the blend after every step).
  const mask = encodeImage({
    width: 64,
    height: 64,
    data: Uint8Array.from({ length: 64 * 64 * 3 }, (_, k) => (Math.floor(k / 3) % 64 < 32 ? 255 : 0)),
  }, "png");
  const cases: Partial<GenerateRequest>[] = [{}, { initImage: init, strength: 0.7 }, {
    initImage: init,
    mask,
  }];
  for (const extra of cases) {
    const req = { ...base, ...extra };
    const batch = await run(p, { ...req, numImages: 2, seedMode: "per-image" });
    assertEquals(batch.seeds, [40, 41], "seeds");
    for (let i = 0; i < 2; i++) {
      const single = await run(p, { ...req, seed: 40 + i });
      const a = decodeImage(batch.images![i]).data;
      const b = decodeImage(single.image).data;
      assertClose(Float32Array.from(a), Float32Array.from(b), 2 / 255, `image ${i} ${Object.keys(extra)}`);
    }
    // The diffusers mode draws differently: its second image is not seed 41's.
    const diffusers = await run(p, { ...req, numImages: 2 });
    const db = psnr(decodeImage(diffusers.images![1]).data, decodeImage(batch.images![1]).data);
    if (db > 40) {
      throw new Error(`diffusers and per-image modes gave the same second image (${db.toFixed(1)} dB)`);
    }
  }
});
