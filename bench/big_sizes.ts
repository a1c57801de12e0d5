// `deno task bench:big [--weights DIR] [--vae f16,f32] [--vae-sizes 64,96] [--unet f16] [--unet-size 96]`
//
// Full-size SD 1.5 (synthetic weights, written to weights/synth-sd15 on first use) at sizes whose feature
// maps exceed one 128 MiB storage binding on lavapipe: VAE decode to 512² and 768² (row-banded conv2d,
// groupNorm and upsample; [1, 768, 768, 256] is 604 MiB in f32) and one batch-2 UNet eval at a 96×96 latent
// (768² images). Each row: plan build time, one run (submit → queue idle; pipelines are compiled at build
// time), effective GFLOP/s, activation bytes of the plan, weight bytes on the GPU, process RSS now and at
// its peak (lavapipe's GPU memory is host memory, so RSS includes it). A measurement, not a test: each
// row runs once, so timings carry the noise of a shared machine. `--vae none` / `--unet none` skip a part.

import { parseArgs } from "node:util";
import { Gpu } from "../src/gpu/device.ts";
import type { ActDType } from "../src/gpu/pipelines.ts";
import { readTensor } from "../src/gpu/tensor.ts";
import { parseUNetConfig } from "../src/models/unet/config.ts";
import { parseVaeConfig } from "../src/models/vae/config.ts";
import { writeActivation } from "../src/gpu/tensor.ts";
import { unetFlops, vaeDecodeFlops } from "../src/models/flops.ts";
import { Weights } from "../src/models/weights.ts";
import { UNet } from "../src/models/unet/unet.ts";
import { Vae } from "../src/models/vae/vae.ts";
import { readJsonFile } from "../src/util/json.ts";
import { expectedTensors, isIgnorableTensor } from "../src/models/expected.ts";
import { SafetensorsFile } from "../src/weights/safetensors.ts";
import { synthWeightsMain } from "../src/commands/synth_weights.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    weights: { type: "string", default: "weights/synth-sd15" },
    vae: { type: "string", default: "f16,f32" },
    "vae-sizes": { type: "string", default: "64,96" },
    unet: { type: "string" },
    "unet-size": { type: "string", default: "96" },
  },
});
const dir = values.weights!;
try {
  await Deno.stat(`${dir}/model_index.json`);
} catch {
  console.log(`writing synthetic SD 1.5 weights to ${dir} ...`);
  const code = await synthWeightsMain(["--model", "sd15", "--out", dir]);
  if (code !== 0) Deno.exit(code);
}

const gpu = await Gpu.create();
const precisions = (list: string): ActDType[] =>
  list === "none" ? [] : list.split(",").map((p) => {
    if (p !== "f32" && p !== "f16") throw new Error(`precision must be f32 or f16, got ${p}`);
    if (p === "f16" && !gpu.f16) throw new Error("f16 activations need shader-f16, which this adapter lacks");
    return p;
  });
const vaePrecisions = precisions(values.vae!);
const vaeSizes = values["vae-sizes"]!.split(",").map(Number);
const unetPrecisions = precisions(values.unet ?? (gpu.f16 ? "f16" : "f32"));
const unetSize = Number(values["unet-size"]);

const GiB = 2 ** 30;
const MiB = 2 ** 20;
const gib = (bytes: number) => `${(bytes / GiB).toFixed(2)} GiB`;

/** Peak resident set size of this process (VmHWM), or NaN off Linux. */
function peakRss(): number {
  try {
    const m = Deno.readTextFileSync("/proc/self/status").match(/VmHWM:\s+(\d+) kB/);
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

const memory = () => `RSS ${gib(Deno.memoryUsage().rss)} (peak ${gib(peakRss())})`;

/** Deterministic values in [-scale, scale) without a slow host loop per element. */
function filled(n: number, scale: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.sin(i * 0.7531 + seed) * scale;
  return a;
}

/** Finite-ness and spread of an output, so a row cannot pass on zeros or NaN unnoticed. */
function summary(data: Float32Array): string {
  let sum = 0;
  let sq = 0;
  let bad = 0;
  for (const v of data) {
    if (!Number.isFinite(v)) bad++;
    else {
      sum += v;
      sq += v * v;
    }
  }
  const n = data.length - bad;
  const mean = sum / n;
  return `mean ${mean.toFixed(3)} std ${Math.sqrt(sq / n - mean * mean).toFixed(3)}${
    bad ? `, ${bad} non-finite` : ""
  }`;
}

interface Row {
  what: string;
  buildS: number;
  runS: number;
  gflop: number;
  activations: number;
  dispatches: number;
  rss: string;
  note: string;
}
const rows: Row[] = [];

function print(r: Row): void {
  console.log(
    `${r.what}: build ${r.buildS.toFixed(1)} s, run ${r.runS.toFixed(1)} s ` +
      `(${(r.gflop / r.runS).toFixed(1)} GFLOP/s of ${
        r.gflop.toFixed(0)
      } GFLOP), ${r.dispatches} dispatches, ` +
      `activations ${gib(r.activations)}, ${r.rss}; output ${r.note}`,
  );
}

async function loadWeights(component: "vae" | "unet", config: Parameters<typeof expectedTensors>[1]) {
  using file = await SafetensorsFile.open(`${dir}/${component}/diffusion_pytorch_model.safetensors`);
  const t0 = performance.now();
  const w = await Weights.load(gpu, component, file, expectedTensors(component, config), {
    allowExtra: (n) => isIgnorableTensor(component, n),
  });
  await gpu.sync();
  console.log(
    `${component} weights uploaded in ${((performance.now() - t0) / 1000).toFixed(1)} s: ` +
      `${gib(w.bytes)} on the GPU as loaded; ${memory()}`,
  );
  return w;
}

console.log(`adapter: ${gpu.report.adapter.description}; storage binding limit ${gpu.maxBinding / MiB} MiB`);
console.log(`start: ${memory()}`);

if (vaePrecisions.length) {
  const config = parseVaeConfig(await readJsonFile(`${dir}/vae/config.json`));
  const weights = await loadWeights("vae", config);
  for (const act of vaePrecisions) {
    const vae = new Vae(gpu, config, weights, act);
    for (const s of vaeSizes) {
      const what = `VAE decode ${s}×${s} → ${8 * s}² (${act})`;
      try {
        let t = performance.now();
        const p = await gpu.scoped(what, () => vae.decodePlan(s, s));
        const buildS = (performance.now() - t) / 1000;
        writeActivation(gpu, p.z, filled(s * s * config.latent_channels, 1, 1));
        t = performance.now();
        p.plan.run(what);
        await gpu.sync(what);
        const runS = (performance.now() - t) / 1000;
        const rss = memory();
        const image = await readTensor(gpu, p.image);
        const r: Row = {
          what,
          buildS,
          runS,
          gflop: vaeDecodeFlops(config, s, s) / 1e9,
          activations: p.plan.bytes,
          dispatches: p.plan.dispatches.length,
          rss,
          note: summary(image),
        };
        rows.push(r);
        print(r);
      } catch (e) {
        console.log(`${what}: FAILED: ${(e as Error).message}`);
      }
      vae.dropPlans();
    }
  }
  console.log(`VAE weights after repacking: ${gib(weights.bytes)} on the GPU`);
  weights.destroy();
  await gpu.sync();
}

for (const act of unetPrecisions) {
  const config = parseUNetConfig(await readJsonFile(`${dir}/unet/config.json`));
  const weights = await loadWeights("unet", config);
  const unet = new UNet(gpu, config, weights, act);
  const s = unetSize;
  const what = `UNet eval, batch 2, ${s}×${s} latent (${8 * s}²) (${act})`;
  try {
    let t = performance.now();
    const p = await gpu.scoped(what, () => unet.plan(2, s, s, 77));
    const buildS = (performance.now() - t) / 1000;
    console.log(`UNet weights after repacking: ${gib(weights.bytes)} on the GPU`);
    writeActivation(gpu, p.sample, filled(2 * s * s * config.in_channels, 1, 2));
    gpu.device.queue.writeBuffer(p.timestep.buffer, 0, new Float32Array([500, 500]));
    writeActivation(gpu, p.context, filled(p.context.numel, 1, 3));
    t = performance.now();
    p.plan.run(what);
    await gpu.sync(what);
    const runS = (performance.now() - t) / 1000;
    const rss = memory();
    const out = await readTensor(gpu, p.out);
    const r: Row = {
      what,
      buildS,
      runS,
      gflop: unetFlops(config, 2, s, s) / 1e9,
      activations: p.plan.bytes,
      dispatches: p.plan.dispatches.length,
      rss,
      note: summary(out),
    };
    rows.push(r);
    print(r);
  } catch (e) {
    console.log(`${what}: FAILED: ${(e as Error).message}`);
  }
  unet.dropPlans();
  weights.destroy();
  await gpu.sync();
}

console.log("");
console.log("| what | build s | run s | GFLOP/s | activations | memory |");
console.log("|---|---:|---:|---:|---:|---|");
for (const r of rows) {
  console.log(
    `| ${r.what} | ${r.buildS.toFixed(1)} | ${r.runS.toFixed(1)} | ${(r.gflop / r.runS).toFixed(1)} | ` +
      `${gib(r.activations)} | ${r.rss} |`,
  );
}
gpu.destroy();
