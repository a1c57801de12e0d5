// `bench [--model DIR] [--width W --height H] [--steps N] [--guidance G] [--sampler S] [--preview-every K
// --preview cheap|taesd|vae]`: end-to-end figures on a model folder; without --model, synthetic full-size
// SD 1.5 weights are written to weights/synth-sd15 first. Prints cold start (weights read + upload), seconds
// per UNet evaluation, the denoising loop's GPU readbacks per step (0 without previews: the latents stay on
// the GPU) and host milliseconds per step (outside awaits on the GPU), end-to-end seconds, GPU bytes and
// process RSS. One JSON line follows for scripts. Per-step figures leave out the first step (plan build).

import { parseArgs } from "node:util";
import { Gpu } from "../gpu/device.ts";
import { loadPipeline } from "../pipeline/load.ts";
import { synthWeightsMain } from "./synth_weights.ts";
import { PREVIEW_MODES, type PreviewMode, SAMPLER_NAMES, type SamplerName } from "../pipeline/types.ts";

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
  const precision = values.precision as "f32" | "f16" | undefined;
  if (precision !== undefined && precision !== "f32" && precision !== "f16") {
    throw new Error("--precision must be f32 or f16");
  }
  let model = values.model;
  if (!model) {
    model = values["synth-dir"]!;
    try {
      await Deno.stat(`${model}/model_index.json`);
    } catch {
      console.log(`writing synthetic SD 1.5 weights to ${model} ...`);
      const code = await synthWeightsMain(["--model", "sd15", "--out", model]);
      if (code !== 0) return code;
    }
  }
  const rss0 = Deno.memoryUsage().rss;
  const t0 = performance.now();
  const gpu = await Gpu.create({ disableF16: values["no-f16"] });
  const pipeline = await loadPipeline(gpu, model, { precision });
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
  for await (
    const ev of pipeline.generate({
      prompt: "a photograph of an astronaut riding a horse",
      width,
      height,
      steps,
      guidanceScale: guidance,
      sampler: values.sampler as SamplerName,
      seed: 0,
      previewEvery,
      preview: values.preview as PreviewMode | undefined,
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
  const report = {
    adapter: gpu.report.adapter.description || gpu.report.adapter.vendor,
    precision: pipeline.parts.unet.act,
    size: `${width}x${height}`,
    steps,
    guidance,
    coldStartSeconds: +coldStart.toFixed(2),
    secondsPerUnetStep: +perStep.toFixed(3),
    firstStepSeconds: +(firstStepMs / 1000).toFixed(2),
    previewEvery,
    readbacksPerStep: +((atLastStep.readbacks - atFirstStep.readbacks) / later).toFixed(2),
    hostMsPerStep: +((atLastStep.at - atFirstStep.at - gpuMs) / later).toFixed(2),
    encodeMsPerStep: +((atLastStep.encodeMs - atFirstStep.encodeMs) / later).toFixed(2),
    gpuMsPerStep: +(gpuMs / later).toFixed(1),
    endToEndSeconds: +endToEnd.toFixed(2),
    gpuBytes: pipeline.gpuBytes(),
    rssBytes: Deno.memoryUsage().rss,
    rssGrowthBytes: Deno.memoryUsage().rss - rss0,
  };
  console.log(`adapter:            ${report.adapter} (${report.precision} activations)`);
  console.log(`cold start:         ${report.coldStartSeconds} s (weights read + upload)`);
  console.log(
    `seconds/UNet step:  ${report.secondsPerUnetStep} (first step incl. plan build: ${report.firstStepSeconds} s)`,
  );
  console.log(
    `readbacks/step:     ${report.readbacksPerStep} (preview every ${
      previewEvery || "-"
    }; GPU → host copies)`,
  );
  console.log(
    `host ms/step:       ${report.hostMsPerStep} (${report.encodeMsPerStep} encoding compute passes; the rest of ` +
      `${report.gpuMsPerStep} ms in submits and GPU waits)`,
  );
  console.log(
    `end to end:         ${report.endToEndSeconds} s for ${report.size}, ${steps} steps, guidance ${guidance}`,
  );
  console.log(
    `GPU bytes:          ${(report.gpuBytes / 2 ** 30).toFixed(2)} GiB (weights + UNet activations)`,
  );
  console.log(`process RSS:        ${(report.rssBytes / 2 ** 30).toFixed(2)} GiB`);
  console.log(JSON.stringify(report));
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
