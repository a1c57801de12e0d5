// LoRA set switching on a loaded model, for bench/models.ts: two synthetic LoRAs of the usual shape (kohya
// keys, rank 16, every attention projection, feed-forward and proj_in/out of the UNet plus the text
// encoder's q/k/v/out and MLP; diffusers keys, rank 8, the UNet's attention only) written to a temporary
// folder, then timed: first use (file read, backups, merge), A → B, B → A (files cached), A + B at once and
// back to none (restore). Each figure is compared with one UNet evaluation at 256² (batch 2, the CFG batch).

import type { Gpu } from "../src/gpu/device.ts";
import { f32ToF16 } from "../src/gpu/device.ts";
import type { StableDiffusionPipeline } from "../src/pipeline/pipeline.ts";
import { writeSafetensorsStreaming } from "../src/weights/safetensors.ts";
import { LoraAdapters, type LoraUse } from "../src/models/lora/adapters.ts";
import { LoraLibrary } from "../src/models/lora/library.ts";
import { clipTargets, type LoraTarget, unetTargets } from "../src/models/lora/targets.ts";

/** Deterministic f16 noise of scale s (xorshift; the values only need to be finite and small). */
function noise(n: number, seed: number, s: number): Uint16Array {
  const out = new Uint16Array(n);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = f32ToF16(((x >>> 0) / 2 ** 32 - 0.5) * s);
  }
  return out;
}

async function writeLora(
  path: string,
  targets: LoraTarget[],
  rank: number,
  key: (t: LoraTarget, part: "down" | "up") => string,
): Promise<number> {
  const entries: { name: string; dtype: "F16"; shape: number[] }[] = [];
  const data = new Map<string, () => Uint16Array>();
  targets.forEach((t, i) => {
    const [n, ...rest] = t.shape;
    const k = rest.reduce((a, b) => a * b, 1);
    const conv = t.kind === "conv" && k !== rest[0];
    const down = { name: key(t, "down"), dtype: "F16" as const, shape: conv ? [rank, ...rest] : [rank, k] };
    const up = { name: key(t, "up"), dtype: "F16" as const, shape: conv ? [n, rank, 1, 1] : [n, rank] };
    entries.push(down, up);
    data.set(down.name, () => noise(rank * k, 2 * i + 1, 1 / Math.sqrt(k)));
    data.set(up.name, () => noise(n * rank, 2 * i + 2, 0.02));
  });
  await writeSafetensorsStreaming(path, entries, (name) => data.get(name)!());
  return (await Deno.stat(path)).size;
}

const ATTENTION = /attn[12]\.to_(q|k|v|out\.0)\.weight$/;
const TRANSFORMER = /(attn[12]\.to_(q|k|v|out\.0)|ff\.net\.(0\.proj|2)|proj_(in|out))\.weight$/;
const CLIP = /(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])\.weight$/;

export async function loraSwitchBench(
  gpu: Gpu,
  pipe: StableDiffusionPipeline,
  unetStepSeconds: number,
): Promise<void> {
  const { unet, textEncoder } = pipe.parts;
  const dir = await Deno.makeTempDir({ prefix: "sd-webgpu-lora-bench-" });
  try {
    const module = (t: LoraTarget) => t.weight.replace(/\.weight$/, "");
    const kohyaPrefix = (t: LoraTarget) => t.component === "unet" ? "lora_unet_" : "lora_te_";
    const kohya = (t: LoraTarget, part: "down" | "up") =>
      `${kohyaPrefix(t)}${module(t).replaceAll(".", "_")}.lora_${part}.weight`;
    const diffusers = (t: LoraTarget, part: "down" | "up") =>
      `unet.${module(t)}.${part === "down" ? "lora_A" : "lora_B"}.weight`;
    const targetsA = [
      ...unetTargets(unet.config).filter((t) => TRANSFORMER.test(t.weight)),
      ...clipTargets(textEncoder.config).filter((t) => CLIP.test(t.weight)),
    ];
    const targetsB = unetTargets(unet.config).filter((t) => ATTENTION.test(t.weight));
    const sizeA = await writeLora(`${dir}/a.safetensors`, targetsA, 16, kohya);
    const sizeB = await writeLora(`${dir}/b.safetensors`, targetsB, 8, diffusers);
    const millions = (ts: LoraTarget[]) =>
      (ts.reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0) / 1e6).toFixed(0);
    const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(0);
    console.log(
      `\nLoRA A: kohya rank 16, ${targetsA.length} weights (${millions(targetsA)} M values), ${
        mib(sizeA)
      } MiB; ` +
        `LoRA B: diffusers rank 8, ${targetsB.length} weights (${millions(targetsB)} M values), ${
          mib(sizeB)
        } MiB`,
    );
    const loras = new LoraAdapters(gpu, { unet, textEncoder }, new LoraLibrary(dir));
    const steps: [string, LoraUse[]][] = [
      ["none → A (first use: read file, back up, merge)", [{ name: "a", scale: 0.8 }]],
      ["A → B", [{ name: "b", scale: 1 }]],
      ["B → A (file cached)", [{ name: "a", scale: 0.8 }]],
      ["A → A at another scale", [{ name: "a", scale: 0.5 }]],
      ["A → A + B", [{ name: "a", scale: 0.5 }, { name: "b", scale: 0.7 }]],
      ["A + B → none (restore)", []],
    ];
    console.log("| switch | seconds | × one UNet eval at 256² | GPU backups held after |");
    console.log("|---|---:|---:|---:|");
    for (const [what, set] of steps) {
      const s = await loras.use(set);
      console.log(
        `| ${what} | ${(s.ms / 1000).toFixed(3)} | ${(s.ms / 1000 / unetStepSeconds).toFixed(3)} | ${
          (loras.bytes / 2 ** 20).toFixed(0)
        } MiB |`,
      );
    }
    console.log(`(one UNet eval, batch 2, 32×32 latent: ${unetStepSeconds.toFixed(2)} s)`);
    loras.destroy();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
