// `bench [--model DIR] [--width W --height H] [--steps N] [--guidance G] [--sampler S] [--gpu-choices SPEC]
// [--retune]`: end-to-end figures on a model folder; without --model, synthetic full-size SD 1.5 weights are
// written to weights/synth-sd15 first. Prints cold start (weights read + upload), the autotuning pass,
// seconds per UNet evaluation, end-to-end seconds, dispatches per UNet call, readbacks per step, GPU bytes
// and process RSS. One JSON line follows for scripts. `runBench` is also the end-to-end part of
// `deno task gpu:report` (bench/gpu_report.ts).

import { parseArgs } from "node:util";
import { Gpu } from "../gpu/device.ts";
import { loadPipeline } from "../pipeline/load.ts";
import { synthWeightsMain } from "./synth_weights.ts";
import { SAMPLER_NAMES, type SamplerName } from "../pipeline/types.ts";
import type { ActDType } from "../gpu/pipelines.ts";
import type { TuneSummary } from "../ops/autotune.ts";
import { choicesLine, GPU_FLAGS, gpuFlags, tuneLine } from "./gpu_flags.ts";

export interface BenchOptions {
  /** Model folder; default: synthetic SD 1.5 weights in `synthDir` (written when missing). */
  model?: string;
  synthDir?: string;
  width: number;
  height: number;
  steps: number;
  guidance: number;
  sampler: SamplerName;
  precision?: ActDType;
  tune: "auto" | "retune" | "off";
  /** Autotuning budget (default: the tuner's, by adapter). */
  tuneBudgetMs?: number;
  log?: (line: string) => void;
}

export interface BenchResult {
  adapter: string;
  precision: ActDType;
  size: string;
  steps: number;
  guidance: number;
  coldStartSeconds: number;
  /** The autotuning pass inside the cold start. */
  tuneSeconds: number;
  secondsPerUnetStep: number;
  firstStepSeconds: number;
  endToEndSeconds: number;
  /** Dispatches of one UNet call (one command buffer) at this size and batch. */
  dispatchesPerUnetCall: number;
  /** Host readbacks per denoising step (after the first step). */
  readbacksPerStep: number;
  gpuBytes: number;
  rssBytes: number;
  rssGrowthBytes: number;
  tune?: TuneSummary;
}

/** Synthetic SD 1.5 weights in `dir`, written first when missing. */
export async function synthSd15(dir: string, log: (line: string) => void = console.log): Promise<string> {
  try {
    await Deno.stat(`${dir}/model_index.json`);
  } catch {
    log(`writing synthetic SD 1.5 weights to ${dir} ...`);
    const code = await synthWeightsMain(["--model", "sd15", "--out", dir]);
    if (code !== 0) throw new Error(`synth-weights failed (${code})`);
  }
  return dir;
}

/** Loads the model on `gpu` (tuning as asked) and times one generation. */
export async function runBench(gpu: Gpu, o: BenchOptions): Promise<BenchResult> {
  const log = o.log ?? (() => {});
  const model = o.model ?? await synthSd15(o.synthDir ?? "weights/synth-sd15", log);
  const rss0 = Deno.memoryUsage().rss;
  const t0 = performance.now();
  let tune: TuneSummary | undefined;
  const pipeline = await loadPipeline(gpu, model, {
    precision: o.precision,
    tune: o.tune,
    tuneOptions: { sizes: [{ width: o.width, height: o.height }], budgetMs: o.tuneBudgetMs },
    onTuned: (s) => {
      tune = s;
      log(tuneLine(s));
    },
  });
  await gpu.sync();
  const coldStart = (performance.now() - t0) / 1000;
  const t1 = performance.now();
  let evaluations = 0;
  let firstStepMs = 0;
  let lastStepAt = 0;
  let denoiseMs = 0;
  let readbacksAtFirst = 0;
  let readbacksAtLast = 0;
  for await (
    const ev of pipeline.generate({
      prompt: "a photograph of an astronaut riding a horse",
      width: o.width,
      height: o.height,
      steps: o.steps,
      guidanceScale: o.guidance,
      sampler: o.sampler,
      seed: 0,
    })
  ) {
    if (ev.type === "progress") {
      evaluations = ev.steps;
      if (ev.step === 1) {
        firstStepMs = ev.elapsedMs;
        readbacksAtFirst = gpu.readbacks;
      }
      lastStepAt = ev.elapsedMs;
      readbacksAtLast = gpu.readbacks;
    }
    if (ev.type === "done") denoiseMs = ev.timings.denoiseMs;
  }
  const endToEnd = (performance.now() - t1) / 1000;
  const perStep = evaluations > 1 ? (lastStepAt - firstStepMs) / (evaluations - 1) / 1000 : denoiseMs / 1000;
  const { unet } = pipeline.parts;
  const batch = o.guidance > 1 ? 2 : 1;
  const unetPlan = unet.plan(batch, o.height / 8, o.width / 8, 77); // the plan the run built (cached)
  return {
    adapter: gpu.report.adapter.description || gpu.report.adapter.vendor,
    precision: unet.act,
    size: `${o.width}x${o.height}`,
    steps: o.steps,
    guidance: o.guidance,
    coldStartSeconds: +coldStart.toFixed(2),
    tuneSeconds: +((tune?.ms ?? 0) / 1000).toFixed(2),
    secondsPerUnetStep: +perStep.toFixed(3),
    firstStepSeconds: +(firstStepMs / 1000).toFixed(2),
    endToEndSeconds: +endToEnd.toFixed(2),
    dispatchesPerUnetCall: unetPlan.plan.dispatches.filter((d) => d.workgroups.every((n) => n > 0)).length,
    readbacksPerStep: evaluations > 1 ? (readbacksAtLast - readbacksAtFirst) / (evaluations - 1) : NaN,
    gpuBytes: pipeline.gpuBytes(),
    rssBytes: Deno.memoryUsage().rss,
    rssGrowthBytes: Deno.memoryUsage().rss - rss0,
    tune,
  };
}

export async function benchCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string" },
      width: { type: "string", default: "512" },
      height: { type: "string", default: "512" },
      steps: { type: "string", default: "20" },
      guidance: { type: "string", default: "7.5" },
      sampler: { type: "string", default: "euler_a" },
      precision: { type: "string" },
      "synth-dir": { type: "string", default: "weights/synth-sd15" },
      "no-f16": { type: "boolean" },
      ...GPU_FLAGS,
    },
  });
  const width = Number(values.width);
  const height = Number(values.height);
  const steps = Number(values.steps);
  const guidance = Number(values.guidance);
  if (![width, height, steps, guidance].every(Number.isFinite)) {
    throw new Error("width, height, steps and guidance must be numbers");
  }
  if (!SAMPLER_NAMES.includes(values.sampler as SamplerName)) {
    throw new Error(`unknown sampler ${values.sampler}`);
  }
  const precision = values.precision as ActDType | undefined;
  if (precision !== undefined && precision !== "f32" && precision !== "f16") {
    throw new Error("--precision must be f32 or f16");
  }
  const flags = gpuFlags(values);
  const gpu = await Gpu.create({ disableF16: values["no-f16"], choices: flags.choices });
  const forced = choicesLine(flags.choices);
  if (forced) console.log(forced);
  const r = await runBench(gpu, {
    model: values.model,
    synthDir: values["synth-dir"],
    width,
    height,
    steps,
    guidance,
    sampler: values.sampler as SamplerName,
    precision,
    tune: flags.tune,
    log: (line) => console.log(line),
  });
  console.log(`adapter:            ${r.adapter} (${r.precision} activations)`);
  console.log(
    `cold start:         ${r.coldStartSeconds} s (weights read + upload; autotune ${r.tuneSeconds} s)`,
  );
  console.log(
    `seconds/UNet step:  ${r.secondsPerUnetStep} (first step incl. plan build: ${r.firstStepSeconds} s)`,
  );
  console.log(
    `end to end:         ${r.endToEndSeconds} s for ${r.size}, ${steps} steps, guidance ${guidance}`,
  );
  console.log(
    `UNet call:          ${r.dispatchesPerUnetCall} dispatches; ${r.readbacksPerStep} readbacks per step`,
  );
  console.log(`GPU bytes:          ${(r.gpuBytes / 2 ** 30).toFixed(2)} GiB (weights + UNet activations)`);
  console.log(`process RSS:        ${(r.rssBytes / 2 ** 30).toFixed(2)} GiB`);
  console.log(JSON.stringify({ ...r, tune: undefined }));
  return 0;
}
