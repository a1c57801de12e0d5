// `bench [--model DIR] [--width W --height H] [--steps N] [--guidance G] [--sampler S] [--preview-every K
// --preview cheap|taesd|vae] [--gpu-choices SPEC] [--retune]`: end-to-end figures on a model folder; without
// --model, synthetic full-size SD 1.5 weights are written to weights/synth-sd15 first. Prints cold start
// (weights read + upload, and the autotuning pass within it), seconds per UNet evaluation, dispatches per UNet
// call, the denoising loop's GPU readbacks per step (0 without previews: the latents stay on the GPU) and
// host milliseconds per step (outside awaits on the GPU), end-to-end seconds, GPU bytes and process RSS. One
// JSON line follows for scripts. Per-step figures leave out the first step (plan build). `runBench` is also
// the end-to-end part of `deno task gpu:report` (bench/gpu_report.ts).

import { parseArgs } from "node:util";
import { Gpu } from "../gpu/device.ts";
import { loadPipeline } from "../pipeline/load.ts";
import { synthWeightsMain } from "./synth_weights.ts";
import { PREVIEW_MODES, type PreviewMode, SAMPLER_NAMES, type SamplerName } from "../pipeline/types.ts";
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
  previewEvery?: number;
  preview?: PreviewMode;
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
  previewEvery: number;
  /** Dispatches of one UNet call (one command buffer) at this size and batch. */
  dispatchesPerUnetCall: number;
  /** GPU → host copies per denoising step (after the first step). */
  readbacksPerStep: number;
  hostMsPerStep: number;
  encodeMsPerStep: number;
  gpuMsPerStep: number;
  endToEndSeconds: number;
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
  const probe = instrument(gpu);
  const snapshot = () => ({ ...probe, at: performance.now() });
  let atFirstStep = snapshot();
  let atLastStep = snapshot();
  const t1 = performance.now();
  let evaluations = 0;
  let firstStepMs = 0;
  let lastStepAt = 0;
  let denoiseMs = 0;
  const previewEvery = o.previewEvery ?? 0;
  for await (
    const ev of pipeline.generate({
      prompt: "a photograph of an astronaut riding a horse",
      width: o.width,
      height: o.height,
      steps: o.steps,
      guidanceScale: o.guidance,
      sampler: o.sampler,
      seed: 0,
      previewEvery,
      preview: o.preview,
    })
  ) {
    if (ev.type === "progress") {
      evaluations = ev.steps;
      if (ev.step === 1) firstStepMs = ev.elapsedMs;
      if (ev.step === 1) atFirstStep = snapshot();
      lastStepAt = ev.elapsedMs;
      atLastStep = snapshot();
    }
    if (ev.type === "done") denoiseMs = ev.timings.denoiseMs;
  }
  const endToEnd = (performance.now() - t1) / 1000;
  const perStep = evaluations > 1 ? (lastStepAt - firstStepMs) / (evaluations - 1) / 1000 : denoiseMs / 1000;
  // Steps 2 … N (between the first and the last progress event): the first builds the plans.
  const later = Math.max(1, evaluations - 1);
  const gpuMs = atLastStep.gpuMs - atFirstStep.gpuMs;
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
    previewEvery,
    dispatchesPerUnetCall: unetPlan.plan.dispatches.filter((d) => d.workgroups.every((n) => n > 0)).length,
    readbacksPerStep: +((atLastStep.readbacks - atFirstStep.readbacks) / later).toFixed(2),
    hostMsPerStep: +((atLastStep.at - atFirstStep.at - gpuMs) / later).toFixed(2),
    encodeMsPerStep: +((atLastStep.encodeMs - atFirstStep.encodeMs) / later).toFixed(2),
    gpuMsPerStep: +(gpuMs / later).toFixed(1),
    endToEndSeconds: +endToEnd.toFixed(2),
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
      "preview-every": { type: "string", default: "0" },
      preview: { type: "string" },
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
  const previewEvery = Number(values["preview-every"]);
  if (!(Number.isInteger(previewEvery) && previewEvery >= 0)) {
    throw new Error("--preview-every: an integer ≥ 0");
  }
  if (values.preview !== undefined && !PREVIEW_MODES.includes(values.preview as PreviewMode)) {
    throw new Error(`--preview must be one of ${PREVIEW_MODES.join(", ")}`);
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
    previewEvery,
    preview: values.preview as PreviewMode | undefined,
    tune: flags.tune,
    log: (line) => console.log(line),
  });
  console.log(`adapter:            ${r.adapter} (${r.precision} activations)`);
  console.log(
    `cold start:         ${r.coldStartSeconds} s (weights read + upload; autotune ${r.tuneSeconds} s)`,
  );
  console.log(
    `seconds/UNet step:  ${r.secondsPerUnetStep} (first step incl. plan build: ${r.firstStepSeconds} s; ` +
      `${r.dispatchesPerUnetCall} dispatches per UNet call)`,
  );
  console.log(
    `readbacks/step:     ${r.readbacksPerStep} (preview every ${previewEvery || "-"}; GPU → host copies)`,
  );
  console.log(
    `host ms/step:       ${r.hostMsPerStep} (${r.encodeMsPerStep} encoding compute passes; the rest of ` +
      `${r.gpuMsPerStep} ms in submits and GPU waits)`,
  );
  console.log(
    `end to end:         ${r.endToEndSeconds} s for ${r.size}, ${steps} steps, guidance ${guidance}`,
  );
  console.log(`GPU bytes:          ${(r.gpuBytes / 2 ** 30).toFixed(2)} GiB (weights + UNet activations)`);
  console.log(`process RSS:        ${(r.rssBytes / 2 ** 30).toFixed(2)} GiB`);
  console.log(JSON.stringify({ ...r, tune: undefined }));
  return 0;
}

/**
 * Counts readbacks (every GPU → host copy goes through `gpu.readBytes`) and the milliseconds spent on the GPU's
 * side: inside `queue.submit` (lavapipe runs the work there) and awaiting `onSubmittedWorkDone` and buffer
 * maps. Wall time minus that is the host's own time, of which `encodeMs` records compute passes (`gpu.run`).
 */
function instrument(gpu: Gpu): { readbacks: number; gpuMs: number; encodeMs: number } {
  const probe = { readbacks: 0, gpuMs: 0, encodeMs: 0 };
  const run = gpu.run.bind(gpu);
  gpu.run = (...a: Parameters<typeof run>) => {
    const t = performance.now();
    const gpuBefore = probe.gpuMs;
    run(...a);
    probe.encodeMs += performance.now() - t - (probe.gpuMs - gpuBefore);
  };
  const readBytes = gpu.readBytes.bind(gpu);
  gpu.readBytes = (...a: Parameters<typeof readBytes>) => {
    probe.readbacks++;
    return readBytes(...a);
  };
  const queue = gpu.device.queue;
  const submit = queue.submit.bind(queue);
  queue.submit = (buffers) => {
    const t = performance.now();
    submit(buffers);
    probe.gpuMs += performance.now() - t;
  };
  const done = queue.onSubmittedWorkDone.bind(queue);
  queue.onSubmittedWorkDone = () => {
    const t = performance.now();
    return done().finally(() => probe.gpuMs += performance.now() - t);
  };
  const mapAsync = GPUBuffer.prototype.mapAsync;
  GPUBuffer.prototype.mapAsync = function (this: GPUBuffer, ...a: Parameters<typeof mapAsync>) {
    const t = performance.now();
    return mapAsync.apply(this, a).finally(() => probe.gpuMs += performance.now() - t);
  };
  return probe;
}
