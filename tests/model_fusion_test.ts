// Fusions that change a plan's dispatch list but not a bit of its results (models/graph.ts): a norm or an
// attention that writes the x operand of the GEMM right after it (ops/operand.ts), and linears over one
// input run as one GEMM on weights packed side by side at load time. Each of the tiny fixtures' networks is
// recorded without fusions (on weights loaded without groups), with them, and with them under a binding
// limit small enough to split the joint GEMMs into runs of consecutive members (GEMMs over part of a packed
// group: weight rows and bias values from an offset). All three run on the same random inputs at f32 and
// f16 and must give identical outputs, the fused plans with fewer dispatches. (Tests run the adapter's
// default tilings; with the autotuner's picks a joint GEMM may get another kernel than its members, which
// reorders sums only.)

import type { Gpu } from "../src/gpu/device.ts";
import type { ActDType } from "../src/gpu/pipelines.ts";
import { readTensor, writeActivation } from "../src/gpu/tensor.ts";
import type { GraphOptions, ModelBuilder, Value } from "../src/models/builder.ts";
import { loadModel } from "../src/models/harness.ts";
import type { UNet } from "../src/models/unet/unet.ts";
import { unetGraph } from "../src/models/unet/unet.ts";
import type { Vae } from "../src/models/vae/vae.ts";
import { vaeDecoderGraph, vaeEncoderGraph } from "../src/models/vae/vae.ts";
import type { ClipTextModel } from "../src/models/clip/clip.ts";
import { clipGraph } from "../src/models/clip/clip.ts";
import { Weights } from "../src/models/weights.ts";
import {
  type ComponentConfig,
  type ComponentKind,
  expectedTensors,
  isIgnorableTensor,
} from "../src/models/expected.ts";
import { readJsonFile } from "../src/util/json.ts";
import { SafetensorsFile } from "../src/weights/safetensors.ts";
import { assert, randomArray, testGpu } from "./util.ts";

const TINY = new URL("./fixtures/tiny_sd/", import.meta.url).pathname;

async function load(
  gpu: Gpu,
  entry: "unet" | "vae-decode" | "clip",
  dir: string,
  file: string,
  act: ActDType,
) {
  using source = await SafetensorsFile.open(`${TINY}${dir}/${file}`);
  return await loadModel(gpu, entry, await readJsonFile(`${TINY}${dir}/config.json`), source, act);
}

/** The same weights without the model's packed groups (an unfused graph reads every Linear on its own). */
async function plainWeights(
  gpu: Gpu,
  component: ComponentKind,
  dir: string,
  file: string,
  config: ComponentConfig,
) {
  using source = await SafetensorsFile.open(`${TINY}${dir}/${file}`);
  return await Weights.load(gpu, component, source, expectedTensors(component, config), {
    allowExtra: (n) => isIgnorableTensor(component, n),
  });
}

interface Graph {
  b: ModelBuilder;
  /** Inputs with the values to write. */
  inputs: [Value, Float32Array][];
  outputs: Value[];
}

/**
 * Compiles and runs the graph without fusions (on `plain` weights) and with them (the model's); the outputs
 * must be equal bit for bit.
 */
async function compare(
  gpu: Gpu,
  what: string,
  weights: { plain: Weights; fused: Weights },
  splitBytes: number,
  record: (options: GraphOptions, weights: Weights) => Graph,
) {
  const runs: { dispatches: number; outputs: Float32Array[] }[] = [];
  const variants: [GraphOptions, Weights][] = [
    [{ fuse: false }, weights.plain],
    [{}, weights.fused],
    [{ maxBindingBytes: splitBytes }, weights.fused],
  ];
  for (const [options, w] of variants) {
    const g = record(options, w);
    const { plan, tensor } = g.b.compile(gpu, w);
    for (const [v, data] of g.inputs) writeActivation(gpu, tensor(v), data);
    plan.run(what);
    const outputs = [];
    for (const v of g.outputs) outputs.push(await readTensor(gpu, tensor(v)));
    runs.push({ dispatches: plan.dispatches.length, outputs });
    plan.destroy();
  }
  const [plain, fused, split] = runs;
  console.log(`${what}: ${plain.dispatches} → ${fused.dispatches} dispatches (${split.dispatches} split)`);
  assert(fused.dispatches < plain.dispatches, `${what}: fusing saved no dispatch`);
  for (const [name, run] of [["fused", fused], ["split", split]] as const) {
    plain.outputs.forEach((want, i) => {
      const got = run.outputs[i];
      const at = want.findIndex((v, j) => !Object.is(v, got[j]));
      assert(at < 0, `${what} ${name}: output ${i} differs at ${at}: ${got[at]} vs ${want[at]}`);
    });
  }
}

for (const act of ["f32", "f16"] as const) {
  Deno.test(`fused and unfused plans agree bit for bit: tiny UNet, VAE and CLIP (${act} activations)`, async () => {
    const gpu = await testGpu();
    const unetFile = "diffusion_pytorch_model.fp16.safetensors";
    const unet = await load(gpu, "unet", "unet", unetFile, act) as UNet;
    const plainUnet = await plainWeights(gpu, "unet", "unet", unetFile, unet.config);
    const shape = { batch: 2, height: 16, width: 12, contextTokens: 7 };
    const cross = unet.config.cross_attention_dim as number;
    await compare(gpu, `unet ${act}`, { plain: plainUnet, fused: unet.weights }, 65536, (options, w) => {
      const { b, inputs, out } = unetGraph(unet.config, w, act, shape, options);
      return {
        b,
        inputs: [
          [inputs.sample, randomArray(2 * 16 * 12 * 4, 1)],
          [inputs.timestep, new Float32Array([981, 21])],
          [inputs.context, randomArray(2 * 7 * cross, 2)],
        ],
        outputs: [out],
      };
    });
    unet.weights.destroy();
    plainUnet.destroy();

    const vaeFile = "diffusion_pytorch_model.fp16.safetensors";
    const vae = await load(gpu, "vae-decode", "vae", vaeFile, act) as Vae;
    const vaeWeights = {
      plain: await plainWeights(gpu, "vae", "vae", vaeFile, vae.config),
      fused: vae.weights,
    };
    await compare(gpu, `vae decode ${act}`, vaeWeights, 16384, (options, w) => {
      const g = vaeDecoderGraph(vae.config, w, act, 8, 6, options);
      return { b: g.b, inputs: [[g.z, randomArray(8 * 6 * 4, 3)]], outputs: [g.image] };
    });
    await compare(gpu, `vae encode ${act}`, vaeWeights, 4096, (options, w) => {
      const g = vaeEncoderGraph(vae.config, w, act, 32, 24, options);
      return { b: g.b, inputs: [[g.image, randomArray(32 * 24 * 3, 4)]], outputs: [g.moments] };
    });
    vae.weights.destroy();
    vaeWeights.plain.destroy();

    const clipFile = "model.fp16.safetensors";
    const clip = await load(gpu, "clip", "text_encoder", clipFile, act) as ClipTextModel;
    const plainClip = await plainWeights(gpu, "text_encoder", "text_encoder", clipFile, clip.config);
    const ids = Float32Array.from({ length: 2 * 9 }, (_, i) => (i * 37) % clip.config.vocab_size);
    await compare(gpu, `clip ${act}`, { plain: plainClip, fused: clip.weights }, 4096, (options, w) => {
      const g = clipGraph(clip.config, w, act, 2, 9, options);
      return {
        b: g.b,
        inputs: [[g.ids, ids]],
        outputs: [g.out.lastHidden, g.out.penultimate, g.out.penultimateFinalLn],
      };
    });
    clip.weights.destroy();
    plainClip.destroy();
  });
}
