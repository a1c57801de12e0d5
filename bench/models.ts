// `deno task bench:models [--weights DIR] [--taesd DIR] [--skip-64] [--skip-vae-512] [--skip-lora] [--profile]`:
// full-size SD 1.5 (synthetic weights, written to weights/synth-sd15 on first use) — CLIP on 2×77 tokens, one
// batch-2 UNet eval at 32×32 and 64×64 latents, VAE decode to 256² and 512², the cheap preview's cost, TAESD
// (synthetic weights of the real shapes, weights/synth-taesd): a preview and a full decode to 256² and 512²,
// each as a share of the UNet step of that size, and switching LoRA sets (bench/lora_switch.ts) against one
// 256² UNet eval — in seconds and effective GFLOP/s next to numpy's float32 matmul GFLOP/s measured in the same
// run.
//
// --profile adds a per-kernel-family breakdown of the 32×32 UNet eval from GPU timestamps, which separates
// GEMM time from norms/elementwise/attention time and per-dispatch overhead.

import { parseArgs } from "node:util";
import { Gpu } from "../src/gpu/device.ts";
import { loadPipeline } from "../src/pipeline/load.ts";
import { synthWeightsMain } from "../src/commands/synth_weights.ts";
import { clipFlops, taesdDecodeFlops, unetFlops, vaeDecodeFlops } from "../src/models/flops.ts";
import { loadTaesd } from "../src/models/taesd/load.ts";
import { previewLatentSize, taesdPreview } from "../src/pipeline/taesd.ts";
import { encodeImage, latentPreview } from "../src/image/convert.ts";
import { numpyMatmulGflops } from "./numpy.ts";
import { uploadTensor } from "../src/gpu/tensor.ts";
import { linear } from "../src/ops/linear.ts";
import { loraSwitchBench } from "./lora_switch.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    weights: { type: "string", default: "weights/synth-sd15" },
    taesd: { type: "string", default: "weights/synth-taesd" },
    "skip-64": { type: "boolean" },
    "skip-vae-512": { type: "boolean" },
    "skip-lora": { type: "boolean" },
    profile: { type: "boolean" },
    precision: { type: "string" },
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

const taesdDir = values.taesd!;
try {
  await Deno.stat(`${taesdDir}/config.json`);
} catch {
  console.log(`writing synthetic TAESD weights to ${taesdDir} ...`);
  const code = await synthWeightsMain(["--model", "taesd", "--out", taesdDir]);
  if (code !== 0) Deno.exit(code);
}

const gpu = await Gpu.create();
const precision = (values.precision ?? (gpu.f16 ? "f16" : "f32")) as "f32" | "f16";
const rssBefore = Deno.memoryUsage().rss;
const t = performance.now();
const pipe = await loadPipeline(gpu, dir, { precision });
await gpu.sync();
const coldStart = (performance.now() - t) / 1000;
const { unet, vae, textEncoder } = pipe.parts;
console.log(`adapter: ${gpu.report.adapter.description}; activations ${precision}`);
console.log(
  `cold start (weights read + upload): ${coldStart.toFixed(1)} s; weights on GPU ${
    (pipe.gpuBytes() / 2 ** 30).toFixed(2)
  } GiB`,
);

interface Row {
  what: string;
  seconds: number;
  gflop: number;
}
const rows: Row[] = [];

async function time(run: () => void): Promise<number> {
  const t0 = performance.now();
  run();
  await gpu.sync();
  return (performance.now() - t0) / 1000;
}

// CLIP 2×77
{
  const p = textEncoder.plan(2, 77);
  gpu.device.queue.writeBuffer(p.ids.buffer, 0, new Uint32Array(2 * 77).fill(49407));
  await time(() => p.plan.run("clip warm-up"));
  rows.push({
    what: "CLIP text encoder, 2×77 tokens",
    seconds: await time(() => p.plan.run("clip")),
    gflop: clipFlops(textEncoder.config, 2, 77) / 1e9,
  });
}

// UNet batch 2
const unetSizes = values["skip-64"] ? [32] : [32, 64];
let unet32Seconds = 0;
/** Seconds of one batch-2 UNet eval by latent size: the step TAESD's costs are shares of. */
const unetSeconds = new Map<number, number>();
for (const s of unetSizes) {
  const p = unet.plan(2, s, s, 77);
  gpu.device.queue.writeBuffer(p.timestep.buffer, 0, new Float32Array([500, 500]));
  if (s === 32) await time(() => p.plan.run("unet warm-up"));
  const seconds = await time(() => p.plan.run("unet"));
  if (s === 32) unet32Seconds = seconds;
  unetSeconds.set(s, seconds);
  rows.push({
    what: `UNet eval, batch 2, ${s}×${s} latent (${s * 8}² image)`,
    seconds,
    gflop: unetFlops(unet.config, 2, s, s) / 1e9,
  });
  console.log(
    `  UNet ${s}×${s}: ${p.plan.dispatches.length} dispatches, ${
      (p.plan.bytes / 2 ** 20).toFixed(0)
    } MiB activations`,
  );
  unet.dropPlans();
}

// LoRA set switches, against the 256² UNet eval just measured.
if (!values["skip-lora"]) await loraSwitchBench(gpu, pipe, unet32Seconds);

// VAE decode
for (const s of values["skip-vae-512"] ? [32] : [32, 64]) {
  try {
    const p = vae.decodePlan(s, s);
    rows.push({
      what: `VAE decode to ${s * 8}²`,
      seconds: await time(() => p.plan.run("vae")),
      gflop: vaeDecodeFlops(vae.config, s, s) / 1e9,
    });
    vae.dropPlans();
  } catch (e) {
    console.log(`  VAE decode to ${s * 8}²: ${(e as Error).message}`);
  }
}

// Cheap preview at 64×64 latents, as a share of one 64×64 (or 32×32) step.
{
  const latents = new Float32Array(4 * 64 * 64).map((_, i) => Math.sin(i));
  const t0 = performance.now();
  const reps = 10;
  for (let i = 0; i < reps; i++) encodeImage(latentPreview(latents, 64, 64, 4), "jpeg");
  const ms = (performance.now() - t0) / reps;
  const stepRow = rows.find((r) => r.what.includes("64×64")) ?? rows.find((r) => r.what.includes("32×32"))!;
  console.log(
    `cheap preview (64×64 latent → 256² JPEG): ${ms.toFixed(1)} ms = ${
      (100 * ms / 1000 / stepRow.seconds).toFixed(3)
    } % of a step (${stepRow.what})`,
  );
}

// TAESD at 32×32 and 64×64 latents: a preview as the pipeline makes it (2×2-pooled latents decoded, read
// back, JPEG-encoded) and a full decode (--decoder taesd, GPU time), as shares of the UNet step of that size.
{
  const taesd = await loadTaesd(gpu, taesdDir, precision);
  for (const s of values["skip-64"] ? [32] : [32, 64]) {
    const latents = new Float32Array(4 * s * s).map((_, i) => 2 * Math.sin(i));
    const preview = async () => encodeImage(await taesdPreview(gpu, taesd, latents, s, s), "jpeg");
    await preview(); // builds the plan, compiles the kernels
    const t0 = performance.now();
    await preview();
    const previewSeconds = (performance.now() - t0) / 1000;
    const full = taesd.decodePlan(s, s);
    await time(() => full.plan.run("taesd warm-up"));
    const fullSeconds = await time(() => full.plan.run("taesd"));
    const [ph, pw] = previewLatentSize(s, s);
    rows.push({
      what: `TAESD decode to ${s * 8}² (--decoder taesd)`,
      seconds: fullSeconds,
      gflop: taesdDecodeFlops(taesd.config, s, s) / 1e9,
    });
    const step = unetSeconds.get(s);
    const share = (x: number) => step ? `${(100 * x / step).toFixed(2)} %` : "n/a (no UNet row at this size)";
    console.log(
      `TAESD preview for ${s * 8}² (${ph}×${pw} latent → ${ph * 8}×${pw * 8} JPEG, ${
        (taesdDecodeFlops(taesd.config, ph, pw) / 1e9).toFixed(1)
      } GFLOP): ${(previewSeconds * 1000).toFixed(0)} ms = ${share(previewSeconds)} of a UNet step; ` +
        `full decode ${(fullSeconds * 1000).toFixed(0)} ms = ${share(fullSeconds)}`,
    );
    taesd.dropPlans();
  }
  taesd.weights.destroy();
}

// The op set's own matmul on the same adapter and precision, in this run: the UNet's effective rate is
// judged against it (the gap is dispatch overhead and work that is not a GEMM).
let opMatmul = 0;
{
  const [m, k, n] = [8192, 320, 1280];
  const x = uploadTensor(gpu, new Float32Array(m * k).fill(0.01), [m, k], precision);
  const w = uploadTensor(gpu, new Float32Array(n * k).fill(0.01), [n, k], "f16");
  const out = uploadTensor(gpu, new Float32Array(m * n), [m, n], precision);
  const reps = 5;
  const ds = Array.from({ length: reps }, () => linear(gpu, { x, weight: w, out, act: precision })).flat();
  await time(() => gpu.run(ds.slice(0, ds.length / reps), "matmul warm-up"));
  const seconds = await time(() => gpu.run(ds, "matmul"));
  opMatmul = (2 * m * k * n * reps) / seconds / 1e9;
  console.log(`op set linear [8192, 320]·[1280, 320]ᵀ (${precision}): ${opMatmul.toFixed(1)} GFLOP/s`);
}

const np = await numpyMatmulGflops([[1024, 1024, 1024], [8192, 320, 1280], [2048, 1280, 1280]]);
const numpyBest = "error" in np ? null : Math.max(...np.gflops.values());
console.log("");
console.log("| what | seconds | GFLOP | effective GFLOP/s | vs numpy |");
console.log("|---|---:|---:|---:|---:|");
for (const r of rows) {
  const g = r.gflop / r.seconds;
  console.log(
    `| ${r.what} | ${r.seconds.toFixed(3)} | ${r.gflop.toFixed(1)} | ${g.toFixed(2)} | ${
      numpyBest ? (g / numpyBest).toFixed(3) : "n/a"
    } |`,
  );
}
if ("error" in np) console.log(`numpy: ${np.error}`);
else {console.log(
    `numpy float32 matmul (best of 1024³, 8192×320×1280, 2048×1280×1280): ${
      numpyBest!.toFixed(1)
    } GFLOP/s (${np.kernel})`,
  );}
const unetRow = rows.find((r) => r.what.startsWith("UNet"));
if (unetRow) {
  const g = unetRow.gflop / unetRow.seconds;
  console.log(
    `UNet effective / op-set matmul: ${(g / opMatmul).toFixed(3)}; UNet effective / numpy: ${
      numpyBest ? (g / numpyBest).toFixed(3) : "n/a"
    }`,
  );
}
console.log(`process RSS growth: ${((Deno.memoryUsage().rss - rssBefore) / 2 ** 30).toFixed(2)} GiB`);

if (values.profile) {
  const p = unet.plan(2, 32, 32, 77);
  const prof = await gpu.profile(p.plan.dispatches);
  if (!prof) console.log("profile: timestamp-query not available");
  else {
    const total = prof.reduce((a, b) => a + b.ms, 0);
    const byFamily = new Map<string, { ms: number; n: number }>();
    for (const { label, ms } of prof) {
      const fam = label.split(":")[0];
      const e = byFamily.get(fam) ?? { ms: 0, n: 0 };
      e.ms += ms;
      e.n++;
      byFamily.set(fam, e);
    }
    console.log(
      `\nUNet 32×32 by kernel family (sum of per-dispatch GPU time ${(total / 1000).toFixed(2)} s vs ${
        unet32Seconds.toFixed(2)
      } s in one pass):`,
    );
    for (const [fam, e] of [...byFamily].sort((a, b) => b[1].ms - a[1].ms)) {
      console.log(
        `  ${fam.padEnd(24)} ${(e.ms / 1000).toFixed(3)} s  ${e.n} dispatches  ${
          (100 * e.ms / total).toFixed(1)
        } %`,
      );
    }
  }
}
