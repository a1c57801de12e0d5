// Flash-style attention against a float64 CPU reference (explicit softmax, as diffusers' AttnProcessor):
// self/cross, causal, fused-QKV slices, residual, head dims 6/8/16/40/64/160, token counts that are not
// multiples of any tile, both activation precisions and both weight paths, and one SD-sized case
// (4096 × 4096 tokens, 8 heads, D = 40, batch 2) checked on sampled query rows.
// Tolerances (max|gpu − ref| / max|ref|): f32 1e-5, f16 activations 5e-3 (f16-rounded inputs).

import type { Gpu } from "../src/gpu/device.ts";
import type { ActDType } from "../src/gpu/pipelines.ts";
import { emptyTensor, readTensor, uploadTensor } from "../src/gpu/tensor.ts";
import { attention, attentionFlops } from "../src/ops/attention.ts";
import type { TokenSlice } from "../src/ops/attention_pack.ts";
import { attentionRowRef, type TokenLayout } from "./ref/ops.ts";
import { assertClose, randomArray, roundF16, testGpu } from "./util.ts";

const TOL: Record<ActDType, number> = { f32: 1e-5, f16: 5e-3 };

interface Case {
  name: string;
  batch: number;
  nq: number;
  nk: number;
  heads: number;
  headDim: number;
  causal?: boolean;
  residual?: boolean;
  /** q, k, v as slices of one [B, N, 3·H·D] buffer (self-attention only) */
  fused?: boolean;
  /** out written into channels [H·D, 2·H·D) of a [B, Nq, 3·H·D] tensor */
  outSlice?: boolean;
  /** magnitude of q (peakier softmax exercises the online rescaling) */
  qScale?: number;
}

const CASES: Case[] = [
  { name: "self B3 N77 H2 D40", batch: 3, nq: 77, nk: 77, heads: 2, headDim: 40, qScale: 4 },
  {
    name: "cross 13×9 → 77, H4 D16, residual",
    batch: 2,
    nq: 117,
    nk: 77,
    heads: 4,
    headDim: 16,
    residual: true,
  },
  {
    name: "causal CLIP-like N77 H3 D64",
    batch: 2,
    nq: 77,
    nk: 77,
    heads: 3,
    headDim: 64,
    causal: true,
    qScale: 3,
  },
  { name: "cross N50 → 37, H4 D8", batch: 2, nq: 50, nk: 37, heads: 4, headDim: 8, qScale: 6 },
  {
    name: "fused QKV N37 H2 D40, out slice",
    batch: 2,
    nq: 37,
    nk: 37,
    heads: 2,
    headDim: 40,
    fused: true,
    outSlice: true,
  },
  { name: "unaligned D6 H3 (scalar path)", batch: 3, nq: 13, nk: 21, heads: 3, headDim: 6, residual: true },
  { name: "D160 H1 cross 64 → 77", batch: 1, nq: 64, nk: 77, heads: 1, headDim: 160 },
];

async function runCase(gpu: Gpu, act: ActDType, cs: Case, seed: number): Promise<void> {
  const { batch: b, nq, nk, heads, headDim: d } = cs;
  const hd = heads * d;
  const held = (x: Float32Array) => (act === "f16" ? roundF16(x) : x);
  let q: TokenSlice, k: TokenSlice, v: TokenSlice;
  let qData: Float32Array, kData: Float32Array, vData: Float32Array;
  let qL: TokenLayout, kL: TokenLayout, vL: TokenLayout;
  if (cs.fused) {
    const data = randomArray(b * nq * 3 * hd, seed, 2);
    const t = uploadTensor(gpu, data, [b, nq, 3 * hd], act);
    qData = kData = vData = held(data);
    const layout = (offset: number) => ({ offset, rowStride: 3 * hd, batchStride: nq * 3 * hd });
    [qL, kL, vL] = [layout(0), layout(hd), layout(2 * hd)];
    [q, k, v] = [{ tensor: t, ...qL }, { tensor: t, ...kL }, { tensor: t, ...vL }];
  } else {
    const qa = randomArray(b * nq * hd, seed, cs.qScale ?? 1);
    const ka = randomArray(b * nk * hd, seed + 1, 1);
    const va = randomArray(b * nk * hd, seed + 2, 2);
    q = { tensor: uploadTensor(gpu, qa, [b, nq, hd], act) };
    k = { tensor: uploadTensor(gpu, ka, [b, nk, hd], act) };
    v = { tensor: uploadTensor(gpu, va, [b, nk, hd], act) };
    [qData, kData, vData] = [held(qa), held(ka), held(va)];
    qL = { offset: 0, rowStride: hd, batchStride: nq * hd };
    kL = { offset: 0, rowStride: hd, batchStride: nk * hd };
    vL = kL;
  }
  const outWidth = cs.outSlice ? 3 * hd : hd;
  const outOffset = cs.outSlice ? hd : 0;
  const outTensor = emptyTensor(gpu, [b, nq, outWidth], act);
  const out: TokenSlice = { tensor: outTensor, offset: outOffset };
  const resData = cs.residual ? held(randomArray(b * nq * outWidth, seed + 3, 1)) : null;
  const residual = resData
    ? { tensor: uploadTensor(gpu, resData, [b, nq, outWidth], act), offset: outOffset }
    : undefined;

  gpu.run(attention(gpu, { q, k, v, out, heads, headDim: d, causal: cs.causal, residual, act }));
  const got = await readTensor(gpu, outTensor);

  const ref = { q: qData, k: kData, v: vData, qLayout: qL, kLayout: kL, vLayout: vL, nk, heads, headDim: d };
  const gotRows: number[] = [];
  const wantRows: number[] = [];
  for (let bi = 0; bi < b; bi++) {
    for (let i = 0; i < nq; i++) {
      const row = attentionRowRef({ ...ref, causal: cs.causal }, bi, i);
      for (let c = 0; c < hd; c++) {
        const at = (bi * nq + i) * outWidth + outOffset + c;
        gotRows.push(got[at]);
        wantRows.push(row[c] + (resData ? resData[at] : 0));
      }
    }
  }
  assertClose(gotRows, wantRows, TOL[act], `attention ${cs.name} (${act})`);
}

Deno.test("attention matches the CPU reference (f16-capable device: f32 and f16 activations)", async () => {
  const gpu = await testGpu();
  const acts: ActDType[] = gpu.f16 ? ["f32", "f16"] : ["f32"];
  for (const [i, cs] of CASES.entries()) {
    for (const act of acts) await runCase(gpu, act, cs, 10 * i);
  }
});

Deno.test("attention on the unpacked-weights device (f32 activations)", async () => {
  const gpu = await testGpu({ f16: false });
  for (const [i, cs] of CASES.slice(0, 3).entries()) await runCase(gpu, "f32", cs, 100 + 10 * i);
});

Deno.test("attention rejects mismatched shapes and an out/residual alias", async () => {
  const gpu = await testGpu();
  const t = (shape: number[]) => emptyTensor(gpu, shape, "f32");
  const q = t([2, 10, 16]);
  const kv = t([2, 7, 16]);
  const expectThrow = (fn: () => unknown, what: string) => {
    try {
      fn();
    } catch {
      return;
    }
    throw new Error(`${what}: expected an error`);
  };
  expectThrow(
    () => attention(gpu, { q, k: kv, v: t([2, 8, 16]), out: t([2, 10, 16]), heads: 2, act: "f32" }),
    "nk",
  );
  expectThrow(
    () => attention(gpu, { q, k: t([1, 7, 16]), v: kv, out: t([2, 10, 16]), heads: 2, act: "f32" }),
    "batch",
  );
  const o = t([2, 10, 16]);
  expectThrow(() => attention(gpu, { q, k: kv, v: kv, out: o, residual: o, heads: 2, act: "f32" }), "alias");
  expectThrow(() => attention(gpu, { q, k: kv, v: kv, out: t([2, 10, 16]), heads: 3, act: "f32" }), "heads");
  expectThrow(() => attention(gpu, { q, k: kv, v: kv, out: t([2, 10, 16]), heads: 2, act: "f16" }), "dtype");
});

Deno.test("attention at SD scale: 4096 × 4096 tokens, 8 heads, D = 40, batch 2 (sampled rows)", async () => {
  const gpu = await testGpu();
  const [b, n, heads, d] = [2, 4096, 8, 40];
  const hd = heads * d;
  const qa = randomArray(b * n * hd, 7001, 3);
  const ka = randomArray(b * n * hd, 7002, 1);
  const va = randomArray(b * n * hd, 7003, 2);
  const q = uploadTensor(gpu, qa, [b, n, hd], "f32");
  const k = uploadTensor(gpu, ka, [b, n, hd], "f32");
  const v = uploadTensor(gpu, va, [b, n, hd], "f32");
  const out = emptyTensor(gpu, [b, n, hd], "f32");
  const plan = attention(gpu, { q, k, v, out, heads, act: "f32" });
  const start = performance.now();
  gpu.run(plan);
  await gpu.sync();
  const seconds = (performance.now() - start) / 1000;
  const got = await readTensor(gpu, out);
  const flops = attentionFlops(b, heads, n, n, d);
  console.log(
    `attention 2×4096×4096×8h×D40 f32: ${(seconds * 1000).toFixed(0)} ms, ` +
      `${(flops / seconds / 1e9).toFixed(1)} GFLOP/s (incl. K/V packing and submit)`,
  );
  const layout = { offset: 0, rowStride: hd, batchStride: n * hd };
  const ref = {
    q: qa,
    k: ka,
    v: va,
    qLayout: layout,
    kLayout: layout,
    vLayout: layout,
    nk: n,
    heads,
    headDim: d,
  };
  // Rows at both ends, tile boundaries and in between, in both batch items.
  const rows = [0, 1, 63, 64, 65, 1000, 2047, 2048, 3333, 4031, 4094, 4095];
  const gotRows: number[] = [];
  const wantRows: number[] = [];
  for (let bi = 0; bi < b; bi++) {
    for (const i of rows) {
      const want = attentionRowRef(ref, bi, i);
      for (let c = 0; c < hd; c++) {
        gotRows.push(got[(bi * n + i) * hd + c]);
        wantRows.push(want[c]);
      }
    }
  }
  assertClose(gotRows, wantRows, 1e-5, "attention 4096×4096 sampled rows");
  for (const t of [q, k, v, out]) t.destroy();
});
