// The LoRA merge kernel (shaders/lora.wgsl) on packed Linear and conv weights, in texture and buffer operand
// storage, against a float64 CPU reference rounded to f16 once.
//
// Shapes are off-tile on purpose: K = 37 (padded K) and 40 (buffer mode then merges into the checkpoint buffer
// itself), N = 13 (a last group of 1 row), a 3×3 conv with Cin = 13 (padded channels at every tap), a 1×1 conv.
// Two LoRAs of ranks 3 and 2 with their own scales are concatenated as the pipeline does. The GPU adds in f32,
// so a value may differ from the f64 reference by one f16 rounding step (1 ulp); padding must stay exactly 0.

import type { Gpu } from "../src/gpu/device.ts";
import { f16ToF32, f32ToF16 } from "../src/gpu/device.ts";
import { uploadTensor } from "../src/gpu/tensor.ts";
import type { GemmTiling } from "../src/ops/gemm.ts";
import { prepareLinearWeight } from "../src/ops/gemm_weights.ts";
import { prepareConvWeight } from "../src/ops/conv.ts";
import {
  backupOf,
  copyOperand,
  loraMerge,
  packDown,
  packedGeometry,
  type PackedWeight,
  readPacked,
  storeOf,
  transposeUp,
} from "../src/ops/lora_merge.ts";
import { randomArray, roundF16, testGpu } from "./util.ts";

/** The packed texels as f16 values in checkpoint order [N, K], and whether every padding lane is +0. */
function unpack(w: PackedWeight, bytes: Uint8Array): { values: Float32Array; paddingZero: boolean } {
  const { rows, rowTexels, k } = packedGeometry(w);
  const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, rows * rowTexels * 8);
  const values = new Float32Array(rows * k);
  const used = new Uint8Array(halves.length);
  for (let n = 0; n < rows; n++) {
    for (let kk = 0; kk < k; kk++) {
      let idx: number;
      if (w.kind === "linear-weight") idx = n * rowTexels * 8 + kk;
      else {
        const taps = w.kh * w.kw;
        const cin = Math.floor(kk / taps);
        const tap = kk % taps;
        idx = (n * rowTexels + tap * w.c8 + (cin >> 3)) * 8 + (cin & 7);
      }
      values[n * k + kk] = f16ToF32(halves[idx]);
      used[idx] = 1;
    }
  }
  const paddingZero = halves.every((h, i) => used[i] === 1 || h === 0);
  return { values, paddingZero };
}

interface Case {
  what: string;
  shape: number[];
  mode: GemmTiling["mode"];
}

async function checkCase(gpu: Gpu, c: Case, seed: number): Promise<void> {
  const [n, ...rest] = c.shape;
  const k = rest.reduce((a, b) => a * b, 1);
  const w = roundF16(randomArray(n * k, seed, 1 / Math.sqrt(k)));
  const t = uploadTensor(gpu, w, c.shape, "f16", c.what);
  const packed = c.shape.length === 4
    ? prepareConvWeight(gpu, t, c.mode)
    : prepareLinearWeight(gpu, t, c.mode);
  const loras = [
    { rank: 3, scale: 0.8 * (2 / 3), seed: seed + 1 },
    { rank: 2, scale: -1.3, seed: seed + 2 },
  ].map((l) => ({
    ...l,
    up: roundF16(randomArray(n * l.rank, l.seed, 0.5)),
    down: roundF16(randomArray(l.rank * k, l.seed + 7, 0.5)),
  }));
  const base = backupOf(gpu, packed, "base");
  const encoder = gpu.device.createCommandEncoder();
  copyOperand(encoder, storeOf(packed), base);
  gpu.device.queue.submit([encoder.finish()]);
  const before = await readPacked(gpu, packed);

  const downs = loras.map((l) => packDown(packed, l.down, l.rank));
  const down = new Float32Array(downs.reduce((a, d) => a + d.length, 0));
  downs.reduce((off, d) => (down.set(d, off), off + d.length), 0);
  const scales = Float32Array.from(loras.flatMap((l) => Array(l.rank).fill(l.scale)));
  const { dispatch, buffers } = loraMerge(gpu, {
    weight: packed,
    base,
    upT: transposeUp(n, loras),
    down,
    scales,
    label: c.what,
  });
  gpu.run([dispatch]);
  const got = unpack(packed, await readPacked(gpu, packed));
  if (!got.paddingZero) throw new Error(`${c.what}: padding lanes are not zero after the merge`);
  let exact = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < k; j++) {
      let v = w[i * k + j];
      for (const l of loras) {
        for (let r = 0; r < l.rank; r++) v += Math.fround(l.scale) * l.up[i * l.rank + r] * l.down[r * k + j];
      }
      const want = f16ToF32(f32ToF16(v));
      const have = got.values[i * k + j];
      const ulp = Math.max(2 ** -24, 2 ** (Math.floor(Math.log2(Math.abs(want) || 2 ** -24)) - 10));
      if (Math.abs(have - want) > ulp * 1.0001) {
        throw new Error(`${c.what}: [${i}, ${j}] = ${have}, want ${want} (f64 ${v})`);
      }
      if (have === want) exact++;
    }
  }
  if (exact < 0.95 * n * k) throw new Error(`${c.what}: only ${exact} of ${n * k} values round like f64`);
  // Merging again from the base does not compound; copying the base back restores the packed bytes.
  gpu.run([dispatch]);
  const again = unpack(packed, await readPacked(gpu, packed));
  if (again.values.some((v, i) => !Object.is(v, got.values[i]))) {
    throw new Error(`${c.what}: merge compounds`);
  }
  const restore = gpu.device.createCommandEncoder();
  copyOperand(restore, base, storeOf(packed));
  gpu.device.queue.submit([restore.finish()]);
  const after = await readPacked(gpu, packed);
  if (!after.every((b, i) => b === before[i])) throw new Error(`${c.what}: restore is not bit-exact`);
  for (const b of buffers) b.destroy();
}

Deno.test("lora merge: Linear and conv weights, texture and buffer operands, two LoRAs, restore exact", async () => {
  const gpu = await testGpu();
  let seed = 500;
  for (const mode of ["texture", "buffer"] as const) {
    for (
      const [what, shape] of [
        ["linear K=37", [13, 37]],
        ["linear K=40", [13, 40]],
        ["conv 3×3 Cin=13", [10, 13, 3, 3]],
        ["conv 1×1 Cin=24", [7, 24, 1, 1]],
      ] as const
    ) {
      await checkCase(gpu, { what: `${what} (${mode})`, shape: [...shape], mode }, seed += 10);
    }
  }
});
