// The autotuner (src/ops/autotune.ts): every candidate tiling it may pick, on either operand storage,
// against the float64 CPU references (tests/ref/), and the tuning pass itself: picks installed in the
// ops, results cached per adapter, reused at the next start, measured again with retune, bounded by its
// budget, and off where the choice is forced.
//
// Shapes are off-tile: linear M = 77 (and M = 2, the time embedding's, where split-K matters) with K = 320
// and 37, N = 52; GEGLU D = 20; conv 3×3 over 9×7 pixels, 37 → 20 channels with bias, time bias and
// residual. Tolerances as the op tests': f32 activations 1e-5, f16 5e-3.

import type { Gpu } from "../src/gpu/device.ts";
import { Gpu as GpuClass } from "../src/gpu/device.ts";
import type { ActDType } from "../src/gpu/pipelines.ts";
import { emptyTensor, readTensor, uploadTensor } from "../src/gpu/tensor.ts";
import { conv2d, prepareConvWeight } from "../src/ops/conv.ts";
import { prepareLinearWeight } from "../src/ops/gemm_weights.ts";
import { geglu, linear } from "../src/ops/linear.ts";
import { attention } from "../src/ops/attention.ts";
import { attentionCandidates, type Candidate, gemmCandidates } from "../src/ops/tune_candidates.ts";
import { autotune, type TunedOp, type TuneEntry } from "../src/ops/autotune.ts";
import { linearKey, opKey, type OpShape, setTunedChoice, tunedChoice } from "../src/ops/tuning.ts";
import { conv2dRef, gegluRef, linearRef } from "./ref/gemm.ts";
import { attentionRowRef } from "./ref/ops.ts";
import { assert, assertClose, assertEquals, randomArray, roundF16, testGpu } from "./util.ts";

const TOL: Record<ActDType, number> = { f32: 1e-5, f16: 5e-3 };

function data(gpu: Gpu, shape: number[], seed: number, act: ActDType | "weight", scale = 1) {
  const raw = randomArray(shape.reduce((a, b) => a * b, 1), seed, scale);
  const host = act === "f32" ? raw : roundF16(raw);
  return { host, tensor: uploadTensor(gpu, host, shape, act === "weight" ? "f16" : act) };
}

async function checkLinear(gpu: Gpu, c: Candidate, act: ActDType, m: number, k: number, seed: number) {
  if (c.kind !== "gemm") throw new Error("GEMM candidate expected");
  const n = 52;
  const x = data(gpu, [m, k], seed, act);
  const w = data(gpu, [n, k], seed + 1, "weight", 3 / Math.sqrt(k));
  const b = data(gpu, [n], seed + 2, "weight", 0.5);
  const r = data(gpu, [m, n], seed + 3, act);
  const out = emptyTensor(gpu, [m, n], act);
  const weight = prepareLinearWeight(gpu, w.tensor, c.tiling.mode);
  gpu.run(linear(gpu, {
    x: x.tensor,
    weight,
    bias: b.tensor,
    residual: r.tensor,
    out,
    activation: "gelu",
    act,
    tiling: c.tiling,
  }));
  const ref = linearRef(x.host, w.host, m, k, n, { bias: b.host, residual: r.host, activation: "gelu" });
  assertClose(await readTensor(gpu, out), ref, TOL[act], `linear ${c.label} ${act} M=${m} K=${k}`);
  for (const t of [x, w, b, r]) t.tensor.destroy();
  out.destroy();
}

async function checkGeglu(gpu: Gpu, c: Candidate, act: ActDType, seed: number) {
  if (c.kind !== "gemm") throw new Error("GEMM candidate expected");
  const [m, k, d] = [77, 40, 20];
  const x = data(gpu, [m, k], seed, act);
  const w = data(gpu, [2 * d, k], seed + 1, "weight", 3 / Math.sqrt(k));
  const b = data(gpu, [2 * d], seed + 2, "weight", 0.5);
  const out = emptyTensor(gpu, [m, d], act);
  const weight = prepareLinearWeight(gpu, w.tensor, c.tiling.mode);
  gpu.run(geglu(gpu, { x: x.tensor, weight, bias: b.tensor, out, act, tiling: c.tiling }));
  assertClose(
    await readTensor(gpu, out),
    gegluRef(x.host, w.host, b.host, m, k, d),
    TOL[act],
    `geglu ${c.label} ${act}`,
  );
  for (const t of [x, w, b]) t.tensor.destroy();
  out.destroy();
}

async function checkConv(gpu: Gpu, c: Candidate, act: ActDType, seed: number) {
  if (c.kind !== "gemm") throw new Error("GEMM candidate expected");
  const [b, h, w, cin, cout] = [2, 9, 7, 37, 20];
  const x = data(gpu, [b, h, w, cin], seed, act);
  const wt = data(gpu, [cout, cin, 3, 3], seed + 1, "weight", 1 / Math.sqrt(9 * cin));
  const bias = data(gpu, [cout], seed + 2, "weight", 0.5);
  const timeBias = data(gpu, [b, cout], seed + 3, act);
  const residual = data(gpu, [b, h, w, cout], seed + 4, act);
  const out = emptyTensor(gpu, [b, h, w, cout], act);
  const weight = prepareConvWeight(gpu, wt.tensor, c.tiling.mode);
  gpu.run(conv2d(gpu, {
    x: x.tensor,
    weight,
    bias: bias.tensor,
    timeBias: timeBias.tensor,
    residual: residual.tensor,
    out,
    stride: 1,
    padding: "same",
    act,
    tiling: c.tiling,
  }));
  const ref = conv2dRef({
    x: x.host,
    weight: wt.host,
    bias: bias.host,
    timeBias: timeBias.host,
    residual: residual.host,
    b,
    h,
    w,
    cin,
    cout,
    kh: 3,
    kw: 3,
    ho: h,
    wo: w,
    stride: 1,
    padTop: 1,
    padLeft: 1,
  });
  assertClose(await readTensor(gpu, out), ref, TOL[act], `conv ${c.label} ${act}`);
  for (const t of [x, wt, bias, timeBias, residual]) t.tensor.destroy();
  out.destroy();
}

Deno.test("autotune candidates: every GEMM, GEGLU and conv candidate of both operand storages equals the CPU reference", async () => {
  const gpu = await testGpu();
  const acts: ActDType[] = gpu.f16 ? ["f32", "f16"] : ["f32"];
  let seed = 1;
  let count = 0;
  for (const storage of ["texture", "buffer"] as const) {
    for (const act of acts) {
      const linears = gemmCandidates(gpu, "linear", storage, act);
      if (gpu.report.subgroupSize !== null) {
        assert(
          linears.some((c) => c.kind === "gemm" && c.tiling.splitK),
          `split-K among ${storage} candidates`,
        );
      }
      // f16 accumulation is offered for f16 activations on storage buffers; on textures it runs only when
      // forced (accumulate=f16), so that path is checked here too.
      const f16Acc = linears.filter((c) => c.kind === "gemm" && c.tiling.f16Acc).length;
      const offered = act === "f16" && storage === "buffer";
      assert(offered ? f16Acc > 0 : f16Acc === 0, `${storage} ${act}: ${f16Acc} f16-accumulating`);
      const forced: Candidate = {
        kind: "gemm",
        label: "texture 8x8/8 f16acc (forced)",
        tiling: { mode: "texture", tm: 8, tn: 8, wg: 8, f16Acc: true },
      };
      if (act === "f16" && storage === "texture") linears.push(forced);
      for (const c of linears) {
        await checkLinear(gpu, c, act, 77, 320, seed += 10);
        await checkLinear(gpu, c, act, 2, 37, seed += 10);
      }
      const extra = act === "f16" && storage === "texture" ? [forced] : [];
      for (const c of [...gemmCandidates(gpu, "geglu", storage, act), ...extra]) {
        await checkGeglu(gpu, c, act, seed += 10);
      }
      for (const c of [...gemmCandidates(gpu, "conv", storage, act), ...extra]) {
        assert(c.kind === "gemm" && !c.tiling.splitK, "no split-K conv");
        await checkConv(gpu, c, act, seed += 10);
      }
      count += linears.length;
    }
  }
  assert(count >= 9, `${count} linear candidates`);
});

Deno.test("autotune candidates: every attention candidate equals the CPU reference (self, causal, cross)", async () => {
  const gpu = await testGpu();
  const cases = [
    { batch: 2, nq: 77, nk: 77, heads: 2, headDim: 40, causal: false },
    { batch: 1, nq: 77, nk: 77, heads: 3, headDim: 64, causal: true },
    { batch: 2, nq: 50, nk: 37, heads: 2, headDim: 8, causal: false },
  ];
  let seed = 500;
  for (const cs of cases) {
    const hd = cs.heads * cs.headDim;
    for (const c of attentionCandidates(cs.headDim)) {
      if (c.kind !== "attention") throw new Error("attention candidate expected");
      for (const act of (gpu.f16 ? ["f32", "f16"] : ["f32"]) as ActDType[]) {
        const q = data(gpu, [cs.batch, cs.nq, hd], seed++, act, 3);
        const k = data(gpu, [cs.batch, cs.nk, hd], seed++, act);
        const v = data(gpu, [cs.batch, cs.nk, hd], seed++, act, 2);
        const out = emptyTensor(gpu, [cs.batch, cs.nq, hd], act);
        gpu.run(attention(gpu, {
          q: q.tensor,
          k: k.tensor,
          v: v.tensor,
          out,
          heads: cs.heads,
          causal: cs.causal,
          act,
          tiling: c.tiling,
        }));
        const got = await readTensor(gpu, out);
        const layout = (n: number) => ({ offset: 0, rowStride: hd, batchStride: n * hd });
        const ref = { q: q.host, k: k.host, v: v.host, nk: cs.nk, heads: cs.heads, headDim: cs.headDim };
        const want: number[] = [];
        for (let b = 0; b < cs.batch; b++) {
          for (let i = 0; i < cs.nq; i++) {
            const p = { ...ref, qLayout: layout(cs.nq), kLayout: layout(cs.nk), vLayout: layout(cs.nk) };
            want.push(...attentionRowRef({ ...p, causal: cs.causal }, b, i));
          }
        }
        assertClose(got, want, TOL[act], `${c.label} ${act} ${JSON.stringify(cs)}`);
        for (const t of [q, k, v]) t.tensor.destroy();
        out.destroy();
      }
    }
  }
});

const SHAPES: TunedOp[] = [
  {
    shape: {
      kind: "linear",
      m: 154,
      k: 64,
      n: 96,
      act: "f32",
      geglu: false,
      bias: true,
      residual: false,
      activation: "none",
    },
    calls: 1,
  },
  {
    shape: {
      kind: "conv",
      b: 1,
      h: 12,
      w: 12,
      cin: 32,
      cout: 32,
      kh: 3,
      kw: 3,
      stride: 1,
      padding: "same",
      act: "f32",
      bias: true,
      timeBias: false,
      residual: false,
      relu: false,
    },
    calls: 1,
  },
  {
    shape: { kind: "attention", batch: 1, nq: 64, nk: 77, heads: 2, headDim: 8, act: "f32", causal: false },
    calls: 1,
  },
];

Deno.test("autotune: measures, caches per adapter, reuses, retunes, respects the budget and forced choices", async () => {
  const dir = await Deno.makeTempDir();
  const gpus: Gpu[] = [];
  const fresh = async (choices = {}) => {
    const g = await GpuClass.create({ choices });
    gpus.push(g);
    return g;
  };
  try {
    const first = await autotune(await fresh(), SHAPES, { cacheDir: dir, budgetMs: 120_000 });
    assertEquals([first.measured, first.fromCache, first.untuned], [3, 0, 0], "first start measures all");
    assert(first.cacheFile?.startsWith(dir), `cache file in the cache folder: ${first.cacheFile}`);
    const file = JSON.parse(await Deno.readTextFile(first.cacheFile!));
    assertEquals(file.key.deno, Deno.version.deno, "keyed by the Deno version");
    assert(typeof file.key.sources === "string" && file.key.sources.length === 64, "keyed by the sources");
    for (const [key, e] of Object.entries(file.entries) as [string, TuneEntry][]) {
      const timed = Object.values(e.ms).filter((v) => typeof v === "number");
      assert(timed.length >= 2, `${key}: at least two candidates timed (${JSON.stringify(e.ms)})`);
    }
    const second = await autotune(await fresh(), SHAPES, { cacheDir: dir, budgetMs: 120_000 });
    assertEquals([second.measured, second.fromCache], [0, 3], "second start reads the cache");
    assertEquals(second.entries, first.entries, "same picks");
    const again = await autotune(await fresh(), SHAPES, { cacheDir: dir, budgetMs: 120_000, retune: true });
    assertEquals([again.measured, again.fromCache], [3, 0], "retune measures again");
    // A partial entry (the budget ran out inside its shape) applies its pick until it is measured again.
    const linearShape = SHAPES[0].shape;
    const k = opKey(linearShape);
    const g = await fresh();
    const alt = gemmCandidates(g, "linear")[1];
    if (alt.kind !== "gemm") throw new Error("gemm");
    file.entries[k] = { pick: alt.label, choice: alt.tiling, ms: { [alt.label]: 1 }, partial: true };
    await Deno.writeTextFile(first.cacheFile!, JSON.stringify(file));
    const partial = await autotune(g, SHAPES, { cacheDir: dir, budgetMs: 0 });
    assertEquals(partial.entries[k]?.pick, alt.label, "partial pick applied");
    assertEquals(tunedChoice(g, k), alt.tiling, "installed for the ops");
    const none = await autotune(await fresh(), SHAPES, { cacheDir: null, budgetMs: 0 });
    assertEquals([none.measured, none.untuned, none.cacheFile], [0, 3, null], "no budget: nothing measured");
    const forced = await autotune(await fresh({ tiling: "texture" }), SHAPES.slice(0, 2), { cacheDir: dir });
    assertEquals(forced.disabled, "every tuned choice is forced", "forced tiling is not tuned");
    const off = await autotune(await fresh({ tune: "off" }), SHAPES, { cacheDir: dir });
    assertEquals(off.disabled, "tune=off", "tune=off");
  } finally {
    for (const g of gpus) g.destroy();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("autotune: an installed pick is what the op builds (and a forced tiling wins over it)", async () => {
  const gpu = await GpuClass.create({ choices: {} });
  const shape: OpShape = SHAPES[0].shape;
  if (shape.kind !== "linear") throw new Error("linear");
  try {
    const candidates = gemmCandidates(gpu, "linear");
    const other = candidates[candidates.length - 1];
    if (other.kind !== "gemm") throw new Error("gemm");
    setTunedChoice(gpu, linearKey(shape.m, shape.k, shape.n, "f32", false), other.tiling);
    const x = uploadTensor(gpu, new Float32Array(shape.m * shape.k), [shape.m, shape.k], "f32");
    const w = uploadTensor(gpu, new Float32Array(shape.n * shape.k), [shape.n, shape.k], "f16");
    const out = emptyTensor(gpu, [shape.m, shape.n], "f32");
    const ds = linear(gpu, { x, weight: w, out, act: "f32" });
    const info = gpu.pipelines.info(ds[ds.length - 1].pipeline)!;
    assertEquals([info.defines.TM, info.defines.WG, !!info.defines.SPLITK], [
      other.tiling.tm,
      other.tiling.wg,
      !!other.tiling.splitK,
    ], `the tuned ${other.label} is built`);
    const built = (rows: number) => {
      const y = uploadTensor(gpu, new Float32Array(rows * shape.k), [rows, shape.k], "f32");
      const outY = emptyTensor(gpu, [rows, shape.n], "f32");
      const dy = linear(gpu, { x: y, weight: w, out: outY, act: "f32" });
      return gpu.pipelines.info(dy[dy.length - 1].pipeline)!;
    };
    // The key leaves the batch out: twice the rows (a batch of two) builds the same tuned kernel …
    assertEquals(
      [built(2 * shape.m).defines.TM, !!built(2 * shape.m).defines.SPLITK],
      [other.tiling.tm, !!other.tiling.splitK],
      "the same shape at twice the batch",
    );
    // … while a few-row linear of the same K and N (a time embedding) is another shape.
    assertEquals(
      built(2).defines.TM,
      candidates[0].kind === "gemm" ? candidates[0].tiling.tm : 0,
      "other shapes",
    );
    // A forced tile wins over a tuned one.
    const forced = await GpuClass.create({ choices: { tile: { tm: 4, tn: 4 } } });
    try {
      setTunedChoice(forced, linearKey(shape.m, shape.k, shape.n, "f32", false), other.tiling);
      const xf = uploadTensor(forced, new Float32Array(shape.m * shape.k), [shape.m, shape.k], "f32");
      const wf = uploadTensor(forced, new Float32Array(shape.n * shape.k), [shape.n, shape.k], "f16");
      const of = emptyTensor(forced, [shape.m, shape.n], "f32");
      const df = linear(forced, { x: xf, weight: wf, out: of, act: "f32" });
      const infoF = forced.pipelines.info(df[df.length - 1].pipeline)!;
      assertEquals([infoF.defines.TM, !!infoF.defines.SPLITK], [4, false], "forced tile");
    } finally {
      forced.destroy();
    }
  } finally {
    gpu.destroy();
  }
});
