// `deno run -A bench/unet_ab.ts --base DIR [--weights DIR] [--sizes 32,64] [--vae-sizes 32] [--rounds 3]
// [--precision f16]`: one batch-2 UNet eval per latent size of --sizes, and one VAE decode per latent size
// of --vae-sizes (none by default) (SD 1.5 synthetic weights, as bench:models) of this tree against another
// checkout of
// the project in DIR (e.g. `git archive main | tar -x -C DIR`), both loaded in this process on their own
// device. The two run alternately (A B, B A, A B, …) so that whatever else loads the machine (lavapipe shares
// its CPU cores) hits both alike; prints each side's dispatches per call, its median wall and CPU seconds
// (CPU: what the process's threads used, which other load changes far less than wall time) and B / A.
// A single bench:models run cannot separate a change from the load of the moment on a shared machine.

import { parseArgs } from "node:util";
import { Gpu } from "../src/gpu/device.ts";
import { loadPipeline } from "../src/pipeline/load.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    base: { type: "string" },
    weights: { type: "string", default: "weights/synth-sd15" },
    sizes: { type: "string", default: "32" },
    "vae-sizes": { type: "string", default: "" },
    rounds: { type: "string", default: "3" },
    precision: { type: "string", default: "f16" },
  },
});
if (!values.base) throw new Error("--base DIR: the other checkout to compare with");
const baseDir = new URL(`${values.base.replace(/\/$/, "")}/`, `file://${Deno.cwd()}/`);
const precision = values.precision as "f32" | "f16";

interface PlanLike {
  plan: { dispatches: unknown[]; run(label: string): void };
}

interface Side {
  name: string;
  gpu: { sync(): Promise<void> };
  unet: {
    plan(b: number, h: number, w: number, t: number): PlanLike & { timestep: { buffer: GPUBuffer } };
    dropPlans(): void;
  };
  vae: { decodePlan(h: number, w: number): PlanLike; dropPlans(): void };
  device: GPUDevice;
}

async function side(name: string, gpuModule: string, loadModule: string): Promise<Side> {
  const { Gpu: G } = await import(gpuModule);
  const { loadPipeline: load } = await import(loadModule);
  const gpu = await G.create();
  const pipe = await load(gpu, values.weights, { precision });
  return { name, gpu, unet: pipe.parts.unet, vae: pipe.parts.vae, device: gpu.device };
}

const a = await side(
  "A (base)",
  new URL("src/gpu/device.ts", baseDir).href,
  new URL("src/pipeline/load.ts", baseDir).href,
);
const b: Side = await (async () => {
  const gpu = await Gpu.create();
  const pipe = await loadPipeline(gpu, values.weights!, { precision });
  return { name: "B (this tree)", gpu, unet: pipe.parts.unet, vae: pipe.parts.vae, device: gpu.device };
})();

const median = (xs: number[]) => [...xs].sort((p, q) => p - q)[Math.floor(xs.length / 2)];

/**
 * CPU seconds this process has used (all threads, lavapipe's workers included; Linux /proc, 100 Hz ticks), or
 * NaN elsewhere. Less sensitive than wall time to other processes sharing the cores.
 */
function cpuSeconds(): number {
  try {
    const stat = Deno.readTextFileSync("/proc/self/stat");
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(rest[11]) + Number(rest[12])) / 100;
  } catch {
    return NaN;
  }
}
/** Runs A's and B's plan alternately and prints both sides' medians. */
async function compare(what: string, plans: PlanLike[]): Promise<void> {
  const seconds: number[][] = [[], []];
  const cpu: number[][] = [[], []];
  for (let r = -1; r < Number(values.rounds); r++) {
    // A B, B A, A B, …: neither side always runs right after the other.
    for (const i of r % 2 === 0 ? [1, 0] : [0, 1]) {
      const x = [a, b][i];
      const [t0, c0] = [performance.now(), cpuSeconds()];
      plans[i].plan.run(what);
      await x.gpu.sync();
      if (r < 0) continue; // round -1: warm-up (shader compiles)
      seconds[i].push((performance.now() - t0) / 1000);
      cpu[i].push(cpuSeconds() - c0);
    }
  }
  const [ma, mb] = seconds.map(median);
  const [ca, cb] = cpu.map(median);
  console.log(`${what}, ${precision}, ${values.rounds} alternating rounds:`);
  for (const [i, x] of [a, b].entries()) {
    console.log(
      `  ${x.name}: ${plans[i].plan.dispatches.length} dispatches per call, median ${
        [ma, mb][i].toFixed(2)
      } s (${seconds[i].map((v) => v.toFixed(2)).join(", ")}); CPU median ${[ca, cb][i].toFixed(1)} s (${
        cpu[i].map((v) => v.toFixed(1)).join(", ")
      })`,
    );
  }
  console.log(`  B / A: ${(mb / ma).toFixed(3)} wall, ${(cb / ca).toFixed(3)} CPU`);
}

const sizes = (list: string) => list.split(",").filter((v) => v).map(Number);
for (const s of sizes(values.sizes!)) {
  const plans = [a, b].map((x) => {
    const p = x.unet.plan(2, s, s, 77);
    x.device.queue.writeBuffer(p.timestep.buffer, 0, new Float32Array([500, 500]));
    return p;
  });
  await compare(`UNet batch 2, ${s}×${s} latent`, plans);
  for (const x of [a, b]) x.unet.dropPlans();
}
for (const s of sizes(values["vae-sizes"]!)) {
  await compare(`VAE decode of a ${s}×${s} latent`, [a, b].map((x) => x.vae.decodePlan(s, s)));
  for (const x of [a, b]) x.vae.dropPlans();
}
