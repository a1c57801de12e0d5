// Times every GEMM/conv candidate of the autotuner (src/ops/tune_candidates.ts) on a few SD 1.5 op shapes,
// on one operand storage, and prints GFLOP/s and each candidate's max relative difference from the default:
// what the tuner would measure at load, for every candidate at once (f16 accumulation included).
//
//   deno run -A bench/gemm_candidates.ts [--storage buffer|texture] [--rows N] [--reps N]

import { parseArgs } from "node:util";
import { Gpu } from "../src/gpu/device.ts";
import { readTensor } from "../src/gpu/tensor.ts";
import { gemmCandidates, opInputs } from "../src/ops/tune_candidates.ts";
import { opFlops, opKey, type OpShape } from "../src/ops/tuning.ts";

const { values } = parseArgs({
  options: {
    storage: { type: "string", default: "buffer" },
    rows: { type: "string", default: "1024" },
    reps: { type: "string", default: "3" },
  },
});
const storage = values.storage === "texture" ? "texture" : "buffer";
const m = Number(values.rows);
const reps = Number(values.reps);
const gpu = await Gpu.create();
const act = gpu.f16 ? "f16" : "f32";
const shapes: OpShape[] = [
  { kind: "linear", m, k: 320, n: 1280, act, bias: true, residual: false, activation: "none", geglu: false },
  { kind: "linear", m, k: 1280, n: 320, act, bias: true, residual: true, activation: "none", geglu: false },
  {
    kind: "conv",
    b: 1,
    h: Math.max(3, Math.round(m / 32)),
    w: 32,
    cin: 320,
    cout: 320,
    kh: 3,
    kw: 3,
    stride: 1,
    padding: "same",
    act,
    bias: true,
    timeBias: false,
    residual: false,
    relu: false,
  },
];
console.log(
  `adapter: ${gpu.report.adapter.description} (f16 ${gpu.f16}), ${storage} operands, ${act} activations`,
);
for (const shape of shapes) {
  const inputs = opInputs(gpu, shape, storage);
  const gflop = opFlops(shape) / 1e9;
  let reference: Float32Array | null = null;
  for (const c of gemmCandidates(gpu, shape.kind === "conv" ? "conv" : "linear", storage, act)) {
    const ds = inputs.build(c);
    gpu.run(ds);
    await gpu.sync("warm-up");
    let best = Infinity;
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      gpu.run(ds);
      await gpu.sync("timed");
      best = Math.min(best, performance.now() - t0);
    }
    const out = await readTensor(gpu, inputs.out);
    reference ??= out;
    let d = 0;
    let mx = 0;
    for (let i = 0; i < out.length; i++) {
      d = Math.max(d, Math.abs(out[i] - reference[i]));
      mx = Math.max(mx, Math.abs(reference[i]));
    }
    console.log(
      `${opKey(shape).padEnd(48)} ${c.label.padEnd(36)} ${(gflop / (best / 1000)).toFixed(1).padStart(7)} ` +
        `GFLOP/s  ${best.toFixed(1).padStart(8)} ms  diff ${(d / mx).toExponential(2)}`,
    );
  }
  inputs.destroy();
}
gpu.destroy();
