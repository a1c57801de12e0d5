// The developer commands, run as a user would: tokenize, component (randn and unet) and generate.

import { assertClose, psnr } from "./util.ts";
import { SafetensorsFile } from "../src/weights/safetensors.ts";
import { decodeImage } from "../src/image/codec.ts";
import { readJsonFile } from "../src/util/json.ts";

const root = new URL("..", import.meta.url).pathname;
const fixtures = `${root}tests/fixtures`;

function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return cliEnv({}, ...args);
}

async function cliEnv(
  env: Record<string, string>,
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "main.ts", ...args],
    cwd: root,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("tokenize prints BOS, every token untruncated and EOS", async () => {
  const refs = await readJsonFile(`${fixtures}/tokenizer/reference_ids.json`) as {
    prompts: { name: string; text: string; hf_fast_tokenizer_json: number[]; all_agree: boolean }[];
  };
  const long = refs.prompts.find((p) => p.hf_fast_tokenizer_json.length > 77 && p.all_agree);
  if (!long) throw new Error("no long prompt in the fixture");
  const r = await cli("tokenize", "--tokenizer", `${fixtures}/tokenizer`, long.text);
  if (r.code !== 0) throw new Error(r.stderr);
  const ids = JSON.parse(r.stdout);
  if (ids[0] !== 49406 || ids[ids.length - 1] !== 49407) throw new Error(`not BOS … EOS: ${r.stdout}`);
  if (ids.join() !== long.hf_fast_tokenizer_json.join()) {
    throw new Error(
      `ids differ from the reference: ${r.stdout} vs ${JSON.stringify(long.hf_fast_tokenizer_json)}`,
    );
  }
});

Deno.test("component randn writes torch's latents for a seed", async () => {
  const out = await Deno.makeTempFile({ suffix: ".safetensors" });
  const r = await cli("component", "randn", "--seed", "42", "--shape", "1,4,64,64", "--out", out);
  if (r.code !== 0) throw new Error(r.stderr);
  using got = await SafetensorsFile.open(out);
  using ref = await SafetensorsFile.open(`${fixtures}/rng/rng.safetensors`);
  assertClose(await got.readF32("latents"), await ref.readF32("randn_seed42_1x4x64x64"), 0, "latents");
  await Deno.remove(out);
});

/** `component unet` on the tiny UNet fixture: inputs from `input`, outputs to `out`, then `extra` flags. */
function tinyUnet(input: string, out: string, ...extra: string[]) {
  return cli(
    "component",
    "unet",
    "--config",
    `${fixtures}/tiny_sd/unet/config.json`,
    "--weights",
    `${fixtures}/tiny_sd/unet/diffusion_pytorch_model.fp16.safetensors`,
    "--in",
    input,
    "--out",
    out,
    ...extra,
  );
}

Deno.test("component unet runs the fixture's inputs and errors clearly on bad input", async () => {
  const out = await Deno.makeTempFile({ suffix: ".safetensors" });
  const r = await tinyUnet(`${fixtures}/unet/case_b.safetensors`, out);
  if (r.code !== 0) throw new Error(r.stderr);
  using got = await SafetensorsFile.open(out);
  using ref = await SafetensorsFile.open(`${fixtures}/unet/case_b.safetensors`);
  assertClose(await got.readF32("out"), await ref.readF32("out"), 1e-3, "unet out");
  // An input file without the sample: a clear error naming it, no crash.
  const bad = await tinyUnet(`${fixtures}/vae/decode_a.safetensors`, out);
  if (bad.code === 0 || !bad.stderr.includes('"sample"')) {
    throw new Error(`expected a missing-input error: ${bad.stderr}`);
  }
  await Deno.remove(out);
});

Deno.test("component taesd-decode and taesd-encode run the fixtures' latents ↔ image", async () => {
  const out = await Deno.makeTempFile({ suffix: ".safetensors" });
  const model = `${fixtures}/taesd/model`;
  for (
    const [entry, io, name] of [["taesd-decode", "decode_b", "image"], [
      "taesd-encode",
      "encode_a",
      "latents",
    ]]
  ) {
    const r = await cli(
      "component",
      entry,
      "--config",
      `${model}/config.json`,
      "--weights",
      `${model}/diffusion_pytorch_model.safetensors`,
      "--in",
      `${fixtures}/taesd/${io}.safetensors`,
      "--out",
      out,
      "--precision",
      "f32",
    );
    if (r.code !== 0) throw new Error(r.stderr);
    using got = await SafetensorsFile.open(out);
    using ref = await SafetensorsFile.open(`${fixtures}/taesd/${io}.safetensors`);
    assertClose(await got.readF32(name), await ref.readF32(name), 1e-3, `${entry} ${name}`);
  }
  await Deno.remove(out);
});

Deno.test("generate writes the image and preview files", async () => {
  const dir = await Deno.makeTempDir();
  const r = await cli(
    "generate",
    "--model",
    `${fixtures}/tiny_sd`,
    "--prompt",
    "a red fox, 猫",
    "--seed",
    "3",
    "--steps",
    "3",
    "--sampler",
    "euler_a",
    "--width",
    "64",
    "--height",
    "128",
    "--previews",
    `${dir}/previews`,
    "--preview-every",
    "1",
    "--out",
    `${dir}/out.png`,
  );
  if (r.code !== 0) throw new Error(r.stderr);
  const img = decodeImage(await Deno.readFile(`${dir}/out.png`));
  if (img.width !== 64 || img.height !== 128) throw new Error(`image is ${img.width}×${img.height}`);
  if (!img.text.parameters?.includes("a red fox, 猫") || !img.text.parameters.includes("Sampler: Euler a")) {
    throw new Error(`parameters chunk: ${JSON.stringify(img.text)}`);
  }
  const previews = [...Deno.readDirSync(`${dir}/previews`)].length;
  if (previews !== 2) {
    throw new Error(`${previews} previews for 3 steps with --preview-every 1 (the last step has none)`);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("generate --num-images 2 --seed-mode per-image writes out-1.png and out-2.png (seeds 5 and 6); model defaults", async () => {
  const dir = await Deno.makeTempDir();
  // SD_MODEL names the model; size, steps and guidance are the tiny model's defaults except --steps.
  const r = await cliEnv(
    { SD_MODEL: `${fixtures}/tiny_sd` },
    "generate",
    "--prompt",
    "a red fox",
    "--seed",
    "5",
    "--steps",
    "2",
    "--num-images",
    "2",
    "--seed-mode",
    "per-image",
    "--out",
    `${dir}/out.png`,
  );
  if (r.code !== 0) throw new Error(r.stderr);
  for (const [i, seed] of [[1, 5], [2, 6]]) {
    const img = decodeImage(await Deno.readFile(`${dir}/out-${i}.png`));
    if (img.width !== 128 || img.height !== 128) throw new Error(`image ${i} is ${img.width}×${img.height}`);
    const p = img.text.parameters ?? "";
    if (!p.includes(`Seed: ${seed},`) || !p.includes("CFG scale: 7.5")) throw new Error(`image ${i}: ${p}`);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("generate --image --mask inpaints as diffusers does; an inpainting model without --mask is refused", async () => {
  const manifest = await readJsonFile(`${fixtures}/inpaint/manifest.json`) as {
    cases: { name: string; cli: string[]; image: string; mask: string; png: string }[];
  };
  const c = manifest.cases.find((c) => c.name === "inpaint_1")!;
  const dir = await Deno.makeTempDir();
  try {
    const model = `${fixtures}/tiny_sd_inpaint`;
    const image = `${fixtures}/inpaint/${c.image}`;
    const r = await cli(
      "generate",
      "--model",
      model,
      ...c.cli,
      "--image",
      image,
      "--mask",
      `${fixtures}/inpaint/${c.mask}`,
      "--precision",
      "f32",
      "--quiet",
      "--out",
      `${dir}/out.png`,
    );
    if (r.code !== 0) throw new Error(r.stderr);
    const got = decodeImage(await Deno.readFile(`${dir}/out.png`));
    const want = decodeImage(await Deno.readFile(`${fixtures}/inpaint/${c.png}`));
    const db = psnr(got.rgba, want.rgba);
    if (!(db >= 40)) throw new Error(`PSNR ${db.toFixed(2)} dB against diffusers' image`);

    const refused = await cli(
      "generate",
      "--model",
      model,
      "--prompt",
      "x",
      "--image",
      image,
      "--out",
      `${dir}/x.png`,
    );
    if (refused.code === 0 || !/inpainting model.*mask/.test(refused.stderr)) {
      throw new Error(`expected the missing mask to be named: ${refused.stderr}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("generate --prompt-weighting: a1111 reads the brackets (a different image than none); bad values fail", async () => {
  const dir = await Deno.makeTempDir();
  const images: Uint8Array[] = [];
  for (const weighting of ["none", "a1111"]) {
    const r = await cli(
      "generate",
      "--model",
      `${fixtures}/tiny_sd`,
      "--prompt",
      "a (red fox:1.8) in the snow",
      "--prompt-weighting",
      weighting,
      "--seed",
      "3",
      "--steps",
      "2",
      "--width",
      "64",
      "--height",
      "64",
      "--out",
      `${dir}/${weighting}.png`,
    );
    if (r.code !== 0) throw new Error(r.stderr);
    images.push(decodeImage(await Deno.readFile(`${dir}/${weighting}.png`)).rgba);
  }
  if (images[0].every((v, i) => v === images[1][i])) throw new Error("a1111 and none gave the same image");
  const bad = await cli(
    "generate",
    "--model",
    `${fixtures}/tiny_sd`,
    "--prompt",
    "x",
    "--prompt-weighting",
    "comfy",
    "--out",
    `${dir}/bad.png`,
  );
  if (bad.code === 0 || !bad.stderr.includes("--prompt-weighting must be none or a1111")) {
    throw new Error(`expected a --prompt-weighting error: ${bad.stderr}`);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("generate --taesd: TAESD previews by default (half size) and --decoder taesd for the image", async () => {
  const dir = await Deno.makeTempDir();
  const args = ["generate", "--model", `${fixtures}/tiny_sd`, "--prompt", "a red fox", "--seed", "3"];
  const r = await cli(
    ...args,
    ...["--steps", "2", "--sampler", "ddim", "--width", "64", "--height", "128"],
    ...["--taesd", `${fixtures}/taesd/model`, "--decoder", "taesd", "--previews", `${dir}/previews`],
    ...["--preview-every", "1", "--out", `${dir}/out.png`],
  );
  if (r.code !== 0) throw new Error(r.stderr);
  const img = decodeImage(await Deno.readFile(`${dir}/out.png`));
  if (img.width !== 64 || img.height !== 128) throw new Error(`image is ${img.width}×${img.height}`);
  const preview = decodeImage(await Deno.readFile(`${dir}/previews/step_001.png`));
  if (preview.width !== 32 || preview.height !== 64) {
    throw new Error(`TAESD preview is ${preview.width}×${preview.height}, want 32×64`);
  }
  // Without weights, asking for TAESD fails before loading anything, naming what is missing.
  const bad = await cli(...args, "--preview", "taesd", "--out", `${dir}/bad.png`);
  if (bad.code === 0 || !bad.stderr.includes("--preview taesd needs TAESD weights")) {
    throw new Error(`expected a missing-TAESD error: ${bad.stderr}`);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("component unet --lora merges kohya and diffusers LoRAs (golden lora/unet_case); non-LoRA files fail", async () => {
  const out = await Deno.makeTempFile({ suffix: ".safetensors" });
  const unet = (...extra: string[]) => tinyUnet(`${fixtures}/lora/unet_case.safetensors`, out, ...extra);
  // 0.8 as kohya 0.5 + the same LoRA in diffusers keys at 0.3.
  const r = await unet(
    "--lora",
    `${fixtures}/lora/style_kohya.safetensors:0.5`,
    "--lora",
    `${fixtures}/lora/style_diffusers.safetensors:0.3`,
  );
  if (r.code !== 0) throw new Error(r.stderr);
  if (!/merged style_kohya × 0.5, style_diffusers × 0.3 into 261 weights/.test(r.stdout)) {
    throw new Error(r.stdout);
  }
  using got = await SafetensorsFile.open(out);
  using ref = await SafetensorsFile.open(`${fixtures}/lora/unet_case.safetensors`);
  assertClose(await got.readF32("out"), await ref.readF32("out"), 1e-3, "unet out with the LoRA at 0.8");
  // A safetensors file that is no LoRA: every key is named in the error, nothing runs.
  const bad = await unet("--lora", `${fixtures}/lora/lora_1.safetensors`);
  if (bad.code === 0 || !/LoRA lora_1: 1 keys are no LoRA form this engine reads: image/.test(bad.stderr)) {
    throw new Error(`expected an unknown-key error: ${bad.stderr}`);
  }
  const lenient = await unet("--lora", `${fixtures}/lora/lora_1.safetensors`, "--lora-strict=false");
  if (lenient.code === 0 || !/skipped 1 keys .*image[\s\S]*no key applies/.test(lenient.stderr)) {
    throw new Error(`expected a warning, then "no key applies": ${lenient.stderr}`);
  }
  await Deno.remove(out);
});

Deno.test("generate applies <lora:NAME:SCALE> tags from --lora-dir; unknown names fail", async () => {
  const dir = await Deno.makeTempDir();
  const run = (prompt: string, ...extra: string[]) =>
    cli(
      "generate",
      "--model",
      `${fixtures}/tiny_sd`,
      "--prompt",
      prompt,
      "--seed",
      "3",
      "--steps",
      "2",
      "--width",
      "64",
      "--height",
      "64",
      "--quiet",
      "--out",
      `${dir}/out.png`,
      ...extra,
    );
  const r = await run("a red fox <lora:style_kohya:0.7>", "--lora-dir", `${fixtures}/lora`);
  if (r.code !== 0) throw new Error(r.stderr);
  if (!r.stderr.includes("LoRAs: style_kohya × 0.7")) throw new Error(r.stderr);
  const img = decodeImage(await Deno.readFile(`${dir}/out.png`));
  if (!img.text.parameters?.includes("<lora:style_kohya:0.7>")) throw new Error(JSON.stringify(img.text));
  const bad = await run("a red fox <lora:nope>", "--lora-dir", `${fixtures}/lora`);
  if (bad.code === 0 || !bad.stderr.includes('unknown LoRA "nope"')) throw new Error(bad.stderr);
  await Deno.remove(dir, { recursive: true });
});
