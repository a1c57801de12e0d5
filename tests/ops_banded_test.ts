// Banded execution of tensors larger than one storage binding (src/ops/bands.ts): groupNorm, add, map/silu,
// copyChannels/concatChannels/sliceChannels and upsampleNearest2x, forced into ≥ 3 row bands on moderate
// tensors by a small `maxBindingBytes`, must equal the unbanded op exactly (max |difference| 0, f32 and f16
// activations): every band keeps the unbanded per-element arithmetic and, for groupNorm, the same row
// chunks of the statistics pass. Builds run in validation error scopes, so a misaligned window offset
// fails. One real case: groupNorm over a 256 MiB [1, 512, 512, 256] f32 map (two 128 MiB bands on
// lavapipe) against a float64 CPU reference on sampled groups (tolerance 1e-5 of max|ref|, as
// ops_norm_test.ts).

import { deepStrictEqual as assertEquals, throws } from "node:assert/strict";
import type { Dispatch, Gpu } from "../src/gpu/device.ts";
import type { ActDType } from "../src/gpu/pipelines.ts";
import { emptyTensor, readTensor, type Tensor, uploadTensor } from "../src/gpu/tensor.ts";
import { rowBands } from "../src/ops/bands.ts";
import { add, map, silu } from "../src/ops/elementwise.ts";
import { concatChannels, copyChannels, sliceChannels, upsampleNearest2x } from "../src/ops/layout.ts";
import { groupNorm } from "../src/ops/norm.ts";
import { concatLastRef, groupNormRef, mapRef, siluRef, upsample2xRef } from "./ref/ops.ts";
import { assertClose, randomArray, roundF16, testGpu } from "./util.ts";

const TOL: Record<ActDType, number> = { f32: 1e-5, f16: 5e-3 };

async function configs(): Promise<{ gpu: Gpu; act: ActDType }[]> {
  const gpu = await testGpu();
  return gpu.f16 ? [{ gpu, act: "f32" }, { gpu, act: "f16" }] : [{ gpu, act: "f32" }];
}

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

function upload(gpu: Gpu, data: Float32Array, shape: number[], act: ActDType): [Tensor, Float32Array] {
  return [uploadTensor(gpu, data, shape, act), act === "f16" ? roundF16(data) : data];
}

/** Builds inside validation/OOM error scopes (a misaligned or oversized window throws here). */
function build(gpu: Gpu, what: string, fn: () => Dispatch[]): Promise<Dispatch[]> {
  return gpu.scoped(what, fn);
}

async function runRead(gpu: Gpu, dispatches: Dispatch[], out: Tensor): Promise<Float32Array> {
  gpu.run(dispatches);
  return await readTensor(gpu, out);
}

const gcd = (a: number, b: number): number => (b ? gcd(b, a % b) : a);

/**
 * A binding limit that splits `rows` rows into ≥ 4 bands: band starts must be multiples of `step` rows and
 * of the rows that make each tensor's window offset a multiple of 256 bytes, so the band is the largest
 * such multiple below rows / 3 (the shapes below have rows > 3 · that alignment), plus a few rows' slack.
 */
function bandLimit(rows: number, rowBytes: number[], step = 1): number {
  let align = step;
  for (const bytes of rowBytes) {
    const a = 256 / gcd(bytes, 256);
    align = (align / gcd(align, a)) * a;
  }
  const k = Math.floor((rows - 1) / (3 * align));
  if (k < 1) throw new Error(`test shape too small: ${rows} rows, alignment ${align} rows`);
  // A few rows of slack: the op must round its bands down to aligned starts itself.
  return (k * align + Math.min(align - 1, 5)) * Math.max(...rowBytes);
}

const bpe = (act: ActDType) => (act === "f32" ? 4 : 2);

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let d = 0;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i] - b[i]);
    if (!(e <= d)) d = Number.isNaN(e) ? Infinity : e;
  }
  return d;
}

function assertIdentical(got: Float32Array, want: Float32Array, what: string): void {
  const d = maxAbsDiff(got, want);
  if (d !== 0) throw new Error(`${what}: banded result differs from unbanded by up to ${d}`);
}

/** Throws unless `fn` throws an Error whose message contains `text`. */
function assertThrows(fn: () => unknown, text: string): void {
  throws(fn, (e: unknown) => e instanceof Error && e.message.includes(text));
}

function assertBands(dispatches: Dispatch[], label: string, min: number, what: string): number {
  const n = dispatches.filter((d) => d.label === label).length;
  if (n < min) throw new Error(`${what}: ${n} "${label}" dispatches, expected ≥ ${min} bands`);
  return n;
}

Deno.test("rowBands: aligned window offsets, windows within the limit, rows covered once", async () => {
  const gpu = await testGpu();
  const alignment = gpu.device.limits.minStorageBufferOffsetAlignment;
  const cases: [number, number[], number, number][] = [
    [960, [256], 65536, 16], // [1, 40, 24, 64] f32 groupNorm
    [1073, [144], 44146, 16], // 37×29 rows of 36 f32 channels
    [1073, [72], 22073, 16], // same in f16
    [437, [60], 7491, 16], // 30 f16 channels: 64-row alignment
    [7680, [32], 70217, 30], // step 30 (groupNorm chunks of 30 rows)
    [37555, [2, 2, 2], 21460, 1], // flat f16 scalars (add)
    [260, [148, 592], 40000, 1], // upsample: input rows and their 4× output bytes
    [1073, [84, 140], 50000, 1], // copyChannels 21 → 35 channels f32
  ];
  for (const [rows, rowBytes, limit, step] of cases) {
    const bands = rowBands(gpu, "test", rows, rowBytes, limit, step);
    let next = 0;
    for (const { start, end } of bands) {
      assertEquals(start, next);
      if (!(end > start)) throw new Error(`empty band ${start}..${end}`);
      if (start % step !== 0) throw new Error(`band start ${start} is not a multiple of ${step}`);
      for (const bytes of rowBytes) {
        if ((start * bytes) % alignment !== 0) throw new Error(`offset ${start * bytes} not aligned`);
        if ((end - start) * bytes > limit) throw new Error(`window ${(end - start) * bytes} > ${limit}`);
      }
      next = end;
    }
    assertEquals(next, rows);
    if (bands.length < 3) throw new Error(`[${rows}, ${rowBytes}] / ${limit}: only ${bands.length} bands`);
  }
});

interface GnCase {
  shape: [number, number, number, number];
  groups: number;
  silu: boolean;
}

const GN_CASES: GnCase[] = [
  { shape: [1, 40, 24, 64], groups: 32, silu: true },
  // nothing divides anything: 1073 rows, 36 channels in 6 groups of 6 (groups straddle vec4 units)
  { shape: [1, 37, 29, 36], groups: 6, silu: false },
  // scalar path (30 channels); f16 rows of 60 bytes need 64-row aligned band starts
  { shape: [1, 23, 19, 30], groups: 5, silu: true },
  // 7680 rows: chunks of 30 rows, band starts multiples of lcm(30, alignment rows)
  { shape: [1, 96, 80, 8], groups: 2, silu: false },
];

Deno.test("groupNorm in ≥ 3 row bands equals the unbanded op exactly (out of place and in place)", async () => {
  for (const { gpu, act } of await configs()) {
    for (const [k, cs] of GN_CASES.entries()) {
      const [b, h, w, c] = cs.shape;
      const n = numel(cs.shape);
      const raw = randomArray(n, 40 + k, 2).map((v, i) => v + 1 + (i % c) * 0.05 + Math.floor(i / c) * 1e-3);
      const [x, xs] = upload(gpu, raw, cs.shape, act);
      const gamma = uploadTensor(gpu, randomArray(c, 50 + k, 0.5).map((v) => 1 + v), [c], "f16");
      const beta = uploadTensor(gpu, randomArray(c, 60 + k, 0.5), [c], "f16");
      const common = { x, gamma, beta, groups: cs.groups, eps: 1e-6, silu: cs.silu, act };
      const what = `groupNorm ${act} [${cs.shape}]`;
      const rowsPerChunk = Math.max(16, Math.ceil((h * w) / 256)); // as norm.ts
      const maxBindingBytes = bandLimit(h * w, [c * bpe(act)], rowsPerChunk);

      const plain = emptyTensor(gpu, cs.shape, act);
      const unbanded = await runRead(gpu, groupNorm(gpu, { ...common, out: plain }), plain);
      const banded = emptyTensor(gpu, cs.shape, act);
      const plan = await build(gpu, what, () => groupNorm(gpu, { ...common, out: banded, maxBindingBytes }));
      const bands = assertBands(plan, "groupNorm partial", 3, what);
      assertEquals(plan.filter((d) => d.label === "groupNorm apply").length, bands);
      const got = await runRead(gpu, plan, banded);
      assertIdentical(got, unbanded, what);
      const gs = roundF16(randomArray(c, 50 + k, 0.5).map((v) => 1 + v));
      const bs = roundF16(randomArray(c, 60 + k, 0.5));
      assertClose(got, groupNormRef(xs, b, h * w, c, cs.groups, 1e-6, gs, bs, cs.silu), TOL[act], what);

      // In place: out === x, only out's window is bound in pass 3.
      const inplace = await build(gpu, what, () => groupNorm(gpu, { ...common, out: x, maxBindingBytes }));
      assertBands(inplace, "groupNorm apply", 3, `${what} in place`);
      assertIdentical(await runRead(gpu, inplace, x), unbanded, `${what} in place`);
    }
  }
});

Deno.test("add, map and silu in ≥ 3 flat bands equal the unbanded ops exactly", async () => {
  for (const { gpu, act } of await configs()) {
    // vec4 path, and an odd element count (scalar units; f16 windows of odd byte length)
    for (const shape of [[1, 40, 24, 64], [1, 37, 29, 35]]) {
      const n = numel(shape);
      const what = `${act} [${shape}]`;
      const [a] = upload(gpu, randomArray(n, 1, 3), shape, act);
      const [b] = upload(gpu, randomArray(n, 2, 3), shape, act);
      const unitBytes = (n % 4 === 0 ? 4 : 1) * bpe(act);
      const maxBindingBytes = bandLimit(a.byteLength / unitBytes, [unitBytes]);

      const plain = emptyTensor(gpu, shape, act);
      const want = await runRead(gpu, add(gpu, { a, b, out: plain, alpha: 0.5, beta: -2, act }), plain);
      const out = emptyTensor(gpu, shape, act);
      const plan = await build(
        gpu,
        what,
        () => add(gpu, { a, b, out, alpha: 0.5, beta: -2, act, maxBindingBytes }),
      );
      assertBands(plan, "add", 3, `add ${what}`);
      assertIdentical(await runRead(gpu, plan, out), want, `add ${what}`);

      // in place (a += b), unbanded and banded, each on its own copy of a
      const held = await readTensor(gpu, a);
      const a1 = uploadTensor(gpu, held, shape, act);
      const a2 = uploadTensor(gpu, held, shape, act);
      const inplaceWant = await runRead(gpu, add(gpu, { a: a1, b, out: a1, act }), a1);
      const inplace = await build(gpu, what, () => add(gpu, { a: a2, b, out: a2, act, maxBindingBytes }));
      assertBands(inplace, "add", 3, `add in place ${what}`);
      assertIdentical(await runRead(gpu, inplace, a2), inplaceWant, `add in place ${what}`);

      // map with scale, bias, SiLU and clamp; silu in place
      const mapped = emptyTensor(gpu, shape, act);
      const mp = {
        x: a,
        scale: 0.75,
        bias: 0.25,
        activation: "silu" as const,
        clamp: [-1, 2] as [number, number],
        act,
      };
      const mapWant = await runRead(gpu, map(gpu, { ...mp, out: mapped }), mapped);
      const mappedBanded = emptyTensor(gpu, shape, act);
      const mapPlan = await build(gpu, what, () => map(gpu, { ...mp, out: mappedBanded, maxBindingBytes }));
      assertBands(mapPlan, "map silu", 3, `map ${what}`);
      assertIdentical(await runRead(gpu, mapPlan, mappedBanded), mapWant, `map ${what}`);
      assertClose(
        mapWant,
        mapRef(held, (v) => Math.min(2, Math.max(-1, siluRef(v * 0.75 + 0.25)))),
        TOL[act],
        `map reference ${what}`,
      );

      const siluWant = await runRead(gpu, silu(gpu, { x: a, out: plain, act }), plain);
      const siluPlan = await build(gpu, what, () => silu(gpu, { x: a, out: a, act, maxBindingBytes }));
      assertBands(siluPlan, "map silu", 3, `silu in place ${what}`);
      assertIdentical(await runRead(gpu, siluPlan, a), siluWant, `silu in place ${what}`);
    }
  }
});

Deno.test("concat / slice / copy along channels in ≥ 3 row bands equal the unbanded ops exactly", async () => {
  for (const { gpu, act } of await configs()) {
    for (const [c1, c2] of [[32, 64], [21, 14], [40, 3]]) {
      const shape = [1, 37, 29];
      const px = numel(shape);
      const what = `${act} ${c1}+${c2}`;
      const [a, as] = upload(gpu, randomArray(px * c1, 7), [...shape, c1], act);
      const [b, bs] = upload(gpu, randomArray(px * c2, 8), [...shape, c2], act);
      const plain = emptyTensor(gpu, [...shape, c1 + c2], act);
      const want = await runRead(gpu, concatChannels(gpu, { a, b, out: plain, act }), plain);
      assertClose(want, concatLastRef(as, bs, c1, c2), 0, `concat reference ${what}`);
      const out = emptyTensor(gpu, [...shape, c1 + c2], act);
      const maxBindingBytes = bandLimit(px, [c1, c2, c1 + c2].map((ch) => ch * bpe(act)));
      const plan = await build(gpu, what, () => concatChannels(gpu, { a, b, out, act, maxBindingBytes }));
      if (plan.length < 4) {
        throw new Error(`concat ${what}: ${plan.length} dispatches, expected ≥ 2 × 2 bands`);
      }
      assertIdentical(await runRead(gpu, plan, out), want, `concat ${what}`);

      const back = emptyTensor(gpu, [...shape, c2], act);
      const slice = await build(
        gpu,
        what,
        () =>
          sliceChannels(gpu, {
            x: out,
            out: back,
            start: c1,
            act,
            maxBindingBytes,
          }),
      );
      assertBands(slice, "copy_channels", 3, `slice ${what}`);
      assertIdentical(await runRead(gpu, slice, back), bs, `slice ${what}`);
    }
    // copy into the middle of a wider tensor, leaving the rest untouched
    const [x] = upload(gpu, randomArray(1073 * 8, 9), [1073, 8], act);
    const [dst, ds] = upload(gpu, randomArray(1073 * 12, 10), [1073, 12], act);
    const plan = await build(gpu, "copy", () =>
      copyChannels(gpu, {
        x,
        out: dst,
        srcStart: 4,
        dstStart: 4,
        count: 4,
        act,
        maxBindingBytes: bandLimit(1073, [8 * bpe(act), 12 * bpe(act)]),
      }));
    assertBands(plan, "copy_channels", 3, `copyChannels ${act}`);
    const got = await runRead(gpu, plan, dst);
    const xs = await readTensor(gpu, x);
    const want = ds.slice();
    for (let r = 0; r < 1073; r++) for (let c = 4; c < 8; c++) want[r * 12 + c] = xs[r * 8 + c];
    assertIdentical(got, want, `copyChannels ${act}`);
  }
});

Deno.test("upsampleNearest2x in ≥ 3 row bands equals the unbanded op exactly (also batch 2)", async () => {
  for (const { gpu, act } of await configs()) {
    // an odd shape (rows of 7·9 elements: 64- or 128-row alignment), and batch 2 (bands cross batch items)
    for (const shape of [[1, 20, 24, 64], [1, 400, 7, 9], [2, 40, 8, 12]]) {
      const [b, h, w, c] = shape;
      const what = `upsample ${act} [${shape}]`;
      const [x, xs] = upload(gpu, randomArray(numel(shape), 11), shape, act);
      const plain = emptyTensor(gpu, [b, 2 * h, 2 * w, c], act);
      const want = await runRead(gpu, upsampleNearest2x(gpu, { x, out: plain, act }), plain);
      assertClose(want, upsample2xRef(xs, b, h, w, c), 0, `${what} reference`);
      const out = emptyTensor(gpu, [b, 2 * h, 2 * w, c], act);
      const inRowBytes = w * c * bpe(act);
      const maxBindingBytes = bandLimit(b * h, [inRowBytes, 4 * inRowBytes]);
      const plan = await build(gpu, what, () => upsampleNearest2x(gpu, { x, out, act, maxBindingBytes }));
      assertBands(plan, "upsample2x", 3, what);
      assertIdentical(await runRead(gpu, plan, out), want, what);
    }
  }
});

Deno.test("banding that is impossible throws a clear error", async () => {
  const gpu = await testGpu();
  const gn = (shape: number[], maxBindingBytes: number) => {
    const c = shape[shape.length - 1];
    const x = emptyTensor(gpu, shape, "f32");
    const gamma = uploadTensor(gpu, new Float32Array(c).fill(1), [c], "f16");
    const beta = uploadTensor(gpu, new Float32Array(c), [c], "f16");
    return () =>
      groupNorm(gpu, { x, gamma, beta, out: x, groups: 32, eps: 1e-6, act: "f32", maxBindingBytes });
  };
  // batch 2 beyond the limit
  assertThrows(gn([2, 16, 16, 64], 16384), "needs batch 1, got 2");
  // one chunk of 16 pixel rows of 1024 f32 channels is 64 KiB, over a 32 KiB limit
  assertThrows(gn([1, 4, 16, 1024], 32768), "cannot split into row bands");
  // groupNorm chunks of 16 rows of 256 bytes need 4 KiB bands
  assertThrows(gn([1, 40, 24, 64], 4000), "cannot split into row bands");
  const x = emptyTensor(gpu, [1, 4, 64, 64], "f32");
  const up = emptyTensor(gpu, [1, 8, 128, 64], "f32");
  assertThrows(
    () => upsampleNearest2x(gpu, { x, out: up, act: "f32", maxBindingBytes: 65000 }),
    "cannot split into row bands",
  );
  const wide = emptyTensor(gpu, [4, 8192], "f32");
  const narrow = emptyTensor(gpu, [4, 64], "f32");
  assertThrows(
    () =>
      copyChannels(gpu, {
        x: wide,
        out: narrow,
        srcStart: 0,
        dstStart: 0,
        count: 64,
        act: "f32",
        maxBindingBytes: 16384,
      }),
    "cannot split into row bands",
  );
  // unchanged behaviour where everything fits (no error): statistics in one dispatch, then the apply pass
  assertEquals(gn([2, 16, 16, 64], 1 << 20)().length, 2);
});

Deno.test("groupNorm on a 256 MiB [1, 512, 512, 256] f32 map (two 128 MiB bands) matches the reference", async () => {
  const gpu = await testGpu();
  const [hw, c, groups] = [512 * 512, 256, 32];
  const shape = [1, 512, 512, c];
  const cpg = c / groups;
  // Values with per-channel offsets and a trend along the rows, so every band matters to the statistics.
  const data = randomArray(hw * c, 77, 2);
  for (let p = 0; p < hw; p++) {
    const trend = 3 + (2 * p) / hw;
    for (let ch = 0; ch < c; ch++) data[p * c + ch] += trend + ch * 0.01;
  }
  const x = uploadTensor(gpu, data, shape, "f32", "gn big x");
  const gammaHost = roundF16(randomArray(c, 78, 0.5).map((v) => 1 + v));
  const betaHost = roundF16(randomArray(c, 79, 0.5));
  const gamma = uploadTensor(gpu, gammaHost, [c], "f16");
  const beta = uploadTensor(gpu, betaHost, [c], "f16");
  const out = emptyTensor(gpu, shape, "f32", "gn big out");
  const plan = await build(
    gpu,
    "groupNorm 512²×256",
    () => groupNorm(gpu, { x, gamma, beta, out, groups, eps: 1e-6, silu: true, act: "f32" }),
  );
  const bands = assertBands(plan, "groupNorm partial", 2, "groupNorm 512²×256");
  const t0 = performance.now();
  gpu.run(plan);
  await gpu.sync("groupNorm 512²×256");
  const ms = performance.now() - t0;
  const got = await readTensor(gpu, out);
  x.destroy();
  out.destroy();
  console.log(`groupNorm [${shape}] f32 in ${bands} bands: ${ms.toFixed(0)} ms on the GPU`);

  // float64 reference for sampled groups (first, middle, last), compared at every position
  let maxDiff = 0;
  let maxRef = 0;
  for (const g of [0, 13, groups - 1]) {
    let sum = 0;
    for (let p = 0; p < hw; p++) for (let k = 0; k < cpg; k++) sum += data[p * c + g * cpg + k];
    const mean = sum / (hw * cpg);
    let m2 = 0;
    for (let p = 0; p < hw; p++) for (let k = 0; k < cpg; k++) m2 += (data[p * c + g * cpg + k] - mean) ** 2;
    const rstd = 1 / Math.sqrt(m2 / (hw * cpg) + 1e-6);
    for (let p = 0; p < hw; p++) {
      for (let k = 0; k < cpg; k++) {
        const ch = g * cpg + k;
        const y = (data[p * c + ch] - mean) * rstd * gammaHost[ch] + betaHost[ch];
        const want = siluRef(y);
        maxDiff = Math.max(maxDiff, Math.abs(got[p * c + ch] - want));
        maxRef = Math.max(maxRef, Math.abs(want));
      }
    }
  }
  let finite = true;
  for (let i = 0; i < got.length && finite; i++) finite = Number.isFinite(got[i]);
  if (!finite) throw new Error("groupNorm 512²×256: non-finite output");
  const rel = maxDiff / maxRef;
  if (!(rel <= 1e-5)) throw new Error(`groupNorm 512²×256: relative error ${rel} > 1e-5`);
});
