// The GPU sampler (pipeline/gpu_sampler.ts, ops/sampler.ts, shaders/sampler.wgsl) against the host
// schedulers, which stay the reference: every sampler's trajectory on the diffusers fixtures
// (tests/fixtures/schedulers, the stand-in model eps = 0.1·x + 0.05·sin(t/100 + k)) at N = 1, 4 and 20, and
// beyond the fixtures (clip_sample, v/sample prediction, CFG, a batch split over UNet calls, per-image
// blends and conditions, img2img starts, f16 UNet tensors) against the host step() as the pipeline ran it.
// The "UNet" here is the host stand-in: its input is read back and its output uploaded (a test's readbacks;
// the sampler itself reads nothing back).

import { ok as assert } from "node:assert/strict";
import { relError, testGpu } from "./util.ts";
import { f32 as tensorF32 } from "./sampling_fixtures.ts";
import { FILES, manifest, trajectories, xT } from "./scheduler_fixtures.ts";
import {
  createScheduler,
  type SamplerName,
  type Scheduler,
  type SchedulerConfig,
} from "../src/schedulers/index.ts";
import { GpuSampler, type LatentBlend } from "../src/pipeline/gpu_sampler.ts";
import { emptyTensor, readTensor, type Tensor, writeActivation } from "../src/gpu/tensor.ts";
import { nchwToNhwc, nhwcToNchw } from "../src/util/host_tensor.ts";
import type { ActDType } from "../src/gpu/pipelines.ts";
import { f16ToF32Array, f32ToF16Array, type Gpu } from "../src/gpu/device.ts";

const f = Math.fround;

/** The fixtures' stand-in UNet on one image (NCHW), in float32; `row` 1 (CFG's conditional half) differs. */
function standIn(x: Float32Array, t: number, row = 0): Float32Array {
  const out = new Float32Array(x.length);
  const tf = f(t);
  for (let k = 0; k < x.length; k++) {
    const a = f(f(tf / 100) + k);
    const eps = f(f(0.1 * x[k]) + f(0.05 * f(Math.sin(a))));
    out[k] = row === 0 ? eps : f(f(1.25 * eps) - f(0.02 * f(Math.cos(a))));
  }
  return out;
}

/** One UNet call's tensors for the fake model: NHWC [rows·k, h, w, cin] in, [rows·k, h, w, c] out. */
interface FakeCall {
  first: number;
  k: number;
  sample: Tensor;
  out: Tensor;
  pack: ReturnType<GpuSampler["pack"]>;
  update: ReturnType<GpuSampler["update"]>;
}

interface Run {
  scheduler: Scheduler;
  startIndex: number;
  latents: Float32Array;
  shape: [number, number, number, number];
  guidance: number;
  condition?: Float32Array;
  blend?: LatentBlend;
  /** Per evaluation, the noise of a step that draws. */
  noise: (index: number) => Float32Array;
  calls: number[];
  act: ActDType;
}

/** The GPU trajectory: latents after every evaluation (read back for the test), and the UNet inputs. */
async function gpuTrajectory(gpu: Gpu, r: Run): Promise<{ xs: Float32Array[]; inputs: Float32Array[] }> {
  const [count, c, h, w] = r.shape;
  const cin = c + (r.condition ? r.condition.length / (count * h * w) : 0);
  const rows = r.guidance > 1 ? 2 : 1;
  let index = r.startIndex;
  const sampler = new GpuSampler(gpu, {
    scheduler: r.scheduler,
    startIndex: r.startIndex,
    latents: r.latents,
    channels: c,
    latentSize: [h, w],
    guidanceScale: r.guidance,
    condition: r.condition,
    blend: r.blend,
    noise: () => r.noise(index),
    act: r.act,
  });
  const xs: Float32Array[] = [];
  const inputs: Float32Array[] = [];
  const made: Tensor[] = [];
  try {
    let first = 0;
    const calls: FakeCall[] = r.calls.map((k) => {
      const sample = emptyTensor(gpu, [rows * k, h, w, cin], r.act, "sample");
      const out = emptyTensor(gpu, [rows * k, h, w, c], r.act, "out");
      made.push(sample, out);
      const call = {
        first,
        k,
        sample,
        out,
        pack: sampler.pack(first, k, sample),
        update: sampler.update(first, k, out),
      };
      first += k;
      return call;
    });
    for (let i = r.startIndex; i < r.scheduler.timesteps.length; i++) {
      index = i;
      sampler.prepare(i);
      const t = r.scheduler.timesteps[i];
      const input = new Float32Array(count * cin * h * w);
      for (const call of calls) {
        gpu.run(call.pack);
        const x =
          nhwcToNchw({ shape: [rows * call.k, h, w, cin], data: await readTensor(gpu, call.sample) }).data;
        const out = new Float32Array(rows * call.k * c * h * w);
        for (let row = 0; row < rows * call.k; row++) {
          const image = x.subarray(row * cin * h * w, row * cin * h * w + c * h * w);
          out.set(standIn(image, t, Math.floor(row / call.k)), row * c * h * w);
          if (row < call.k) {
            input.set(
              x.subarray(row * cin * h * w, (row + 1) * cin * h * w),
              (call.first + row) * cin * h * w,
            );
          }
        }
        writeActivation(gpu, call.out, nchwToNhwc({ shape: [rows * call.k, c, h, w], data: out }).data);
        gpu.run(call.update);
      }
      inputs.push(input);
      xs.push(await sampler.read());
    }
  } finally {
    sampler.destroy();
    for (const t of made) t.destroy();
  }
  return { xs, inputs };
}

/** The host reference: the loop the pipeline ran before the GPU sampler (CFG and blend in float32). */
function hostTrajectory(r: Run, f16 = false): { xs: Float32Array[]; inputs: Float32Array[] } {
  const [count, c, h, w] = r.shape;
  const n = c * h * w;
  const plane = h * w;
  const cc = r.condition ? r.condition.length / (count * plane) : 0;
  const s = r.scheduler;
  const g = r.guidance;
  // f16 UNet tensors: the UNet sees its input and gives its output rounded to f16.
  const round = (a: Float32Array) => (f16 ? f16ToF32Array(f32ToF16Array(a)) : a);
  let latents = r.latents;
  const xs: Float32Array[] = [];
  const inputs: Float32Array[] = [];
  const last = s.timesteps.length - 1;
  for (let i = r.startIndex; i <= last; i++) {
    const x = s.scaleModelInput(latents, i);
    const input = new Float32Array(count * (c + cc) * plane);
    const pred = new Float32Array(count * n);
    for (let j = 0; j < count; j++) {
      const xi = round(x.slice(j * n, (j + 1) * n));
      input.set(xi, j * (c + cc) * plane);
      if (r.condition) {
        input.set(r.condition.subarray(j * cc * plane, (j + 1) * cc * plane), j * (c + cc) * plane + n);
      }
      const u = round(standIn(xi, s.timesteps[i], 0));
      if (g > 1) {
        const cond = round(standIn(xi, s.timesteps[i], 1));
        for (let e = 0; e < n; e++) pred[j * n + e] = f(u[e] + f(g * f(cond[e] - u[e])));
      } else pred.set(u, j * n);
    }
    inputs.push(input);
    latents = s.step(pred, i, latents, () => r.noise(i)).prevSample;
    if (r.blend) {
      const b = r.blend;
      const keep = i < last ? s.addNoise(b.original, b.noise, i + 1) : b.original;
      latents = latents.map((v, k) => f(f((1 - b.mask[k % plane]) * keep[k]) + f(b.mask[k % plane] * v)));
    }
    xs.push(latents);
  }
  return { xs, inputs };
}

for (const [file, sampler] of FILES) {
  Deno.test(`GPU sampler ${file} (${sampler}) follows the fixtures and the host step at N = 1, 4, 20`, async () => {
    const gpu = await testGpu();
    const info = manifest.schedulers[file];
    const tensors = trajectories(file);
    const worst: string[] = [];
    for (const n of [1, 4, 20]) {
      const noise = tensors.get(`n${n}.noise`);
      const noiseStep = (tensors.get(`n${n}.noise_step`)?.data ?? []) as number[];
      let draws = 0;
      const run = (): Run => {
        const scheduler = createScheduler(sampler, info.config_passed as SchedulerConfig);
        scheduler.setTimesteps(n);
        draws = 0;
        return {
          scheduler,
          startIndex: 0,
          latents: xT.map((v) => v * scheduler.initNoiseSigma),
          shape: [1, 4, 8, 8],
          guidance: 1,
          noise: (i) => {
            assert(noise && noiseStep[draws] === i, `${file} N=${n}: unexpected draw at step ${i}`);
            const size = xT.length;
            return tensorF32(noise, "noise").slice(draws * size, ++draws * size);
          },
          calls: [1],
          act: "f32",
        };
      };
      const got = await gpuTrajectory(gpu, run());
      assert(draws === noiseStep.length, `${file} N=${n}: ${draws} draws, want ${noiseStep.length}`);
      const host = hostTrajectory(run());
      const xs = tensorF32(tensors.get(`n${n}.x`), "x");
      const refInputs = tensorF32(tensors.get(`n${n}.model_input`), "model_input");
      let errFixture = 0;
      let errHost = 0;
      got.xs.forEach((x, i) => {
        const size = x.length;
        const e1 = relError(x, xs.subarray((i + 1) * size, (i + 2) * size));
        const e2 = relError(x, host.xs[i]);
        const e3 = relError(got.inputs[i], refInputs.subarray(i * size, (i + 1) * size));
        assert(e1 <= 1e-5, `${file} N=${n} x[${i + 1}]: ${e1.toExponential(2)} from the fixture`);
        assert(e2 <= 1e-5, `${file} N=${n} x[${i + 1}]: ${e2.toExponential(2)} from the host step`);
        assert(e3 <= 1e-5, `${file} N=${n} model_input[${i}]: ${e3.toExponential(2)}`);
        errFixture = Math.max(errFixture, e1);
        errHost = Math.max(errHost, e2);
      });
      worst.push(`N=${n}: fixture ${errFixture.toExponential(1)}, host ${errHost.toExponential(1)}`);
    }
    console.log(`  ${file}: ${worst.join(" | ")}`);
  });
}

interface Case {
  name: string;
  sampler: SamplerName;
  config?: SchedulerConfig;
  eta?: number;
  steps: number;
  strength?: number;
  /** Images (1). */
  count?: number;
  /** Images per UNet call (all in one). */
  calls?: number[];
  /** CFG scale (1: none). */
  guidance?: number;
  /** [h, w] ([4, 4]). */
  size?: [number, number];
  conditionChannels?: number;
  blend?: boolean;
  act?: ActDType;
}

const SD: SchedulerConfig = manifest.sd15_scheduler_config;
const CASES: Case[] = [
  {
    name: "ddim, clip_sample, sample prediction, eta 0.5, CFG, 2 images in 2 calls, img2img",
    sampler: "ddim",
    config: { ...SD, clip_sample: true, clip_sample_range: 1.5, prediction_type: "sample" },
    eta: 0.5,
    steps: 6,
    strength: 0.7,
    count: 2,
    calls: [1, 1],
    guidance: 7.5,
    size: [4, 6],
  },
  {
    name: "ddpm, clip_sample, v-prediction, fixed_large",
    sampler: "ddpm",
    config: { ...SD, clip_sample: true, prediction_type: "v_prediction", variance_type: "fixed_large" },
    steps: 5,
  },
  {
    name: "heun, clip_sample, v-prediction, CFG, img2img (both orders from a first-order start)",
    sampler: "heun",
    config: { ...SD, clip_sample: true, prediction_type: "v_prediction" },
    steps: 5,
    strength: 0.6,
    count: 2,
    guidance: 4,
    size: [2, 8],
  },
  {
    name: "lcm, clip_sample, sample prediction, 3 images in calls of 2 and 1",
    sampler: "lcm",
    config: { ...SD, clip_sample: true, prediction_type: "sample" },
    steps: 4,
    count: 3,
    calls: [2, 1],
    guidance: 1.5,
  },
  {
    name: "dpmpp_2m, v-prediction, heun solver, sigma_min final, img2img",
    sampler: "dpmpp_2m",
    config: { ...SD, prediction_type: "v_prediction", solver_type: "heun", final_sigmas_type: "sigma_min" },
    steps: 7,
    strength: 0.8,
    guidance: 3,
  },
  {
    name: "dpmpp_2m_karras, 16 steps (second-order last step), CFG",
    sampler: "dpmpp_2m_karras",
    config: { ...SD, final_sigmas_type: "sigma_min" },
    steps: 16,
    guidance: 7.5,
  },
  {
    name: "unipc, v-prediction, bh1, a disabled corrector, img2img",
    sampler: "unipc",
    config: { ...SD, prediction_type: "v_prediction", solver_type: "bh1", disable_corrector: [3] },
    steps: 8,
    strength: 0.9,
    count: 2,
    calls: [1, 1],
    guidance: 2,
  },
  {
    name: "pndm, v-prediction, CFG, 3 images, img2img",
    sampler: "pndm",
    config: { ...SD, prediction_type: "v_prediction" },
    steps: 9,
    strength: 0.8,
    count: 3,
    calls: [2, 1],
    guidance: 6,
  },
  {
    name: "euler_a, v-prediction, the 4-channel inpainting blend, 2 images, CFG",
    sampler: "euler_a",
    config: { ...SD, prediction_type: "v_prediction" },
    steps: 5,
    count: 2,
    calls: [1, 1],
    guidance: 5,
    size: [4, 6],
    blend: true,
  },
  {
    name: "ddim, the 4-channel blend on the alpha scale, img2img",
    sampler: "ddim",
    steps: 5,
    strength: 0.8,
    blend: true,
  },
  {
    name: "unipc, the blend on the multistep scale",
    sampler: "unipc",
    steps: 4,
    blend: true,
  },
  {
    name: "euler, the 9-channel inpainting input (mask and masked latents appended), CFG, 2 images",
    sampler: "euler",
    steps: 4,
    count: 2,
    calls: [1, 1],
    guidance: 7.5,
    size: [4, 6],
    conditionChannels: 5,
  },
  {
    name: "euler_a, f16 UNet tensors, CFG, 2 images in one call",
    sampler: "euler_a",
    steps: 4,
    count: 2,
    guidance: 7.5,
    size: [8, 8],
    act: "f16",
  },
];

/** Deterministic values in [-scale, scale). */
function values(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32 * 2 - 1) * scale;
  });
}

for (const c of CASES) {
  Deno.test(`GPU sampler equals the host step: ${c.name}`, async () => {
    const gpu = await testGpu();
    const act = c.act ?? "f32";
    if (act === "f16" && !gpu.f16) {
      console.log("  (no shader-f16 on this adapter: skipped)");
      return;
    }
    const count = c.count ?? 1;
    const [h, w] = c.size ?? [4, 4];
    const C = 4;
    const n = count * C * h * w;
    const run = (): Run => {
      const scheduler = createScheduler(c.sampler, c.config ?? SD, { eta: c.eta });
      scheduler.setTimesteps(c.steps);
      const startIndex = c.strength === undefined
        ? 0
        : (c.steps - Math.min(Math.floor(c.steps * c.strength), c.steps)) * scheduler.order;
      const original = values(n, 7, 1.5);
      const noise0 = values(n, 8);
      const latents = c.strength === undefined && !c.blend
        ? noise0.map((v) => v * scheduler.initNoiseSigma)
        : scheduler.addNoise(original, noise0, startIndex);
      const mask = Float32Array.from({ length: h * w }, (_, k) => (k % w < w / 2 ? 1 : 0));
      return {
        scheduler,
        startIndex,
        latents,
        shape: [count, C, h, w],
        guidance: c.guidance ?? 1,
        condition: c.conditionChannels ? values(count * c.conditionChannels * h * w, 9) : undefined,
        blend: c.blend ? { original, noise: noise0, mask } : undefined,
        noise: (i) => values(n, 100 + i),
        calls: c.calls ?? [count],
        act,
      };
    };
    const got = await gpuTrajectory(gpu, run());
    const want = hostTrajectory(run(), act === "f16");
    assert(got.xs.length === want.xs.length && got.xs.length > 0, "evaluations");
    let worst = 0;
    got.xs.forEach((x, i) => {
      const inputErr = relError(got.inputs[i], want.inputs[i]);
      assert(inputErr <= (act === "f16" ? 1e-3 : 1e-5), `UNet input ${i}: ${inputErr.toExponential(2)}`);
      const e = relError(x, want.xs[i]);
      assert(e <= 1e-5, `evaluation ${i}: ${e.toExponential(2)} from the host step`);
      worst = Math.max(worst, e);
    });
    console.log(`  ${got.xs.length} evaluations, worst ${worst.toExponential(1)}`);
  });
}
