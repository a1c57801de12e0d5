// TAESD in the pipeline, on the tiny model (tests/fixtures/tiny_sd) with the real-size TAESD fixture
// (tests/fixtures/taesd/model): previews and the draft decoder take the UNet's latents unscaled, previews
// decode them mean-pooled 2×2 (half the image size), the default preview is TAESD once it is loaded, and
// asking for it without weights names the `preview` field. Where TAESD weights are found beside a model, and
// serve's --taesd / --decoder.
//
// The references are diffusers' own latents after each step (tests/fixtures/e2e/case_4: DPM++ 2M Karras, no
// guidance, 8 steps, 128²), decoded by our TAESD (equal to diffusers' on the taesd fixtures): the pipeline's
// latents match diffusers' to 2e-3, so its TAESD images must match these to ≥ 40 dB PSNR.

import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { testGpu } from "./util.ts";
import { SafetensorsFile } from "../src/weights/safetensors.ts";
import { loadPipeline } from "../src/pipeline/load.ts";
import { StableDiffusionPipeline } from "../src/pipeline/pipeline.ts";
import { poolLatents2x, taesdDecode, taesdPreview } from "../src/pipeline/taesd.ts";
import { decodedToRgb, decodeImage } from "../src/image/convert.ts";
import { type GenerateRequest, type GenerationEvent, RequestError } from "../src/pipeline/types.ts";
import { findTaesdBeside, loadTaesd } from "../src/models/taesd/load.ts";
import { synthTaesdFolder } from "../src/models/synth.ts";
import { readJsonFile } from "../src/util/json.ts";
import { parseServeConfig } from "../src/server/config.ts";

const fixtures = new URL("./fixtures/", import.meta.url).pathname;
const MODEL = `${fixtures}tiny_sd`;
const TAESD = `${fixtures}taesd/model`;

const CASE_4: GenerateRequest = {
  prompt: "a photograph of an astronaut riding a horse",
  negativePrompt: "",
  width: 128,
  height: 128,
  steps: 8,
  guidanceScale: 1.0,
  sampler: "dpmpp_2m_karras",
  seed: 1234,
  longPrompt: "truncate",
  previewFormat: "png",
};

function psnr(a: Uint8Array, b: Uint8Array): number {
  let se = 0;
  for (let i = 0; i < a.length; i++) se += (a[i] - b[i]) ** 2;
  return se === 0 ? Infinity : 10 * Math.log10((255 * 255 * a.length) / se);
}

async function run(p: StableDiffusionPipeline, req: GenerateRequest): Promise<GenerationEvent[]> {
  const events: GenerationEvent[] = [];
  for await (const ev of p.generate(req)) events.push(ev);
  return events;
}

async function caseLatents(step: number): Promise<Float32Array> {
  using f = await SafetensorsFile.open(`${fixtures}e2e/case_4.safetensors`);
  return await f.readF32(`latents_step_${step}`);
}

Deno.test("TAESD previews (the default once loaded) and the taesd decoder follow diffusers' latents", async () => {
  const gpu = await testGpu();
  const manifest = await readJsonFile(`${fixtures}e2e/manifest.json`) as { cases: Record<string, unknown>[] };
  const c = manifest.cases.find((x) => x.name === "case_4")!;
  assertEquals([c.prompt, c.seed, c.num_inference_steps, c.guidance_scale], [
    CASE_4.prompt,
    CASE_4.seed,
    CASE_4.steps,
    CASE_4.guidanceScale,
  ]);
  const p = await loadPipeline(gpu, MODEL, { precision: "f32", taesd: TAESD });
  const taesd = p.parts.taesd!;

  // Previews at steps 4 (no `preview` given: TAESD, as it is loaded), at half the image size.
  const events = await run(p, { ...CASE_4, previewEvery: 4 });
  const previews = events.filter((e) => e.type === "preview");
  assertEquals(previews.map((e) => [e.step, e.width, e.height]), [[4, 64, 64]]);
  const want = await taesdPreview(gpu, taesd, await caseLatents(3), 16, 16);
  const got = decodeImage(previews[0].data);
  const previewDb = psnr(got.data, want.data);
  if (!(previewDb >= 40)) throw new Error(`TAESD preview vs diffusers' latents: ${previewDb.toFixed(1)} dB`);
  // … and it is not the cheap preview (same size, other pixels).
  const cheap = (await run(p, { ...CASE_4, previewEvery: 4, preview: "cheap" })).find((e) =>
    e.type === "preview"
  )!;
  if (!(psnr(decodeImage(cheap.data).data, got.data) < 30)) {
    throw new Error("the cheap preview looks the same");
  }

  // The taesd decoder: the final latents as they are (no 1/0.18215), 8 pixels per latent.
  const draft = new StableDiffusionPipeline({ ...p.parts, decoder: "taesd" });
  const done = (await run(draft, CASE_4)).find((e) => e.type === "done")!;
  const image = decodeImage(done.image);
  const wantImage = decodedToRgb(await taesdDecode(gpu, taesd, await caseLatents(7), 16, 16), 128, 128);
  assertEquals([image.width, image.height], [128, 128]);
  const db = psnr(image.data, wantImage.data);
  if (!(db >= 40)) throw new Error(`taesd decoder vs diffusers' final latents: ${db.toFixed(1)} dB`);
  console.log(`TAESD preview ${previewDb.toFixed(1)} dB, TAESD-decoded image ${db.toFixed(1)} dB`);
});

Deno.test("preview taesd without TAESD weights is a request error naming preview", async () => {
  const gpu = await testGpu();
  const p = await loadPipeline(gpu, MODEL, { precision: "f32" });
  try {
    p.validate({ ...CASE_4, preview: "taesd" });
    throw new Error("accepted");
  } catch (e) {
    if (!(e instanceof RequestError) || e.field !== "preview") throw e;
  }
  p.validate({ ...CASE_4, preview: "cheap" });
  let failed = "";
  try {
    await loadPipeline(gpu, MODEL, { precision: "f32", decoder: "taesd" });
  } catch (e) {
    failed = String(e);
  }
  if (!/decoder taesd needs TAESD weights/.test(failed)) throw new Error(`decoder without TAESD: ${failed}`);
});

Deno.test("2×2 latent pooling averages each block per channel", () => {
  // [2, 2, 4]: channel k, row y, column x holds 100k + 10y + x.
  const latents = Float32Array.from({ length: 16 }, (_, i) => 100 * (i >> 3) + 10 * ((i >> 2) & 1) + (i & 3));
  assertEquals([...poolLatents2x(latents, 2, 2, 4)], [5.5, 7.5, 105.5, 107.5]);
});

Deno.test("TAESD is found in taesd/ inside the model folder, else next to it, only with a config.json", async () => {
  const root = await Deno.makeTempDir({ prefix: "taesd-find-" });
  try {
    await Deno.mkdir(`${root}/sd15/taesd`, { recursive: true });
    await Deno.mkdir(`${root}/taesd`);
    await Deno.writeTextFile(`${root}/model.safetensors`, "");
    assertEquals(findTaesdBeside(`${root}/sd15`), undefined, "no config.json anywhere");
    await Deno.writeTextFile(`${root}/taesd/config.json`, "{}");
    assertEquals(findTaesdBeside(`${root}/sd15/`), `${root}/taesd`, "next to the folder");
    assertEquals(findTaesdBeside(`${root}/model.safetensors`), `${root}/taesd`, "next to a single file");
    await Deno.writeTextFile(`${root}/sd15/taesd/config.json`, "{}");
    assertEquals(findTaesdBeside(`${root}/sd15`), `${root}/sd15/taesd`, "inside wins");
    // The fixtures' tiny model has none: tests/fixtures/taesd/ holds the model one level down.
    assertEquals(findTaesdBeside(MODEL), undefined, "tiny_sd");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("serve config: --taesd / TAESD, else found beside the model; --decoder / DECODER; errors name the flag", async () => {
  const root = await Deno.makeTempDir({ prefix: "taesd-serve-" });
  const fails = (args: string[], env: Record<string, string>, pattern: RegExp) => {
    let message = "";
    try {
      parseServeConfig(args, env);
    } catch (e) {
      message = String(e);
    }
    if (!pattern.test(message)) throw new Error(`${args.join(" ")}: "${message}" does not match ${pattern}`);
  };
  try {
    await Deno.mkdir(`${root}/sd15`);
    const none = parseServeConfig(["--model", `${root}/sd15`], {});
    assertEquals([none.taesd, none.decoder, none.options.taesd], [undefined, "vae", false]);
    fails(["--model", `${root}/sd15`, "--decoder", "taesd"], {}, /--decoder taesd needs TAESD weights/);
    fails(["--model", `${root}/sd15`], { DECODER: "fast" }, /DECODER must be vae or taesd/);
    fails(["--model", `${root}/sd15`, "--taesd", root], {}, /--taesd: .* is not a TAESD folder/);

    await Deno.mkdir(`${root}/taesd`);
    await Deno.writeTextFile(`${root}/taesd/config.json`, "{}");
    const found = parseServeConfig(["--model", `${root}/sd15`, "--decoder", "taesd"], {});
    assertEquals([found.taesd, found.decoder, found.options.taesd], [`${root}/taesd`, "taesd", true]);
    const fromEnv = parseServeConfig([], { MODEL: `${root}/sd15`, TAESD: TAESD, DECODER: "taesd" });
    assertEquals([fromEnv.taesd, fromEnv.decoder], [TAESD, "taesd"]);
    // Without a model (--no-model) nothing loads, TAESD included; without --model, the default model gets it.
    assertEquals(parseServeConfig(["--no-model", "--taesd", TAESD], {}).options.taesd, false);
    assertEquals(parseServeConfig(["--taesd", TAESD], {}).options.taesd, true);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("synthetic TAESD weights (benchmarks) load as madebyollin/taesd's folder does", async () => {
  const dir = await Deno.makeTempDir({ prefix: "taesd-synth-" });
  try {
    const report = await synthTaesdFolder(dir, { seed: 1 });
    assertEquals(report.files[0].parameters, 2_445_063);
    const gpu = await testGpu();
    const taesd = await loadTaesd(gpu, dir, "f32");
    assertEquals(taesd.config.num_decoder_blocks, [3, 3, 3, 1]);
    taesd.weights.destroy();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
