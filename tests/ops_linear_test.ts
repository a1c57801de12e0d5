// linear (every epilogue, residual), GEGLU and bmm against float64 CPU references (tests/ref/gemm.ts).
//
// Shapes are deliberately not multiples of any tile: M = 77, K = 37 (unaligned: packed operands) or 40
// (aligned: buffer mode binds x and W directly), N = 13 (scalar stores) or 20 (vec4 stores), batch 3.
// Weights and biases are f16-rounded on the host, so the reference sees exactly what the GPU reads.
// Tolerances (max|got − ref| / max|ref|): f32 activations 1e-5 (f32 accumulation over K ≤ 320 terms);
// f16 activations 5e-3 (inputs rounded in the reference as well; the output is stored as f16).
// Most cases use a small tile (compiles fast); the adapter's production tiling runs on multi-tile shapes.

import type { Gpu } from "../src/gpu/device.ts";
import type { ActDType } from "../src/gpu/pipelines.ts";
import { emptyTensor, readTensor, type Tensor, uploadTensor } from "../src/gpu/tensor.ts";
import { GEMM_TILINGS, type GemmTiling, gemmTiling } from "../src/ops/gemm.ts";
import { prepareLinearGroup, prepareLinearWeight } from "../src/ops/gemm_weights.ts";
import { type Activation, bmm, geglu, linear } from "../src/ops/linear.ts";
import { activationRef, bmmRef, erf64, gegluRef, linearRef } from "./ref/gemm.ts";
import { assertClose, expectThrow, randomArray, roundF16, testGpu } from "./util.ts";

const TOL: Record<ActDType, number> = { f32: 1e-5, f16: 5e-3 };
const SMALL: Partial<GemmTiling> = { tm: 4, tn: 8 };
const MODES: GemmTiling["mode"][] = ["texture", "buffer", "shared"];
const ACTIVATIONS: Activation[] = ["none", "gelu", "gelu_tanh", "quick_gelu", "silu"];

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

/** Host data as the GPU will see it: activations rounded to f16 when act is f16, weights always f16. */
function activations(gpu: Gpu, n: number, seed: number, shape: number[], act: ActDType, scale = 1) {
  const raw = randomArray(n, seed, scale);
  const host = act === "f16" ? roundF16(raw) : raw;
  return { host, tensor: uploadTensor(gpu, host, shape, act) };
}

function weights(gpu: Gpu, n: number, seed: number, shape: number[], scale: number) {
  const host = roundF16(randomArray(n, seed, scale));
  return { host, tensor: uploadTensor(gpu, host, shape, "f16") };
}

interface LinearCase {
  m: number;
  k: number;
  n: number;
  act: ActDType;
  activation: Activation;
  bias: boolean;
  residual: boolean;
  tiling: Partial<GemmTiling>;
}

async function checkLinear(gpu: Gpu, c: LinearCase, seed: number): Promise<void> {
  const what =
    `linear M=${c.m} K=${c.k} N=${c.n} ${c.act} ${c.activation} bias=${c.bias} residual=${c.residual} ` +
    `${JSON.stringify(c.tiling)} f16=${gpu.f16}`;
  const x = activations(gpu, c.m * c.k, seed, [c.m, c.k], c.act);
  // Pre-activation values of order ±3 so that every activation's curved part is exercised.
  const w = weights(gpu, c.n * c.k, seed + 1, [c.n, c.k], 3 / Math.sqrt(c.k));
  const b = c.bias ? weights(gpu, c.n, seed + 2, [c.n], 0.5) : undefined;
  const r = c.residual ? activations(gpu, c.m * c.n, seed + 3, [c.m, c.n], c.act) : undefined;
  const out = emptyTensor(gpu, [c.m, c.n], c.act);
  gpu.run(linear(gpu, {
    x: x.tensor,
    weight: w.tensor,
    bias: b?.tensor,
    residual: r?.tensor,
    out,
    activation: c.activation,
    act: c.act,
    tiling: c.tiling,
  }));
  const got = await readTensor(gpu, out);
  const ref = linearRef(x.host, w.host, c.m, c.k, c.n, {
    bias: b?.host,
    residual: r?.host,
    activation: c.activation,
  });
  assertClose(got, ref, TOL[c.act], what);
  for (const t of [x.tensor, w.tensor, b?.tensor, r?.tensor, out]) t?.destroy();
}

Deno.test("erf reference is accurate (checks the checker)", () => {
  const known: [number, number][] = [[0.5, 0.5204998778130465], [1, 0.8427007929497149], [
    2.5,
    0.9995930479825550,
  ], [
    4,
    0.9999999845827421,
  ]];
  for (const [x, v] of known) {
    assert(Math.abs(erf64(x) - v) < 1e-12 && Math.abs(erf64(-x) + v) < 1e-12, `erf(${x})`);
  }
});

Deno.test("activation epilogues match float64 over [-10, 10] to 5e-7 · max(1, |ref|)", async () => {
  // x·Wᵀ with W = e₀ passes x exactly, so this isolates erf/tanh/sigmoid accuracy (A&S 7.1.26 would fail).
  const gpu = await testGpu();
  const [m, k, n] = [2001, 8, 4];
  const x = new Float32Array(m * k);
  for (let i = 0; i < m; i++) x[i * k] = Math.fround(-10 + (20 * i) / (m - 1));
  const w = new Float32Array(n * k);
  for (let j = 0; j < n; j++) w[j * k] = 1;
  const xt = uploadTensor(gpu, x, [m, k], "f32");
  const wt = uploadTensor(gpu, w, [n, k], "f16");
  for (const activation of ACTIVATIONS) {
    const out = emptyTensor(gpu, [m, n], "f32");
    gpu.run(linear(gpu, { x: xt, weight: wt, out, activation, act: "f32", tiling: { tm: 4, tn: 4 } }));
    const got = await readTensor(gpu, out);
    for (let i = 0; i < m; i++) {
      const ref = activationRef(x[i * k], activation);
      const err = Math.abs(got[i * n + 1] - ref) / Math.max(1, Math.abs(ref));
      assert(
        err <= 5e-7,
        `${activation}(${x[i * k]}) = ${got[i * n + 1]}, want ${ref} (error ${err.toExponential(2)})`,
      );
    }
    out.destroy();
  }
});

Deno.test("linear: every epilogue × f32/f16 activations × texture/buffer/shared modes, unaligned and aligned K", async () => {
  const gpu = await testGpu();
  const acts: ActDType[] = gpu.f16 ? ["f32", "f16"] : ["f32"];
  let seed = 100;
  for (const act of acts) {
    for (const mode of MODES) {
      for (const [i, activation] of ACTIVATIONS.entries()) {
        // The epilogue code is common to all modes: every activation in texture mode, two elsewhere.
        if (mode !== "texture" && i % 2 === 1) continue;
        for (const [m, k, n] of [[77, 37, 13], [77, 40, 20]]) {
          await checkLinear(gpu, {
            m,
            k,
            n,
            act,
            activation,
            bias: i !== 2,
            residual: i % 2 === 0,
            tiling: { ...SMALL, mode },
          }, seed += 10);
        }
      }
    }
  }
});

Deno.test("linear: f32 path without shader-f16 (weights read via unpack2x16float)", async () => {
  const gpu = await testGpu({ f16: false });
  assert(!gpu.f16, "shader-f16 disabled");
  let seed = 500;
  for (const mode of MODES) {
    for (const [m, k, n] of [[77, 37, 13], [77, 40, 20]]) {
      await checkLinear(gpu, {
        m,
        k,
        n,
        act: "f32",
        activation: "gelu",
        bias: true,
        residual: true,
        tiling: { ...SMALL, mode },
      }, seed += 10);
    }
  }
  await checkLinear(gpu, {
    m: 150,
    k: 96,
    n: 40,
    act: "f32",
    activation: "silu",
    bias: true,
    residual: false,
    tiling: {},
  }, 600);
});

Deno.test("linear: both tiling-table rows (this adapter's and the other) on multi-tile shapes", async () => {
  const gpu = await testGpu();
  const { name, tiling } = gemmTiling(gpu);
  assert(tiling.tn % 4 === 0 && tiling.tm >= 1, `tiling ${JSON.stringify(tiling)}`);
  const other = GEMM_TILINGS[name === "llvmpipe" ? "gpu" : "llvmpipe"];
  const acts: ActDType[] = gpu.f16 ? ["f32", "f16"] : ["f32"];
  for (const [act, table] of [...acts.map((a) => [a, {}] as const), ["f32", other] as const]) {
    // 150 rows and 52 columns: partial tiles on both edges for any tile size ≥ 4.
    await checkLinear(gpu, {
      m: 150,
      k: 320,
      n: 52,
      act,
      activation: "gelu",
      bias: true,
      residual: true,
      tiling: table,
    }, 700);
  }
});

Deno.test("linear: a prepared weight and the raw tensor give the same result; preparation is cached", async () => {
  const gpu = await testGpu();
  const [m, k, n] = [3, 37, 13];
  const x = activations(gpu, m * k, 800, [m, k], "f32");
  const w = weights(gpu, n * k, 801, [n, k], 0.3);
  const prepared = prepareLinearWeight(gpu, w.tensor, "texture");
  assert(prepareLinearWeight(gpu, w.tensor, "texture") === prepared, "cached per weight buffer and mode");
  const a = emptyTensor(gpu, [m, n], "f32");
  const b = emptyTensor(gpu, [m, n], "f32");
  gpu.run([
    ...linear(gpu, {
      x: x.tensor,
      weight: prepared,
      out: a,
      act: "f32",
      tiling: { ...SMALL, mode: "texture" },
    }),
    ...linear(gpu, {
      x: x.tensor,
      weight: w.tensor,
      out: b,
      act: "f32",
      tiling: { ...SMALL, mode: "texture" },
    }),
  ]);
  const ga = await readTensor(gpu, a);
  const gb = await readTensor(gpu, b);
  assert(ga.every((v, i) => v === gb[i]), "identical results");
  assertClose(ga, linearRef(x.host, w.host, m, k, n), TOL.f32, "prepared weight");
  expectThrow(
    () => linear(gpu, { x: x.tensor, weight: prepared, out: a, act: "f32", tiling: { mode: "buffer" } }),
    /prepared for texture operands/,
    "mode mismatch",
  );
});

Deno.test("linear: part of a packed group (weight rows and bias values from an offset) equals the weight alone", async () => {
  const gpu = await testGpu();
  const acts: ActDType[] = gpu.f16 ? ["f32", "f16"] : ["f32"];
  let seed = 850;
  for (const act of acts) {
    for (const mode of MODES) {
      for (const k of [37, 40]) {
        const what = `group member ${act} ${mode} K=${k}`;
        const m = 21;
        const rows = [6, 12, 8]; // the member is rows 6..17 of the group, its bias values 6..17
        const x = activations(gpu, m * k, seed++, [m, k], act);
        const ws = rows.map((n) => weights(gpu, n * k, seed++, [n, k], 0.3));
        const bs = rows.map((n) => weights(gpu, n, seed++, [n], 0.5));
        const groupBias = uploadTensor(gpu, Float32Array.from(bs.flatMap((b) => [...b.host])), [26], "f16");
        const { members } = prepareLinearGroup(gpu, ws.map((w) => w.tensor), what, mode);
        const tiling = { ...SMALL, mode };
        const [a, b] = [emptyTensor(gpu, [m, 12], act), emptyTensor(gpu, [m, 12], act)];
        gpu.run([
          ...linear(gpu, { x: x.tensor, weight: ws[1].tensor, bias: bs[1].tensor, out: a, act, tiling }),
          ...linear(gpu, {
            x: x.tensor,
            weight: members[1],
            bias: { tensor: groupBias, offset: 6 },
            out: b,
            act,
            tiling,
          }),
        ]);
        const [ga, gb] = [await readTensor(gpu, a), await readTensor(gpu, b)];
        assert(ga.every((v, i) => Object.is(v, gb[i])), `${what}: differs from the weight alone`);
        assertClose(gb, linearRef(x.host, ws[1].host, m, k, 12, { bias: bs[1].host }), TOL[act], what);
      }
    }
  }
});

Deno.test("geglu: one kernel, f32/f16 × texture/buffer/shared × unaligned/aligned, both table rows", async () => {
  const gpu = await testGpu();
  const nof16 = await testGpu({ f16: false });
  const cases: { gpu: Gpu; act: ActDType; tiling: Partial<GemmTiling>; m: number; k: number; d: number }[] =
    [];
  for (const g of [gpu, nof16]) {
    for (const act of (g.f16 ? ["f32", "f16"] : ["f32"]) as ActDType[]) {
      for (const mode of MODES) {
        cases.push({ gpu: g, act, tiling: { ...SMALL, mode }, m: 77, k: 37, d: 13 });
        cases.push({ gpu: g, act, tiling: { ...SMALL, mode }, m: 77, k: 40, d: 20 });
      }
    }
  }
  cases.push({ gpu, act: "f32", tiling: {}, m: 150, k: 320, d: 52 });
  cases.push({ gpu, act: "f32", tiling: GEMM_TILINGS.gpu, m: 150, k: 320, d: 52 });
  let seed = 900;
  for (const c of cases) {
    const what = `geglu M=${c.m} K=${c.k} D=${c.d} ${c.act} ${JSON.stringify(c.tiling)} f16=${c.gpu.f16}`;
    const x = activations(c.gpu, c.m * c.k, seed++, [c.m, c.k], c.act);
    const w = weights(c.gpu, 2 * c.d * c.k, seed++, [2 * c.d, c.k], 3 / Math.sqrt(c.k));
    const b = weights(c.gpu, 2 * c.d, seed++, [2 * c.d], 0.5);
    const out = emptyTensor(c.gpu, [c.m, c.d], c.act);
    c.gpu.run(
      geglu(c.gpu, { x: x.tensor, weight: w.tensor, bias: b.tensor, out, act: c.act, tiling: c.tiling }),
    );
    assertClose(
      await readTensor(c.gpu, out),
      gegluRef(x.host, w.host, b.host, c.m, c.k, c.d),
      TOL[c.act],
      what,
    );
    for (const t of [x.tensor, w.tensor, b.tensor, out]) t.destroy();
  }
});

Deno.test("bmm: batched act × act with transposes and alpha", async () => {
  const gpu = await testGpu();
  const [batch, m, k, n] = [3, 13, 37, 9];
  let seed = 1000;
  for (const act of (gpu.f16 ? ["f32", "f16"] : ["f32"]) as ActDType[]) {
    for (const [transA, transB] of [[false, false], [false, true], [true, false], [true, true]]) {
      const a = activations(gpu, batch * m * k, seed++, transA ? [batch, k, m] : [batch, m, k], act);
      const b = activations(gpu, batch * k * n, seed++, transB ? [batch, n, k] : [batch, k, n], act);
      const out = emptyTensor(gpu, [batch, m, n], act);
      gpu.run(bmm(gpu, { a: a.tensor, b: b.tensor, out, transA, transB, alpha: 0.5, act }));
      const ref = bmmRef(a.host, b.host, batch, m, k, n, { transA, transB, alpha: 0.5 });
      assertClose(await readTensor(gpu, out), ref, TOL[act], `bmm ${act} transA=${transA} transB=${transB}`);
      for (const t of [a.tensor, b.tensor, out]) t.destroy();
    }
  }
});

Deno.test("linear/geglu/bmm: shape, dtype and aliasing errors are clear", async () => {
  const gpu = await testGpu();
  const t = (shape: number[], dtype: "f32" | "f16" = "f32"): Tensor => emptyTensor(gpu, shape, dtype);
  const w = t([13, 37], "f16");
  expectThrow(
    () => linear(gpu, { x: t([77, 36]), weight: w, out: t([77, 13]), act: "f32" }),
    /last dimension 37/,
    "K",
  );
  expectThrow(() => linear(gpu, { x: t([77, 37]), weight: w, out: t([76, 13]), act: "f32" }), /77×13/, "out");
  expectThrow(
    () => linear(gpu, { x: t([77, 37]), weight: w, bias: t([12], "f16"), out: t([77, 13]), act: "f32" }),
    /bias \[12\] must have 13/,
    "bias",
  );
  expectThrow(
    () => linear(gpu, { x: t([77, 37], "f16"), weight: w, out: t([77, 13]), act: "f32" }),
    /x .* is f16/,
    "x dtype",
  );
  expectThrow(
    () => linear(gpu, { x: t([77, 37]), weight: t([13, 37]), out: t([77, 13]), act: "f32" }),
    /weight .* is f32/,
    "w",
  );
  const out = t([77, 13]);
  expectThrow(
    () => linear(gpu, { x: t([77, 37]), weight: w, residual: out, out, act: "f32" }),
    /must not share its buffer with residual/,
    "aliasing",
  );
  expectThrow(
    () => linear(gpu, { x: t([77, 37]), weight: w, out: t([77, 13]), act: "f32", tiling: { tn: 6 } }),
    /multiple of 4/,
    "tiling",
  );
  expectThrow(
    () => geglu(gpu, { x: t([77, 37]), weight: t([13, 37], "f16"), out: t([77, 6]), act: "f32" }),
    /even/,
    "geglu",
  );
  expectThrow(
    () => bmm(gpu, { a: t([2, 3, 4]), b: t([2, 5, 6]), out: t([2, 3, 6]), act: "f32" }),
    /do not give/,
    "bmm",
  );
});
