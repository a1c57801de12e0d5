// CLIP, UNet, VAE and TAESD against the golden fixtures (diffusers/transformers in float32 on the same F16
// weights). Tolerances are the fixtures' README's: max|engine − ref| / max|ref| ≤ 1e-3 with f32
// activations, ≤ 2e-2 with f16 activations. When an output fails, the first diverging intermediate
// activation (in execution order) is named.

import { readHostTensors, relError, testGpu } from "./util.ts";
import { SafetensorsFile } from "../src/weights/safetensors.ts";
import { readJsonFile } from "../src/util/json.ts";
import { loadModel, type NetworkEntry, runComponent } from "../src/models/harness.ts";
import type { ActDType } from "../src/gpu/pipelines.ts";
import { gpuChoicesFromEnv } from "../src/gpu/choices.ts";

const fixtures = new URL("./fixtures/", import.meta.url).pathname;

async function configOf(dir: string, config = "config.json"): Promise<unknown> {
  try {
    return await readJsonFile(`${dir}/${config}`);
  } catch {
    const manifest = await readJsonFile(`${dir}/manifest.json`) as { config_passed: unknown };
    return manifest.config_passed;
  }
}

const TOL: Record<ActDType, number> = { f32: 1e-3, f16: 2e-2 };
const NO_F16 = gpuChoicesFromEnv().f16 === false;

interface Case {
  name: string;
  component: NetworkEntry;
  dir: string;
  /** config.json relative to dir (default: dir/config.json, else the manifest's config_passed). */
  config?: string;
  weights: string;
  io: string;
  activations?: string;
  /** Output name → reference name in the io file. */
  outputs: string[];
  /** Tighter bound where the fixtures' README asks for it (CLIP at f32). */
  f32Tol?: number;
}

const CASES: Case[] = [
  // tiny_sd's weight files are byte-identical to the golden unet/, vae/ and clip/tiny_quick_gelu/ weights.
  {
    name: "clip tiny_quick_gelu",
    component: "clip",
    dir: "clip/tiny_quick_gelu",
    weights: "../../tiny_sd/text_encoder/model.fp16.safetensors",
    io: "io.safetensors",
    outputs: ["last_hidden_state", "penultimate_hidden_state", "penultimate_hidden_state_final_ln"],
    f32Tol: 1e-5,
  },
  {
    name: "clip tiny_gelu",
    component: "clip",
    dir: "clip/tiny_gelu",
    weights: "model.safetensors",
    io: "io.safetensors",
    outputs: ["last_hidden_state", "penultimate_hidden_state", "penultimate_hidden_state_final_ln"],
    f32Tol: 1e-5,
  },
  {
    name: "unet case_a (batch 2, two timesteps)",
    component: "unet",
    dir: "unet",
    weights: "../tiny_sd/unet/diffusion_pytorch_model.fp16.safetensors",
    io: "case_a.safetensors",
    activations: "case_a_activations.safetensors",
    outputs: ["out"],
  },
  {
    name: "unet case_b (non-square)",
    component: "unet",
    dir: "unet",
    weights: "../tiny_sd/unet/diffusion_pytorch_model.fp16.safetensors",
    io: "case_b.safetensors",
    outputs: ["out"],
  },
  {
    name: "unet_sd2 case_a",
    component: "unet",
    dir: "unet_sd2",
    weights: "weights.safetensors",
    io: "case_a.safetensors",
    activations: "case_a_activations.safetensors",
    outputs: ["out"],
  },
  {
    name: "vae decode_a",
    component: "vae-decode",
    dir: "vae",
    weights: "../tiny_sd/vae/diffusion_pytorch_model.fp16.safetensors",
    io: "decode_a.safetensors",
    activations: "decode_a_activations.safetensors",
    outputs: ["image"],
  },
  {
    name: "vae decode_b (non-square)",
    component: "vae-decode",
    dir: "vae",
    weights: "../tiny_sd/vae/diffusion_pytorch_model.fp16.safetensors",
    io: "decode_b.safetensors",
    outputs: ["image"],
  },
  {
    name: "vae encode_a",
    component: "vae-encode",
    dir: "vae",
    weights: "../tiny_sd/vae/diffusion_pytorch_model.fp16.safetensors",
    io: "encode_a.safetensors",
    activations: "encode_a_activations.safetensors",
    outputs: ["mean", "logvar"],
  },
  // TAESD at its real size (random weights, madebyollin/taesd's folder layout). The activation files keep the
  // layers at ≤ 16×16 (decoder) and ≤ 32×24 (encoder) to stay small; the outputs are checked whole.
  {
    name: "taesd decode_a",
    component: "taesd-decode",
    dir: "taesd",
    config: "model/config.json",
    weights: "model/diffusion_pytorch_model.safetensors",
    io: "decode_a.safetensors",
    activations: "decode_a_activations.safetensors",
    outputs: ["image"],
  },
  {
    name: "taesd decode_b (non-square)",
    component: "taesd-decode",
    dir: "taesd",
    config: "model/config.json",
    weights: "model/diffusion_pytorch_model.safetensors",
    io: "decode_b.safetensors",
    outputs: ["image"],
  },
  {
    name: "taesd encode_a (non-square)",
    component: "taesd-encode",
    dir: "taesd",
    config: "model/config.json",
    weights: "model/diffusion_pytorch_model.safetensors",
    io: "encode_a.safetensors",
    activations: "encode_a_activations.safetensors",
    outputs: ["latents"],
  },
];

for (const c of CASES) {
  for (const act of ["f32", "f16"] as const) {
    // With SD_GPU_FORCE=f16=off (a forced CI run) there are no f16 activations to test.
    Deno.test(
      { name: `${c.name} equals diffusers (${act} activations)`, ignore: act === "f16" && NO_F16 },
      async () => {
        const gpu = await testGpu();
        const dir = `${fixtures}${c.dir}`;
        using weights = await SafetensorsFile.open(`${dir}/${c.weights}`);
        const model = await loadModel(gpu, c.component, await configOf(dir, c.config), weights, act);
        const io = await readHostTensors(`${dir}/${c.io}`);
        const reference = c.activations ? await readHostTensors(`${dir}/${c.activations}`) : new Map();
        const result = await runComponent(gpu, c.component, model, io, { probes: reference.size > 0 });
        const tol = act === "f32" ? (c.f32Tol ?? TOL.f32) : TOL[act];
        const failures: string[] = [];
        for (const name of c.outputs) {
          const got = result.outputs.get(name)!;
          const want = io.get(name)!;
          if (got.shape.join() !== want.shape.join()) {
            throw new Error(`${name}: shape [${got.shape}] != [${want.shape}]`);
          }
          const err = relError(got.data, want.data);
          if (!(err <= tol)) failures.push(`${name}: relative error ${err.toExponential(3)} > ${tol}`);
        }
        if (failures.length) {
          // Localize: the first intermediate activation (execution order of the probes) that diverges.
          let first = "no intermediate activation diverges";
          for (const [probe, got] of result.probes) {
            const want = reference.get(probe);
            if (!want) continue;
            const err = relError(got.data, want.data);
            if (!(err <= tol)) {
              first = `first diverging activation: ${probe} (relative error ${err.toExponential(3)})`;
              break;
            }
          }
          throw new Error(`${failures.join("; ")}. ${first}`);
        }
        // Every probed activation the fixture has must match too.
        for (const [probe, got] of result.probes) {
          const want = reference.get(probe);
          if (!want) continue;
          const err = relError(got.data, want.data);
          if (!(err <= tol)) {
            throw new Error(`activation ${probe}: relative error ${err.toExponential(3)} > ${tol}`);
          }
        }
      },
    );
  }
}
