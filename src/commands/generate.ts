// `generate [--model DIR] --prompt P [...] --out out.png`: images from the command line, with a terminal
// progress bar and optional preview files. Without --model: $SD_MODEL, else weights/sd-turbo, downloaded
// there first (in the foreground, with progress bars) when missing. Steps, guidance, sampler and size
// default to the model's own (pipeline/defaults.ts). TAESD weights (--taesd DIR, env TAESD, else a taesd/
// folder in or next to the model) make TAESD the default preview and allow --decoder taesd.

import { parseArgs } from "node:util";
import cliProgress from "cli-progress";
import { Gpu } from "../gpu/device.ts";
import { loadPipeline } from "../pipeline/load.ts";
import { sizeMultiple } from "../pipeline/pipeline.ts";
import { imageSize } from "../image/codec.ts";
import { promptChunks } from "../pipeline/text_encoding.ts";
import {
  type DecoderName,
  DECODERS,
  type GenerateRequest,
  PREVIEW_MODES,
  type PreviewMode,
  PROMPT_WEIGHTINGS,
  type PromptWeighting,
  SAMPLER_NAMES,
  type SamplerName,
  SEED_MODES,
  type SeedMode,
} from "../pipeline/types.ts";
import { findTaesdBeside } from "../models/taesd/load.ts";
import { choicesLine, GPU_FLAGS, GPU_FLAGS_USAGE, gpuFlags, tuneLine } from "./gpu_flags.ts";
import { splitLoraTags } from "../models/lora/tags.ts";
import { LORA_OPTIONS, LORA_USAGE, parseLoraArgs } from "./lora_args.ts";
import { chooseDefaultModel, downloadAdvice, downloadModel } from "../weights/download/index.ts";
import { progressBars } from "./weights.ts";

// --image without --width/--height: the image's size, rounded down to what the UNet takes (64 for SD).
// --mask (white repaints, any PNG or JPEG of the image's aspect ratio, stretched to it) makes it inpainting;
// --strength then defaults to 1 (diffusers' inpainting default), else 0.75.
const USAGE = `usage: generate [--model DIR] --prompt P [--negative N] [--seed S] [--steps N] [--guidance G]
  [--sampler ${SAMPLER_NAMES.join("|")}] [--eta E] [--width W --height H]
  [--num-images N [--seed-mode diffusers|per-image]]   (N > 1: out.png → out-1.png … out-N.png)
  [--image init.png [--mask mask.png] [--strength S]]
  [--long-prompt chunk|truncate] [--precision f32|f16] [--previews DIR --preview-every K]
  [--preview cheap|vae|taesd] [--taesd DIR] [--decoder vae|taesd] [--prompt-weighting none|a1111]
  [--tokenizer DIR] ${LORA_USAGE} [--gpu-choices SPEC] [--retune] --out out.png
  --taesd DIR (env TAESD): TAESD weights; default: a taesd/ folder with a config.json in the model folder, else
  next to it. With them the default preview is taesd. --decoder taesd decodes the final image with TAESD:
  faster, lower quality (drafts, CPU-only hosts).
  LoRAs: each --lora FILE[:SCALE] is merged at its scale; <lora:NAME:SCALE> tags in the prompt name files of
  --lora-dir (or a --lora file by its stem).
${GPU_FLAGS_USAGE}`;

function num(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new Error(`--${name} must be a number, got ${JSON.stringify(value)}`);
  return n;
}

export async function generateCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string" },
      prompt: { type: "string" },
      negative: { type: "string", default: "" },
      seed: { type: "string" },
      steps: { type: "string" },
      guidance: { type: "string" },
      sampler: { type: "string" },
      eta: { type: "string" },
      width: { type: "string" },
      height: { type: "string" },
      image: { type: "string" },
      mask: { type: "string" },
      strength: { type: "string" },
      "long-prompt": { type: "string", default: "chunk" },
      "prompt-weighting": { type: "string", default: "none" },
      precision: { type: "string" },
      previews: { type: "string" },
      "preview-every": { type: "string" },
      preview: { type: "string" },
      taesd: { type: "string" },
      decoder: { type: "string", default: "vae" },
      tokenizer: { type: "string" },
      "num-images": { type: "string" },
      "seed-mode": { type: "string" },
      "weights-dir": { type: "string" },
      out: { type: "string" },
      "no-f16": { type: "boolean" },
      quiet: { type: "boolean" },
      ...GPU_FLAGS,
      ...LORA_OPTIONS,
    },
  });
  if (values.prompt === undefined || !values.out) {
    console.error(USAGE);
    return 2;
  }
  if (values.sampler && !SAMPLER_NAMES.includes(values.sampler as SamplerName)) {
    throw new Error(`unknown sampler ${JSON.stringify(values.sampler)}; one of ${SAMPLER_NAMES.join(", ")}`);
  }
  const longPrompt = values["long-prompt"];
  if (longPrompt !== "chunk" && longPrompt !== "truncate") {
    throw new Error("--long-prompt must be chunk or truncate");
  }
  const promptWeighting = values["prompt-weighting"] as PromptWeighting;
  if (!PROMPT_WEIGHTINGS.includes(promptWeighting)) {
    throw new Error(`--prompt-weighting must be ${PROMPT_WEIGHTINGS.join(" or ")}`);
  }
  const precision = values.precision;
  if (precision !== undefined && precision !== "f32" && precision !== "f16") {
    throw new Error("--precision must be f32 or f16");
  }
  const preview = values.preview as PreviewMode | undefined;
  if (preview !== undefined && !PREVIEW_MODES.includes(preview)) {
    throw new Error(`--preview must be ${PREVIEW_MODES.join(", ")}`);
  }
  const decoder = values.decoder as DecoderName;
  if (!DECODERS.includes(decoder)) throw new Error(`--decoder must be ${DECODERS.join(" or ")}`);
  if (values.seed !== undefined && !/^\d+$/.test(values.seed)) {
    throw new Error("--seed must be a non-negative integer");
  }

  const numImages = num(values["num-images"], "num-images", 1);
  if (!Number.isInteger(numImages) || numImages < 1) throw new Error("--num-images must be an integer ≥ 1");
  const seedMode = values["seed-mode"] ?? "diffusers";
  if (!SEED_MODES.includes(seedMode as SeedMode)) {
    throw new Error(`--seed-mode must be ${SEED_MODES.join(" or ")}`);
  }
  const loras = parseLoraArgs(values);

  const modelPath = await modelOrDefault(values.model, values["weights-dir"] ?? "weights", !!values.quiet);
  if (modelPath === undefined) return 1;
  const taesd = values.taesd ?? (Deno.env.get("TAESD") || undefined) ?? findTaesdBeside(modelPath);
  if (preview === "taesd" && !taesd) {
    throw new Error(
      "--preview taesd needs TAESD weights: --taesd DIR, or a taesd/ folder in or next to the model",
    );
  }
  const flags = gpuFlags(values);
  const gpu = await Gpu.create({ disableF16: values["no-f16"], choices: flags.choices });
  const forced = choicesLine(flags.choices);
  if (forced) console.error(forced);
  const pipeline = await loadPipeline(gpu, modelPath, {
    precision,
    tokenizerDir: values.tokenizer,
    taesd,
    decoder,
    tune: flags.tune,
    // The requested size's shapes (the model's native size when the size comes from --image).
    tuneOptions: values.width || values.height
      ? { sizes: [{ width: num(values.width, "width", 512), height: num(values.height, "height", 512) }] }
      : undefined,
    onTuned: (s) => console.error(tuneLine(s)),
    loraDir: loras.dir,
    loraFiles: loras.files,
    loraStrict: loras.strict,
    onWarning: (m) => console.error(`warning: ${m}`),
  });
  const defaults = pipeline.defaults;
  const initImage = values.image ? await Deno.readFile(values.image) : undefined;
  const mask = values.mask ? await Deno.readFile(values.mask) : undefined;
  const fromImage = initImage && imageSize(initImage);
  const m = sizeMultiple(pipeline.parts.unet);
  const fit = (px: number) => Math.max(m, px - (px % m));
  const request: GenerateRequest = {
    prompt: values.prompt,
    negativePrompt: values.negative,
    width: num(values.width, "width", fromImage ? fit(fromImage.width) : defaults?.width ?? 512),
    height: num(values.height, "height", fromImage ? fit(fromImage.height) : defaults?.height ?? 512),
    steps: num(values.steps, "steps", defaults?.steps ?? 20),
    guidanceScale: num(values.guidance, "guidance", defaults?.guidanceScale ?? 7.5),
    sampler: values.sampler as SamplerName | undefined,
    seed: values.seed === undefined ? undefined : Number(values.seed),
    eta: values.eta === undefined ? undefined : num(values.eta, "eta", 0),
    initImage,
    mask,
    strength: values.strength === undefined ? undefined : num(values.strength, "strength", 0.75),
    previewEvery: values.previews ? num(values["preview-every"], "preview-every", 1) : 0,
    preview,
    previewFormat: "png",
    longPrompt,
    numImages,
    seedMode: seedMode as SeedMode,
    loras: loras.requests,
    promptWeighting,
  };
  if (request.initImage && request.strength === undefined) request.strength = mask ? 1 : 0.75;
  if (values.previews) await Deno.mkdir(values.previews, { recursive: true });
  if (longPrompt === "truncate") {
    const text = splitLoraTags(request.prompt).prompt; // the tags are not tokenized
    const t = promptChunks(pipeline.parts.tokenizer, text, "truncate", promptWeighting);
    if (t.truncated) {
      console.error("note: the prompt is longer than 75 tokens and was truncated (--long-prompt truncate)");
    }
  }

  const bar = new cliProgress.SingleBar({
    format: "{bar} {value}/{total} steps | {duration_formatted} elapsed | eta {eta_formatted}",
    hideCursor: true,
    noTTYOutput: !values.quiet,
    notTTYSchedule: 1000,
  }, cliProgress.Presets.shades_classic);
  let started = false;
  for await (const ev of pipeline.generate(request)) {
    if (ev.type === "started") {
      console.error(`seed ${ev.seed}, ${ev.width}×${ev.height}, ${ev.steps} steps`);
      const active = pipeline.parts.loras?.active ?? [];
      if (active.length) console.error(`LoRAs: ${active.map((l) => `${l.name} × ${l.scale}`).join(", ")}`);
    } else if (ev.type === "progress") {
      if (!values.quiet) {
        if (!started) bar.start(ev.steps, 0);
        started = true;
        bar.update(ev.step);
      }
    } else if (ev.type === "preview") {
      if (values.previews) {
        const ext = ev.mime === "image/png" ? "png" : "jpg";
        await Deno.writeFile(`${values.previews}/step_${String(ev.step).padStart(3, "0")}.${ext}`, ev.data);
      }
    } else if (ev.type === "done") {
      if (started) bar.stop();
      const images = ev.images ?? [ev.image];
      const outs = images.length === 1
        ? [values.out]
        : images.map((_, i) => values.out!.replace(/(\.[^./]*)?$/, (ext) => `-${i + 1}${ext}`));
      for (const [i, image] of images.entries()) await Deno.writeFile(outs[i], image);
      if (outs.length > 1) console.error(`wrote ${outs.join(", ")}`);
      const t = ev.timings;
      console.error(
        `wrote ${values.out} (seed ${ev.seed}) in ${(t.totalMs / 1000).toFixed(2)} s: text ${
          t.textEncoderMs.toFixed(0)
        } ms, ` +
          `denoise ${(t.denoiseMs / 1000).toFixed(2)} s (${t.stepsPerSecond.toFixed(2)} it/s), vae ${
            t.vaeMs.toFixed(0)
          } ms`,
      );
    }
  }
  return 0;
}

/**
 * --model, else $SD_MODEL (or $MODEL), else the default model, downloaded in the foreground when missing;
 * undefined (after saying what to run) when it cannot be.
 */
async function modelOrDefault(model: string | undefined, weightsDir: string, quiet: boolean) {
  const given = model ?? (Deno.env.get("SD_MODEL") || Deno.env.get("MODEL") || undefined);
  if (given !== undefined) return given;
  const choice = await chooseDefaultModel(weightsDir);
  if (choice.kind === "path") return choice.path;
  console.error(`no --model: using ${choice.path} (fetched first if missing)`);
  try {
    await downloadModel({
      model: choice.model,
      dir: choice.dir,
      endpoint: Deno.env.get("HF_ENDPOINT"),
      token: Deno.env.get("HF_TOKEN") || undefined,
      retries: 3,
      progress: quiet ? undefined : progressBars(),
      log: (line) => console.error(line),
    });
  } catch (e) {
    console.error(downloadAdvice(choice, (e as Error).message));
    return undefined;
  }
  return choice.path;
}
