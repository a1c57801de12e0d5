// Schedulers against diffusers 0.27.2 golden trajectories (tests/fixtures/schedulers, see the golden README):
// timesteps, sigmas, init_noise_sigma, and whole sampling loops with the stand-in model
// eps = 0.1·x + 0.05·sin(t/100 + k) (float32), replaying the recorded noise draws in order.

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import {
  betaSchedule,
  createScheduler,
  img2imgSchedule,
  type SchedulerConfig,
} from "../src/schedulers/index.ts";
import { resolveConfig } from "../src/schedulers/common.ts";
import { f32 as tensorF32, type FixtureTensor } from "./sampling_fixtures.ts";
import { relError } from "./util.ts";
import { common, FILES, manifest, trajectories, xT } from "./scheduler_fixtures.ts";

const f = Math.fround;

const STEPS = [1, 4, 20, 50];

/** The README's stand-in UNet, in float32: a = t/100; a = a + k; eps = 0.1·x + 0.05·sin(a). */
function standIn(x: Float32Array, t: number): Float32Array {
  const out = new Float32Array(x.length);
  const tf = f(t);
  for (let k = 0; k < x.length; k++) {
    const a = f(f(tf / 100) + k);
    out[k] = f(f(0.1 * x[k]) + f(0.05 * f(Math.sin(a))));
  }
  return out;
}

function slice(t: FixtureTensor, i: number): Float32Array {
  const data = tensorF32(t, "slice");
  const size = data.length / t.shape[0];
  return data.subarray(i * size, (i + 1) * size);
}

let checks = 0;
function check(condition: boolean, message: string): void {
  assert(condition, message);
  checks++;
}

Deno.test("schedulers: betas and alphas_cumprod equal the float32 fixtures", () => {
  const config = resolveConfig("test", {
    num_train_timesteps: 0,
    beta_start: 0,
    beta_end: 0,
    beta_schedule: "",
    trained_betas: null,
    prediction_type: "epsilon",
    timestep_spacing: "leading",
    steps_offset: 0,
  }, manifest.sd15_scheduler_config);
  const { betas, alphasCumprod } = betaSchedule(config);
  const refBetas = tensorF32(common.get("betas"), "betas");
  const refAcp = tensorF32(common.get("alphas_cumprod"), "alphas_cumprod");
  check(relError(betas, refBetas) <= 1e-6, `betas rel error ${relError(betas, refBetas)}`);
  check(
    relError(alphasCumprod, refAcp) <= 1e-6,
    `alphas_cumprod rel error ${relError(alphasCumprod, refAcp)}`,
  );
});

for (const [file, sampler] of FILES) {
  Deno.test(`schedulers: ${file} (${sampler}) timesteps, sigmas and trajectories for N = ${STEPS}`, () => {
    const info = manifest.schedulers[file];
    const config = info.config_passed as SchedulerConfig;
    const tensors = trajectories(file);
    const worst: string[] = [];
    for (const n of STEPS) {
      const key = (field: string) => `n${n}.${field}`;
      const per = info.per_steps[String(n)];
      const scheduler = createScheduler(sampler, config);
      scheduler.setTimesteps(n);
      const where = `${file} N=${n}`;

      // timesteps: integers exact, floats ≤ 1e-6 relative
      const refTimesteps = tensors.get(key("timesteps"))!;
      assertEquals(scheduler.timesteps.length, per.num_model_evals, `${where}: evaluations`);
      if (refTimesteps.dtype === "I64") {
        assertEquals([...scheduler.timesteps], refTimesteps.data as number[], `${where}: timesteps`);
        checks++;
      } else {
        const e = relError(scheduler.timesteps, refTimesteps.data as Float32Array);
        check(e <= 1e-6, `${where}: timesteps rel error ${e}`);
      }
      check(
        Math.abs(scheduler.initNoiseSigma - per.init_noise_sigma) <= 1e-6 * per.init_noise_sigma,
        `${where}: init_noise_sigma ${scheduler.initNoiseSigma} != ${per.init_noise_sigma}`,
      );
      check(scheduler.order === per.order, `${where}: order`);
      const refSigmas = tensors.get(key("sigmas"));
      if (refSigmas) {
        const e = relError(scheduler.sigmas!, tensorF32(refSigmas, "sigmas"));
        check(e <= 1e-6, `${where}: sigmas rel error ${e}`);
      }

      // the whole loop
      const tol = n === 50 ? 1e-4 : 1e-5;
      const noise = tensors.get(key("noise"));
      const noiseStep = (tensors.get(key("noise_step"))?.data ?? []) as number[];
      const xs = tensors.get(key("x"))!;
      const inputs = tensors.get(key("model_input"))!;
      const epss = tensors.get(key("eps"))!;
      const preds = tensors.get(key("pred_original"));
      let draws = 0;
      let latents: Float32Array = xT.map((v) => v * scheduler.initNoiseSigma);
      const errs = { x: 0, model_input: 0, eps: 0, pred_original: 0 };
      const compare = (field: keyof typeof errs, got: Float32Array, ref: Float32Array, i: number) => {
        const e = relError(got, ref);
        errs[field] = Math.max(errs[field], e);
        check(e <= tol, `${where}: ${field}[${i}] rel error ${e.toExponential(3)} > ${tol}`);
      };
      compare("x", latents, slice(xs, 0), 0);
      for (let i = 0; i < scheduler.timesteps.length; i++) {
        const modelInput = scheduler.scaleModelInput(latents, i);
        compare("model_input", modelInput, slice(inputs, i), i);
        const eps = standIn(modelInput, scheduler.timesteps[i]);
        compare("eps", eps, slice(epss, i), i);
        const drawsBefore = draws;
        const result = scheduler.step(eps, i, latents, () => {
          assert(noise && draws < noiseStep.length, `${where}: unexpected noise draw at step ${i}`);
          assertEquals(
            noiseStep[draws],
            i,
            `${where}: noise draw ${draws} belongs to step ${noiseStep[draws]}`,
          );
          return slice(noise, draws++);
        });
        const expectedDraws = noiseStep.filter((s) => s === i).length;
        check(
          draws - drawsBefore === expectedDraws,
          `${where}: step ${i} drew ${draws - drawsBefore}, want ${expectedDraws}`,
        );
        if (preds) compare("pred_original", result.predOriginal!, slice(preds, i), i);
        latents = result.prevSample;
        compare("x", latents, slice(xs, i + 1), i + 1);
      }
      check(draws === noiseStep.length, `${where}: ${draws} draws, want ${noiseStep.length}`);
      worst.push(
        `N=${n}: ` + Object.entries(errs).map(([k, v]) => `${k} ${v.toExponential(1)}`).join(", "),
      );
    }
    console.log(`  ${file}: ${worst.join(" | ")}`);
  });
}

Deno.test("schedulers: img2img get_timesteps and add_noise", () => {
  const config = manifest.sd15_scheduler_config as SchedulerConfig;
  const ddim = createScheduler("ddim", config);
  ddim.setTimesteps(50);
  const s = img2imgSchedule(ddim, 50, 0.75); // init_timestep 37, t_start 13
  check(
    s.startIndex === 13 && s.timesteps.length === 37 && s.timesteps[0] === 721,
    `ddim img2img ${s.startIndex}`,
  );
  const heun = createScheduler("heun", config);
  heun.setTimesteps(4);
  const h = img2imgSchedule(heun, 4, 0.5); // t_start 2 → index 4 of [999, 666, 666, 333, 333, 0, 0]
  check(
    h.startIndex === 4 && h.timesteps.length === 3 && h.timesteps[0] === 333,
    `heun img2img ${h.startIndex}`,
  );
  const original = Float32Array.from([1, -2, 0.5]);
  const noise = Float32Array.from([0.3, 0.1, -1]);
  const acp = betaSchedule(resolveConfig("t", {
    num_train_timesteps: 1000,
    beta_start: 0,
    beta_end: 0,
    beta_schedule: "",
    trained_betas: null,
    prediction_type: "epsilon",
    timestep_spacing: "leading",
    steps_offset: 0,
  }, config)).alphasCumprod;
  const a = acp[721];
  const got = ddim.addNoise(original, noise, 13);
  const want = original.map((x, i) => Math.sqrt(a) * x + Math.sqrt(1 - a) * noise[i]);
  check(relError(got, want) <= 1e-6, "ddim add_noise");
  const euler = createScheduler("euler", config);
  euler.setTimesteps(4);
  const sigma = euler.sigmas![1];
  const gotEuler = euler.addNoise(original, noise, 1);
  check(relError(gotEuler, original.map((x, i) => x + noise[i] * sigma)) <= 1e-7, "euler add_noise");
});

Deno.test("schedulers: number of passing checks", () => {
  console.log(`  ${checks} scheduler checks passed`);
  assert(checks > 0);
});
