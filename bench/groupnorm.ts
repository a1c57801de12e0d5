// `deno run -A bench/groupnorm.ts [--reps 10] [--rounds 3]`: GroupNorm (32 groups, f16 activations, SiLU) at
// the UNet's and the VAE's map sizes with its statistics as one dispatch (a workgroup per group, gn_fused)
// or as partials + merge (two dispatches): the measurement behind FUSED_STATS_MAX_BYTES in src/ops/norm.ts.
// Each row records `reps` copies of the op into one gpu.run (submit overhead amortised) and alternates the
// two variants for `rounds` rounds; medians of wall and of process CPU milliseconds per op.

import { parseArgs } from "node:util";
import { type Dispatch, Gpu } from "../src/gpu/device.ts";
import { emptyTensor, uploadTensor } from "../src/gpu/tensor.ts";
import { groupNorm } from "../src/ops/norm.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { reps: { type: "string", default: "10" }, rounds: { type: "string", default: "3" } },
});
const reps = Number(values.reps);

/** CPU seconds of this process (all threads; Linux /proc, 100 Hz ticks). */
function cpuSeconds(): number {
  const stat = Deno.readTextFileSync("/proc/self/stat");
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(rest[11]) + Number(rest[12])) / 100;
}

const gpu = await Gpu.create();
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const shapes: [string, number[]][] = [
  ["UNet 32² level 0", [2, 32, 32, 320]],
  ["UNet 32² level 1", [2, 16, 16, 640]],
  ["UNet 64² level 1", [2, 32, 32, 640]],
  ["VAE 256² mid", [1, 32, 32, 512]],
  ["UNet 64² level 0", [2, 64, 64, 320]],
  ["VAE 512² mid / 256² up 1", [1, 64, 64, 512]],
  ["VAE 256² up 2", [1, 128, 128, 256]],
  ["VAE 256² up 3", [1, 256, 256, 128]],
];
console.log("map                              MiB   fused ms (CPU)    split ms (CPU)");
for (const [name, shape] of shapes) {
  const c = shape[3];
  const n = shape.reduce((a, b) => a * b, 1);
  const x = uploadTensor(gpu, new Float32Array(n).map((_, i) => Math.sin(i * 0.37)), shape, "f16");
  const out = emptyTensor(gpu, shape, "f16");
  const gamma = uploadTensor(gpu, new Float32Array(c).fill(1), [c], "f16");
  const beta = uploadTensor(gpu, new Float32Array(c), [c], "f16");
  const build = (stats: "fused" | "split"): Dispatch[] =>
    Array.from(
      { length: reps },
      () => groupNorm(gpu, { x, gamma, beta, out, groups: 32, eps: 1e-6, silu: true, act: "f16", stats }),
    ).flat();
  const variants = { fused: build("fused"), split: build("split") };
  const ms: Record<string, number[]> = { fused: [], split: [] };
  const cpu: Record<string, number[]> = { fused: [], split: [] };
  for (const v of ["fused", "split"] as const) {
    gpu.run(variants[v].slice(0, variants[v].length / reps), "warm-up");
    await gpu.sync();
  }
  for (let r = 0; r < Number(values.rounds); r++) {
    for (const v of r % 2 ? ["split", "fused"] as const : ["fused", "split"] as const) {
      const [t0, c0] = [performance.now(), cpuSeconds()];
      gpu.run(variants[v], v);
      await gpu.sync();
      ms[v].push((performance.now() - t0) / reps);
      cpu[v].push(((cpuSeconds() - c0) * 1000) / reps);
    }
  }
  const cell = (v: string) =>
    `${median(ms[v]).toFixed(2).padStart(7)} (${median(cpu[v]).toFixed(1).padStart(6)})`;
  console.log(
    `${`${name} [${shape}]`.padEnd(32)} ${(n * 2 / 2 ** 20).toFixed(1).padStart(5)}  ${cell("fused")}   ${
      cell("split")
    }`,
  );
  for (const t of [x, out, gamma, beta]) t.destroy();
}
