// `deno run -A bench/unet_ab.ts --base DIR [--weights DIR] [--sizes 32,64] [--rounds 3] [--precision f16]
// [--profile]`:
// one batch-2 UNet eval (SD 1.5 synthetic weights, as bench:models) of this tree against another checkout of
// the project in DIR (e.g. `git archive main | tar -x -C DIR`), both loaded in this process on their own
// device. The two run alternately, A B A B …, so that whatever else loads the machine (lavapipe shares its
// CPU cores) hits both alike; prints each side's dispatches per call, its median seconds and B / A.
// A single bench:models run cannot separate a change from the load of the moment on a shared machine.
// --profile adds, per size, each side's GPU time by kernel (timestamp queries, one pass per dispatch).

import { parseArgs } from "node:util";
import { type Dispatch, Gpu } from "../src/gpu/device.ts";
import { loadPipeline } from "../src/pipeline/load.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    base: { type: "string" },
    weights: { type: "string", default: "weights/synth-sd15" },
    sizes: { type: "string", default: "32" },
    rounds: { type: "string", default: "3" },
    precision: { type: "string", default: "f16" },
    profile: { type: "boolean" },
  },
});
if (!values.base) throw new Error("--base DIR: the other checkout to compare with");
const baseDir = new URL(`${values.base.replace(/\/$/, "")}/`, `file://${Deno.cwd()}/`);
const precision = values.precision as "f32" | "f16";

interface Side {
  name: string;
  gpu: {
    sync(): Promise<void>;
    profile(dispatches: readonly Dispatch[]): Promise<{ label: string; ms: number }[] | null>;
  };
  unet: {
    plan(b: number, h: number, w: number, t: number): {
      plan: { dispatches: Dispatch[]; run(label: string): void };
      timestep: { buffer: GPUBuffer };
    };
    dropPlans(): void;
  };
  device: GPUDevice;
}

async function side(name: string, gpuModule: string, loadModule: string): Promise<Side> {
  const { Gpu: G } = await import(gpuModule);
  const { loadPipeline: load } = await import(loadModule);
  const gpu = await G.create();
  const pipe = await load(gpu, values.weights, { precision });
  return { name, gpu, unet: pipe.parts.unet, device: gpu.device };
}

const a = await side(
  "A (base)",
  new URL("src/gpu/device.ts", baseDir).href,
  new URL("src/pipeline/load.ts", baseDir).href,
);
const b: Side = await (async () => {
  const gpu = await Gpu.create();
  const pipe = await loadPipeline(gpu, values.weights!, { precision });
  return { name: "B (this tree)", gpu, unet: pipe.parts.unet, device: gpu.device };
})();

const median = (xs: number[]) => [...xs].sort((p, q) => p - q)[Math.floor(xs.length / 2)];
for (const s of values.sizes!.split(",").map(Number)) {
  const plans = [a, b].map((x) => {
    const p = x.unet.plan(2, s, s, 77);
    x.device.queue.writeBuffer(p.timestep.buffer, 0, new Float32Array([500, 500]));
    return p;
  });
  const seconds: number[][] = [[], []];
  for (let r = -1; r < Number(values.rounds); r++) {
    for (const [i, x] of [a, b].entries()) {
      const t0 = performance.now();
      plans[i].plan.run("unet");
      await x.gpu.sync();
      if (r >= 0) seconds[i].push((performance.now() - t0) / 1000); // round -1: warm-up (shader compiles)
    }
  }
  const [ma, mb] = seconds.map(median);
  console.log(`UNet batch 2, ${s}×${s} latent, ${precision}, ${values.rounds} alternating rounds:`);
  for (const [i, x] of [a, b].entries()) {
    console.log(
      `  ${x.name}: ${plans[i].plan.dispatches.length} dispatches per call, median ${
        [ma, mb][i].toFixed(2)
      } s (${seconds[i].map((v) => v.toFixed(2)).join(", ")})`,
    );
  }
  console.log(`  B / A: ${(mb / ma).toFixed(3)}`);
  if (values.profile) {
    // Per kernel (pipeline label): A's and B's summed GPU time and dispatch counts.
    const byKernel = new Map<string, { ms: number[]; n: number[] }>();
    for (const [i, x] of [a, b].entries()) {
      const times = await x.gpu.profile(plans[i].plan.dispatches);
      if (!times) break;
      plans[i].plan.dispatches.forEach((d, j) => {
        const e = byKernel.get(d.pipeline.label) ?? { ms: [0, 0], n: [0, 0] };
        e.ms[i] += times[j].ms;
        e.n[i]++;
        byKernel.set(d.pipeline.label, e);
      });
    }
    const rows = [...byKernel].sort((p, q) => q[1].ms[0] + q[1].ms[1] - p[1].ms[0] - p[1].ms[1]);
    for (const [label, e] of rows) {
      const side = (i: number) => `${(e.ms[i] / 1000).toFixed(2)} s / ${e.n[i]}`.padEnd(16);
      console.log(`    ${label.padEnd(34)} A ${side(0)} B ${side(1)}`);
    }
  }
  for (const x of [a, b]) x.unet.dropPlans();
}
