// LoRAs through the generation pipeline: the golden `lora_1` run (tiny_sd, the kohya LoRA at 0.8 named by an
// A1111 prompt tag, DDIM 6 steps, CFG 7.5, seed 99, 128²) against diffusers' PNG at f32 (PSNR ≥ 40 dB); the
// request's `loras` list and a prompt tag give the same image; a request without LoRAs after one with them
// gives the image of a model that never had one; unknown names fail naming the request field.

import { psnr, testGpu } from "./util.ts";
import { loadPipeline } from "../src/pipeline/load.ts";
import type { StableDiffusionPipeline } from "../src/pipeline/pipeline.ts";
import { decodeImage } from "../src/image/convert.ts";
import { type GenerateRequest, RequestError } from "../src/pipeline/types.ts";
import { decode as decodePng } from "fast-png";

const fixtures = new URL("./fixtures/", import.meta.url).pathname;

let shared: Promise<StableDiffusionPipeline> | undefined;
const pipeline = () =>
  shared ??= testGpu().then((gpu) =>
    loadPipeline(gpu, `${fixtures}tiny_sd`, { precision: "f32", loraDir: `${fixtures}lora` })
  );

async function image(p: StableDiffusionPipeline, request: GenerateRequest): Promise<Uint8Array> {
  for await (const ev of p.generate(request)) if (ev.type === "done") return decodeImage(ev.image).data;
  throw new Error("no image");
}

Deno.test("lora_1: a <lora:style_kohya:0.8> prompt tag reproduces diffusers' fused-LoRA image (f32, PSNR ≥ 40 dB)", async () => {
  const p = await pipeline();
  const got = await image(p, {
    prompt: "a photograph of an astronaut riding a horse <lora:style_kohya:0.8>",
    negativePrompt: "",
    width: 128,
    height: 128,
    steps: 6,
    guidanceScale: 7.5,
    sampler: "ddim",
    seed: 99,
    longPrompt: "truncate",
  });
  const want = new Uint8Array(
    decodePng(await Deno.readFile(`${fixtures}lora/lora_1.png`)).data as Uint8Array,
  );
  const db = psnr(got, want);
  console.log(`lora_1 f32: PSNR ${db.toFixed(2)} dB`);
  if (!(db >= 40)) throw new Error(`PSNR ${db.toFixed(2)} dB < 40 dB`);
});

Deno.test("lora requests: the loras list equals the tag, no LoRA restores the base image, unknown names name their field", async () => {
  const p = await pipeline();
  const base: GenerateRequest = {
    prompt: "a red fox",
    width: 64,
    height: 64,
    steps: 2,
    guidanceScale: 7.5,
    sampler: "ddim",
    seed: 5,
  };
  await p.useLoras(base); // whatever an earlier test merged: back to the base weights
  const plain = await image(p, base);
  const tagged = await image(p, { ...base, prompt: "a red fox <lora:style_kohya:0.6>" });
  const listed = await image(p, { ...base, loras: [{ name: "style_kohya", scale: 0.6 }] });
  if (psnr(tagged, listed) !== Infinity) {
    throw new Error("the loras list and the prompt tag give different images");
  }
  if (psnr(plain, listed) > 30) throw new Error("the LoRA hardly changes the image");
  const again = await image(p, base);
  if (psnr(plain, again) !== Infinity) {
    throw new Error("after a LoRA run, a run without one differs from before");
  }
  const cases: [GenerateRequest, string][] = [
    [{ ...base, loras: [{ name: "nope", scale: 1 }] }, "loras"],
    [{ ...base, loras: [{ name: "../lora/style_kohya", scale: 1 }] }, "loras"],
    [{ ...base, prompt: "a fox <lora:nope>" }, "prompt"],
    [{ ...base, prompt: "a fox <lora:style_kohya:x>" }, "prompt"],
  ];
  for (const [request, field] of cases) {
    try {
      await image(p, request);
      throw new Error(`${JSON.stringify(request)} was accepted`);
    } catch (e) {
      if (!(e instanceof RequestError) || e.field !== field) {
        throw new Error(`${JSON.stringify(request)}: ${e}`);
      }
    }
  }
});
