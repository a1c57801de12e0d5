// LoRA merging where no golden file exists: the text encoder (kohya lora_te_ keys, every Linear), an SD 2.x
// UNet (diffusers keys: Linear proj_in, attention, a 3×3 LoCon conv, a 1×1 conv shortcut, time_emb_proj) and
// the golden SD 1.x LoRA. Each runs twice: with the LoRA merged on the GPU, and from a checkpoint whose
// weights were merged on the host in float64 and rounded to f16 once. The GPU adds in f32, so a weight may
// land one f16 step away; outputs agree within 5e-5 relative at f32, while the LoRA moves them by 0.1 or more.

import { randomArray, readHostTensors, relError, testGpu } from "./util.ts";
import type { Gpu } from "../src/gpu/device.ts";
import { f32ToF16 } from "../src/gpu/device.ts";
import { SafetensorsFile, type TensorToWrite, writeSafetensors } from "../src/weights/safetensors.ts";
import { readJsonFile } from "../src/util/json.ts";
import { type AnyModel, loadModel, type NetworkEntry, runComponent } from "../src/models/harness.ts";
import type { UNet } from "../src/models/unet/unet.ts";
import type { ClipTextModel } from "../src/models/clip/clip.ts";
import { LoraAdapters } from "../src/models/lora/adapters.ts";
import { LoraLibrary } from "../src/models/lora/library.ts";
import { readLora } from "../src/models/lora/file.ts";
import { clipTargets, type LoraTarget, TargetIndex, unetTargets } from "../src/models/lora/targets.ts";
import { readPacked } from "../src/ops/lora_merge.ts";

const fixtures = new URL("./fixtures/", import.meta.url).pathname;

async function load(gpu: Gpu, entry: NetworkEntry, config: unknown, weights: string): Promise<AnyModel> {
  using w = await SafetensorsFile.open(weights);
  return await loadModel(gpu, entry, config, w, "f32");
}

const f16 = (a: Float32Array) => Uint16Array.from(a, (v) => f32ToF16(v));

/** A LoRA of rank `rank` on `targets`, F16, keys from `keyOf(module, part)`; alpha 1 when kohya. */
async function writeLora(
  path: string,
  targets: LoraTarget[],
  keyOf: (module: string, part: "down" | "up" | "alpha") => string | null,
  rank: number,
  seed: number,
): Promise<void> {
  const tensors: Record<string, TensorToWrite> = {};
  for (const [i, t] of targets.entries()) {
    const module = t.weight.replace(/\.weight$/, "");
    const [n, ...rest] = t.shape;
    const k = rest.reduce((a, b) => a * b, 1);
    const conv = t.shape.length === 4 && k !== rest[0];
    tensors[keyOf(module, "down")!] = {
      dtype: "F16",
      shape: conv ? [rank, ...rest] : [rank, k],
      data: f16(randomArray(rank * k, seed + 2 * i, 1 / Math.sqrt(k))),
    };
    tensors[keyOf(module, "up")!] = {
      dtype: "F16",
      shape: conv ? [n, rank, 1, 1] : [n, rank],
      data: f16(randomArray(n * rank, seed + 2 * i + 1, 0.5)),
    };
    const alpha = keyOf(module, "alpha");
    if (alpha) tensors[alpha] = { dtype: "F16", shape: [], data: f16(new Float32Array([1])) };
  }
  await writeSafetensors(path, tensors);
}

/** The checkpoint with the LoRA merged on the host: f16(W + scale·(alpha/rank)·up@down), float64 sums. */
async function hostMerged(weights: string, lora: string, index: TargetIndex, scale: number, out: string) {
  const contents = await readLora(lora, index);
  const merged = new Map(contents.modules.map((m) => [m.target.weight, m]));
  using f = await SafetensorsFile.open(weights);
  const tensors: Record<string, TensorToWrite> = {};
  for (const name of f.names()) {
    const info = f.info(name);
    const m = merged.get(name);
    if (!m) {
      tensors[name] = { dtype: "F16", shape: info.shape, data: await f.readF16Bits(name) };
      continue;
    }
    const w = await f.readF32(name);
    const n = info.shape[0];
    const k = w.length / n;
    const s = scale * m.alphaScale;
    const data = new Uint16Array(w.length);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < k; j++) {
        let v = 0;
        for (let r = 0; r < m.rank; r++) v += m.up[i * m.rank + r] * m.down[r * k + j];
        data[i * k + j] = f32ToF16(w[i * k + j] + s * v);
      }
    }
    tensors[name] = { dtype: "F16", shape: info.shape, data };
  }
  await writeSafetensors(out, tensors);
}

interface Case {
  entry: NetworkEntry;
  config: unknown;
  weights: string;
  io: string;
  output: string;
  lora: (dir: string) => Promise<string>;
  scale: number;
}

async function checkAgainstHostMerge(what: string, c: Case): Promise<void> {
  const gpu = await testGpu();
  const dir = await Deno.makeTempDir();
  try {
    const lora = await c.lora(dir);
    const model = await load(gpu, c.entry, c.config, c.weights) as UNet | ClipTextModel;
    const io = await readHostTensors(c.io);
    const run = async (m: AnyModel) => (await runComponent(gpu, c.entry, m, io)).outputs.get(c.output)!.data;
    const base = await run(model);
    const isUnet = c.entry === "unet";
    const models = isUnet ? { unet: model as UNet } : { textEncoder: model as ClipTextModel };
    const loras = new LoraAdapters(gpu, models, new LoraLibrary(undefined, [lora]));
    const name = lora.split("/").pop()!.replace(".safetensors", "");
    const s = await loras.use([{ name, scale: c.scale }]);
    const merged = await run(model);
    const index = TargetIndex.of(
      isUnet ? { unet: (model as UNet).config } : {
        textEncoder: (model as ClipTextModel).config,
      },
    );
    await hostMerged(c.weights, lora, index, c.scale, `${dir}/merged.safetensors`);
    const reference = await run(await load(gpu, c.entry, c.config, `${dir}/merged.safetensors`));
    const moved = relError(base, reference);
    const err = relError(merged, reference);
    console.log(
      `${what}: ${s.merged.unet + s.merged.text_encoder} weights merged; GPU vs host merge ${
        err.toExponential(3)
      }, ` +
        `LoRA moves the output by ${moved.toFixed(3)}`,
    );
    if (!(moved > 0.05)) throw new Error(`${what}: the LoRA hardly changes the output (${moved})`);
    if (!(err <= 5e-5)) throw new Error(`${what}: GPU merge vs host merge ${err.toExponential(3)} > 5e-5`);
    // Back to no LoRA: every packed GEMM weight equals a fresh load's, byte for byte.
    await loras.use([]);
    const targets = isUnet
      ? unetTargets((model as UNet).config)
      : clipTargets((model as ClipTextModel).config);
    const fresh = await load(gpu, c.entry, c.config, c.weights) as UNet | ClipTextModel;
    for (const t of targets) {
      const [a, b] = await Promise.all(
        [model, fresh].map((m) =>
          readPacked(gpu, t.kind === "conv" ? m.weights.conv(t.weight) : m.weights.linear(t.weight))
        ),
      );
      if (a.length !== b.length || a.some((v, i) => v !== b[i])) {
        throw new Error(`${what}: ${t.weight} not restored`);
      }
    }
    loras.destroy();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const clipDir = `${fixtures}clip/tiny_quick_gelu`;
Deno.test("lora text encoder (kohya lora_te_ keys on every Linear) equals a host-merged checkpoint", async () => {
  const config = await readJsonFile(`${clipDir}/config.json`);
  await checkAgainstHostMerge("text encoder", {
    entry: "clip",
    config,
    weights: `${fixtures}tiny_sd/text_encoder/model.fp16.safetensors`,
    io: `${clipDir}/io.safetensors`,
    output: "last_hidden_state",
    scale: 0.7,
    lora: async (dir) => {
      const targets = clipTargets((await import("../src/models/clip/config.ts")).parseClipTextConfig(config));
      const path = `${dir}/te_style.safetensors`;
      const kohya = (m: string, part: string) =>
        `lora_te_${m.replaceAll(".", "_")}.${part === "alpha" ? "alpha" : `lora_${part}.weight`}`;
      await writeLora(path, targets, kohya, 3, 900);
      return path;
    },
  });
});

const sd2 = `${fixtures}unet_sd2`;
Deno.test("lora SD 2.x UNet (diffusers keys: Linear proj_in, attention, LoCon conv, 1×1 shortcut) equals a host-merged checkpoint", async () => {
  const manifest = await readJsonFile(`${sd2}/manifest.json`) as { config_passed: unknown };
  await checkAgainstHostMerge("SD 2.x UNet", {
    entry: "unet",
    config: manifest.config_passed,
    weights: `${sd2}/weights.safetensors`,
    io: `${sd2}/case_a.safetensors`,
    output: "out",
    scale: 1.2,
    lora: async (dir) => {
      const { parseUNetConfig } = await import("../src/models/unet/config.ts");
      const all = unetTargets(parseUNetConfig(manifest.config_passed));
      const pick =
        /down_blocks\.1\.attentions\.0\.(proj_in|proj_out|transformer_blocks\.0\.attn2\.to_k)\.|up_blocks\.1\.resnets\.0\.(conv1|conv_shortcut|time_emb_proj)\.|mid_block\.attentions\.0\.transformer_blocks\.0\.ff\.net\.0\.proj/;
      const targets = all.filter((t) => pick.test(t.weight));
      if (targets.length !== 7) throw new Error(`picked ${targets.map((t) => t.weight)}`);
      if (!targets.some((t) => t.weight.endsWith("proj_in.weight") && t.shape.length === 2)) {
        throw new Error("SD 2.x proj_in should be a Linear");
      }
      const path = `${dir}/sd2_style.safetensors`;
      const diffusers = (m: string, part: string) =>
        part === "alpha" ? null : `unet.${m}.${part === "down" ? "lora_A" : "lora_B"}.weight`;
      await writeLora(path, targets, diffusers, 4, 700);
      return path;
    },
  });
});

Deno.test("lora golden SD 1.x LoRA merged on the GPU equals the host-merged checkpoint", async () => {
  const tiny = `${fixtures}tiny_sd/unet`;
  await checkAgainstHostMerge("SD 1.x UNet, golden LoRA", {
    entry: "unet",
    config: await readJsonFile(`${tiny}/config.json`),
    weights: `${tiny}/diffusion_pytorch_model.fp16.safetensors`,
    io: `${fixtures}lora/unet_case.safetensors`,
    output: "out",
    scale: 0.8,
    lora: () => Promise.resolve(`${fixtures}lora/style_kohya.safetensors`),
  });
});
