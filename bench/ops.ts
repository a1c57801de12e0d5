// GEMM-family throughput at Stable Diffusion 1.5 shapes, against numpy's float32 matmul on the same machine.
//
//   deno task bench:ops            (deno run -A bench/ops.ts)
//
// Each row builds its dispatches once, runs them once to compile and warm up, then records `reps` copies
// into ONE gpu.run and awaits once, so per-submit overhead (~11.5 ms on lavapipe) is amortised. Rows are
// measured three times (best kept) because the machine's cores are shared. numpy runs in the same process
// tree, after the first pass, for the GEMM-equivalent shape of every row ([M, K] · [N, K]ᵀ; for conv
// M = B·Ho·Wo, K = kh·kw·Cin, N = Cout). The last line is `matmul/numpy=… conv/numpy=…`, the best row of each.

import { type Dispatch, Gpu } from "../src/gpu/device.ts";
import type { ActDType } from "../src/gpu/pipelines.ts";
import { type Tensor, uploadTensor } from "../src/gpu/tensor.ts";
import { gemmTiling } from "../src/ops/gemm.ts";
import { conv3x3Dispatches, linearDispatches } from "./op_dispatches.ts";

interface Row {
  kind: "matmul" | "conv" | "attention";
  name: string;
  act: ActDType;
  flops: number;
  /** GEMM-equivalent shape for numpy, if any. */
  gemm?: [number, number, number];
  build: () => Promise<Dispatch[]> | Dispatch[];
  reps: number;
  dispatches?: Dispatch[];
  best?: number;
}

const gpu = await Gpu.create();
const choice = gemmTiling(gpu);
console.log(
  `adapter: ${gpu.report.adapter.description || gpu.report.adapter.vendor} (f16: ${gpu.f16}); GEMM tiling ` +
    `"${choice.name}": ${JSON.stringify(choice.tiling)}`,
);

/** Deterministic data without a slow host loop: a short pattern repeated. */
function filled(n: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < Math.min(n, 4099); i++) a[i] = (((i * 2654435761) >>> 0) / 4294967296 - 0.5) * scale;
  for (let i = 4099; i < n; i *= 2) a.copyWithin(i, 0, Math.min(i, n - i));
  return a;
}

const tensors: Tensor[] = [];
function tensor(shape: number[], dtype: "f32" | "f16", scale = 1): Tensor {
  const t = uploadTensor(gpu, filled(shape.reduce((a, b) => a * b, 1), scale), shape, dtype);
  tensors.push(t);
  return t;
}

function matmulRow(m: number, k: number, n: number, act: ActDType, reps: number): Row {
  return {
    kind: "matmul",
    name: `linear [${m}, ${k}]·[${n}, ${k}]ᵀ`,
    act,
    flops: 2 * m * k * n,
    gemm: [m, k, n],
    reps,
    build: () => linearDispatches(gpu, tensor, { m, k, n }, act, 0.1),
  };
}

function convRow(b: number, hw: number, cin: number, cout: number, act: ActDType, reps: number): Row {
  return {
    kind: "conv",
    name: `conv3×3 ${cin}→${cout} ${hw}×${hw} batch ${b}`,
    act,
    flops: 2 * b * hw * hw * 9 * cin * cout,
    gemm: [b * hw * hw, 9 * cin, cout],
    reps,
    build: () => conv3x3Dispatches(gpu, tensor, { b, hw, cin, cout }, act, 0.05),
  };
}

const rows: Row[] = [
  matmulRow(8192, 320, 1280, "f32", 6),
  matmulRow(1024, 1024, 1024, "f32", 12),
  convRow(2, 64, 320, 320, "f32", 3),
  convRow(2, 8, 1280, 1280, "f32", 8),
];
if (gpu.f16) {
  rows.push(matmulRow(8192, 320, 1280, "f16", 6), convRow(2, 64, 320, 320, "f16", 3));
}

// Attention is another contributor's op: measured only if src/ops/attention.ts exists.
const notes: string[] = [];
const attentionPath = new URL("../src/ops/attention.ts", import.meta.url);
try {
  await Deno.stat(attentionPath);
  const mod = await import(attentionPath.href);
  const [B, N, H, D] = [1, 4096, 8, 40];
  rows.push({
    kind: "attention",
    name: `attention ${N} tokens, ${H} heads × ${D}, batch ${B}`,
    act: "f32",
    flops: typeof mod.attentionFlops === "function"
      ? mod.attentionFlops(B, H, N, N, D)
      : 4 * B * H * N * N * D,
    reps: 1,
    build: () => {
      const qkv = () => tensor([B, N, H * D], "f32");
      return mod.attention(gpu, {
        q: qkv(),
        k: qkv(),
        v: qkv(),
        out: tensor([B, N, H * D], "f32"),
        heads: H,
        act: "f32",
      });
    },
  });
} catch (e) {
  notes.push(
    `attention row skipped: ${e instanceof Deno.errors.NotFound ? "src/ops/attention.ts absent" : e}`,
  );
}

async function measure(row: Row): Promise<number> {
  if (!row.dispatches) {
    row.dispatches = await row.build();
    gpu.run(row.dispatches, row.name); // compiles and warms up
    await gpu.sync(row.name);
  }
  const all = Array.from({ length: row.reps }, () => row.dispatches!).flat();
  const t0 = performance.now();
  gpu.run(all, row.name);
  await gpu.sync(row.name);
  const seconds = (performance.now() - t0) / 1000 / row.reps;
  row.best = Math.min(row.best ?? Infinity, seconds);
  return seconds;
}

/** numpy float32 matmul GFLOP/s per shape, or null with a note when python3/numpy are unavailable. */
async function numpyRates(shapes: [number, number, number][]): Promise<(number | null)[]> {
  const script = `
import json, sys, time
import numpy as np
out = []
for m, k, n in json.loads(sys.argv[1]):
    a = np.random.rand(m, k).astype(np.float32)
    b = np.random.rand(n, k).astype(np.float32)
    a @ b.T
    best = 1e9
    reps = max(1, int(2e9 / (2 * m * k * n)))
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b.T
        best = min(best, (time.perf_counter() - t) / reps)
    out.append(2 * m * k * n / best / 1e9)
print(json.dumps(out))
`;
  const env = Deno.env.toObject();
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  try {
    const res = await new Deno.Command("python3", {
      args: ["-c", script, JSON.stringify(shapes)],
      env,
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!res.success) {
      notes.push(`numpy column skipped: ${new TextDecoder().decode(res.stderr).trim().split("\n").pop()}`);
      return shapes.map(() => null);
    }
    return JSON.parse(new TextDecoder().decode(res.stdout));
  } catch (e) {
    notes.push(`numpy column skipped: ${e instanceof Deno.errors.NotFound ? "python3 not found" : e}`);
    return shapes.map(() => null);
  }
}

const started = performance.now();
for (const row of rows) await measure(row);
const shapes = rows.filter((r) => r.gemm).map((r) => r.gemm!);
const uniqueShapes = [...new Map(shapes.map((s) => [s.join("x"), s])).values()];
const rates = await numpyRates(uniqueShapes);
const numpyBy = new Map(uniqueShapes.map((s, i) => [s.join("x"), rates[i]]));
for (let pass = 0; pass < 2; pass++) for (const row of rows) await measure(row);

const table: string[][] = [["op", "act", "GFLOP", "ms/call", "GFLOP/s", "numpy GFLOP/s", "ratio"]];
const bestRatio: Record<string, number> = {};
for (const row of rows) {
  const rate = row.flops / row.best! / 1e9;
  const np = row.gemm ? numpyBy.get(row.gemm.join("x")) ?? null : null;
  const ratio = np ? rate / np : null;
  if (ratio !== null && row.act === "f32") bestRatio[row.kind] = Math.max(bestRatio[row.kind] ?? 0, ratio);
  table.push([
    row.name,
    row.act,
    (row.flops / 1e9).toFixed(2),
    (row.best! * 1000).toFixed(1),
    rate.toFixed(1),
    np === null ? "-" : np.toFixed(1),
    ratio === null ? "-" : ratio.toFixed(3),
  ]);
}
const widths = table[0].map((_, c) => Math.max(...table.map((r) => r[c].length)));
for (const r of table) {
  console.log(r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join("  "));
}
for (const n of notes) console.log(`note: ${n}`);
console.log(`note: ratios use f32 activations; total ${((performance.now() - started) / 1000).toFixed(0)} s`);
for (const t of tensors) t.destroy();
const fmt = (v: number | undefined) => (v === undefined ? "nan" : v.toFixed(3));
console.log(`matmul/numpy=${fmt(bestRatio.matmul)} conv/numpy=${fmt(bestRatio.conv)}`);
