// Parity of CLIP, the UNet and the VAE with diffusers on the golden fixtures (tests/fixtures, as in
// tests/models_test.ts), on the adapter in use: max|engine − reference| / max|reference| per output at f32
// and (where shader-f16 works) f16 activations, against the model tests' tolerances. Used by
// bench/gpu_report.ts, so a GPU session sees at a glance whether its adapter computes what lavapipe does.

import type { Gpu } from "../src/gpu/device.ts";
import type { ActDType } from "../src/gpu/pipelines.ts";
import { loadModel, type NetworkEntry, runComponent } from "../src/models/harness.ts";
import type { HostTensor } from "../src/util/host_tensor.ts";
import { readJsonFile } from "../src/util/json.ts";
import { relError } from "../src/util/rel_error.ts";
import { SafetensorsFile } from "../src/weights/safetensors.ts";

const fixtures = new URL("../tests/fixtures/", import.meta.url).pathname;

export interface ParityRow {
  case: string;
  act: ActDType;
  output: string;
  relError: number;
  tolerance: number;
  pass: boolean;
}

interface Case {
  name: string;
  component: NetworkEntry;
  dir: string;
  weights: string;
  io: string;
  outputs: string[];
  f32Tol?: number;
}

// tiny_sd's weight files are the golden unet/, vae/ and clip/tiny_quick_gelu/ weights (see models_test.ts).
const CASES: Case[] = [
  {
    name: "CLIP tiny_quick_gelu",
    component: "clip",
    dir: "clip/tiny_quick_gelu",
    weights: "../../tiny_sd/text_encoder/model.fp16.safetensors",
    io: "io.safetensors",
    outputs: ["last_hidden_state"],
    f32Tol: 1e-5,
  },
  {
    name: "UNet case_a (batch 2)",
    component: "unet",
    dir: "unet",
    weights: "../tiny_sd/unet/diffusion_pytorch_model.fp16.safetensors",
    io: "case_a.safetensors",
    outputs: ["out"],
  },
  {
    name: "UNet SD2 case_a",
    component: "unet",
    dir: "unet_sd2",
    weights: "weights.safetensors",
    io: "case_a.safetensors",
    outputs: ["out"],
  },
  {
    name: "VAE decode_a",
    component: "vae-decode",
    dir: "vae",
    weights: "../tiny_sd/vae/diffusion_pytorch_model.fp16.safetensors",
    io: "decode_a.safetensors",
    outputs: ["image"],
  },
  {
    name: "VAE encode_a",
    component: "vae-encode",
    dir: "vae",
    weights: "../tiny_sd/vae/diffusion_pytorch_model.fp16.safetensors",
    io: "encode_a.safetensors",
    outputs: ["mean"],
  },
];

const TOL: Record<ActDType, number> = { f32: 1e-3, f16: 2e-2 };

async function readAll(path: string): Promise<Map<string, HostTensor>> {
  using f = await SafetensorsFile.open(path);
  const out = new Map<string, HostTensor>();
  for (const name of f.names()) out.set(name, { shape: f.info(name).shape, data: await f.readF32(name) });
  return out;
}

async function configOf(dir: string): Promise<unknown> {
  try {
    return await readJsonFile(`${dir}/config.json`);
  } catch {
    return (await readJsonFile(`${dir}/manifest.json`) as { config_passed: unknown }).config_passed;
  }
}

export async function parityReport(gpu: Gpu): Promise<ParityRow[]> {
  const rows: ParityRow[] = [];
  const acts: ActDType[] = gpu.f16 ? ["f32", "f16"] : ["f32"];
  for (const c of CASES) {
    const dir = `${fixtures}${c.dir}`;
    const io = await readAll(`${dir}/${c.io}`);
    for (const act of acts) {
      using weights = await SafetensorsFile.open(`${dir}/${c.weights}`);
      const model = await loadModel(gpu, c.component, await configOf(dir), weights, act);
      const result = await runComponent(gpu, c.component, model, io);
      const tolerance = act === "f32" ? c.f32Tol ?? TOL.f32 : TOL[act];
      for (const output of c.outputs) {
        const err = relError(result.outputs.get(output)!.data, io.get(output)!.data);
        rows.push({ case: c.name, act, output, relError: err, tolerance, pass: err <= tolerance });
      }
      model.weights.destroy();
      if ("dropPlans" in model) model.dropPlans();
    }
  }
  return rows;
}
