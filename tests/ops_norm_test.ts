// GroupNorm and LayerNorm against float64 CPU references (and diffusers' conv_norm_out from the golden UNet),
// for both activation precisions and both weight paths. Tolerances (max|gpu − ref| / max|ref|):
// f32 activations 1e-5; f16 activations 5e-3 (inputs are f16-rounded before the reference sees them).

import type { Gpu } from "../src/gpu/device.ts";
import { f16ToF32Array } from "../src/gpu/device.ts";
import type { ActDType } from "../src/gpu/pipelines.ts";
import { emptyTensor, readTensor, type Tensor, uploadF16Bits, uploadTensor } from "../src/gpu/tensor.ts";
import { groupNorm, layerNorm } from "../src/ops/norm.ts";
import { SafetensorsFile } from "../src/weights/safetensors.ts";
import { groupNormRef, layerNormRef, nchwToNhwcRef } from "./ref/ops.ts";
import { assertClose, randomArray, roundF16, testGpu } from "./util.ts";

const TOL: Record<ActDType, number> = { f32: 1e-5, f16: 5e-3 };

/** Both weight paths, and every activation precision each supports. */
async function configs(): Promise<{ gpu: Gpu; act: ActDType; name: string }[]> {
  const out = [];
  for (const f16 of [true, false]) {
    const gpu = await testGpu({ f16 });
    const tag = gpu.f16 ? "f16 weights" : "unpacked weights";
    out.push({ gpu, act: "f32" as ActDType, name: `${tag}, f32 act` });
    if (gpu.f16) out.push({ gpu, act: "f16" as ActDType, name: `${tag}, f16 act` });
  }
  return out;
}

/** Uploads activations; returns the tensor and the values as the GPU holds them. */
function upload(gpu: Gpu, data: Float32Array, shape: number[], act: ActDType): [Tensor, Float32Array] {
  const held = act === "f16" ? roundF16(data) : data;
  return [uploadTensor(gpu, data, shape, act), held];
}

function weight(gpu: Gpu, data: Float32Array): [Tensor, Float32Array] {
  return [uploadTensor(gpu, data, [data.length], "f16"), roundF16(data)];
}

async function run(gpu: Gpu, dispatches: ReturnType<typeof groupNorm>, out: Tensor): Promise<Float32Array> {
  gpu.run(dispatches);
  return await readTensor(gpu, out);
}

interface GnCase {
  shape: [number, number, number, number];
  groups: number;
  eps: number;
  silu: boolean;
  offset?: number;
  affine?: boolean;
}

const GN_CASES: GnCase[] = [
  // 37 channels (scalar path), 13×9 image, batch 3, one group of all channels, fused SiLU
  { shape: [3, 13, 9, 37], groups: 1, eps: 1e-5, silu: true },
  // 37 groups of one channel each
  { shape: [2, 9, 13, 37], groups: 37, eps: 1e-6, silu: false },
  // vec4 path: 40 channels, 8 groups of 5 (groups straddle vec4 units)
  { shape: [3, 13, 9, 40], groups: 8, eps: 1e-6, silu: true },
  // many row chunks; a large common offset that E[x²] − E[x]² in f32 would not survive
  { shape: [1, 77, 61, 32], groups: 4, eps: 1e-5, silu: false, offset: 300 },
  // no affine
  { shape: [2, 5, 7, 12], groups: 3, eps: 1e-5, silu: false, affine: false },
];

Deno.test("groupNorm matches the CPU reference (odd shapes, both precisions, both weight paths)", async () => {
  for (const { gpu, act, name } of await configs()) {
    for (const [k, cs] of GN_CASES.entries()) {
      const [b, h, w, c] = cs.shape;
      const scale = act === "f16" && cs.offset ? 1 : 2;
      const raw = randomArray(b * h * w * c, 100 + k, scale).map((v, i) =>
        v + (cs.offset ?? 0) + (i % c) * 0.05
      );
      const [x, xs] = upload(gpu, raw, cs.shape, act);
      const affine = cs.affine ?? true;
      const [gamma, gs] = weight(gpu, randomArray(c, 200 + k, 0.5).map((v) => 1 + v));
      const [beta, bs] = weight(gpu, randomArray(c, 300 + k, 0.5));
      const out = emptyTensor(gpu, cs.shape, act);
      const got = await run(
        gpu,
        groupNorm(gpu, {
          x,
          gamma: affine ? gamma : null,
          beta: affine ? beta : null,
          out,
          groups: cs.groups,
          eps: cs.eps,
          silu: cs.silu,
          act,
        }),
        out,
      );
      const want = groupNormRef(
        xs,
        b,
        h * w,
        c,
        cs.groups,
        cs.eps,
        affine ? gs : null,
        affine ? bs : null,
        cs.silu,
      );
      assertClose(got, want, TOL[act], `groupNorm ${name} [${cs.shape}] g${cs.groups}`);
    }
  }
});

Deno.test("groupNorm in place and on [B, T, C] tokens", async () => {
  for (const { gpu, act, name } of await configs()) {
    const shape = [2, 77, 24];
    const [x, xs] = upload(gpu, randomArray(2 * 77 * 24, 7, 3), shape, act);
    const [gamma, gs] = weight(gpu, randomArray(24, 8, 0.3).map((v) => 1 + v));
    const [beta, bs] = weight(gpu, randomArray(24, 9, 0.3));
    const got = await run(
      gpu,
      groupNorm(gpu, { x, gamma, beta, out: x, groups: 6, eps: 1e-6, silu: true, act }),
      x,
    );
    assertClose(
      got,
      groupNormRef(xs, 2, 77, 24, 6, 1e-6, gs, bs, true),
      TOL[act],
      `groupNorm in place ${name}`,
    );
  }
});

Deno.test("groupNorm reproduces diffusers' conv_norm_out on the golden tiny UNet", async () => {
  const file = await SafetensorsFile.open(
    new URL("./fixtures/ops/unet_norm_time.safetensors", import.meta.url).pathname,
  );
  const input = await file.readF32("up_blocks.3"); // NCHW [2, 32, 16, 16]
  const expected = await file.readF32("conv_norm_out");
  const gammaBits = await file.readF16Bits("conv_norm_out.weight");
  const betaBits = await file.readF16Bits("conv_norm_out.bias");
  file.close();
  const want = nchwToNhwcRef(expected, 2, 32, 16, 16);
  for (const { gpu, act, name } of await configs()) {
    const x = uploadTensor(gpu, nchwToNhwcRef(input, 2, 32, 16, 16), [2, 16, 16, 32], act);
    const gamma = uploadF16Bits(gpu, gammaBits, [32]);
    const beta = uploadF16Bits(gpu, betaBits, [32]);
    const out = emptyTensor(gpu, [2, 16, 16, 32], act);
    const got = await run(
      gpu,
      groupNorm(gpu, { x, gamma, beta, out, groups: 8, eps: 1e-5, silu: false, act }),
      out,
    );
    // f32 matches the float32 torch reference to rounding; f16 activations add input/output rounding.
    assertClose(got, want, act === "f32" ? 1e-5 : 5e-3, `conv_norm_out ${name}`);
  }
  // The fixture's weights really are f16 (sanity check of the reference data itself).
  if (f16ToF32Array(gammaBits).some((v) => !Number.isFinite(v))) throw new Error("bad gamma");
});

Deno.test("groupNorm on a 64×64×320 map (SD level 0) matches the reference", async () => {
  const gpu = await testGpu();
  const shape = [1, 64, 64, 320];
  const n = 64 * 64 * 320;
  const [x, xs] = upload(gpu, randomArray(n, 11, 4).map((v) => v + 5), shape, "f32");
  const [gamma, gs] = weight(gpu, randomArray(320, 12, 0.3).map((v) => 1 + v));
  const [beta, bs] = weight(gpu, randomArray(320, 13, 0.3));
  const out = emptyTensor(gpu, shape, "f32");
  const got = await run(
    gpu,
    groupNorm(gpu, { x, gamma, beta, out, groups: 32, eps: 1e-5, silu: true, act: "f32" }),
    out,
  );
  assertClose(got, groupNormRef(xs, 1, 64 * 64, 320, 32, 1e-5, gs, bs, true), 1e-5, "groupNorm 64×64×320");
});

interface LnCase {
  rows: number[];
  c: number;
  eps: number;
  offset?: number;
  affine?: boolean;
}

const LN_CASES: LnCase[] = [
  { rows: [3, 77], c: 40, eps: 1e-5 }, // vec4 path, CLIP-like token count
  { rows: [2, 13], c: 37, eps: 1e-5 }, // scalar path, odd width (f16 weights read through 2-half words)
  { rows: [5], c: 768, eps: 1e-5, offset: 50 }, // CLIP width, large offset
  { rows: [1, 9], c: 6, eps: 1e-6, affine: false },
];

Deno.test("groupNorm statistics in one dispatch or as partials + merge: identical results", async () => {
  for (const { gpu, act, name } of await configs()) {
    for (const cs of GN_CASES) {
      const [b, h, w, c] = cs.shape;
      const [x] = upload(
        gpu,
        randomArray(b * h * w * c, 77, 2).map((v) => v + (cs.offset ?? 0)),
        cs.shape,
        act,
      );
      const [gamma] = weight(gpu, randomArray(c, 78, 0.5).map((v) => 1 + v));
      const [beta] = weight(gpu, randomArray(c, 79, 0.5));
      const out = emptyTensor(gpu, cs.shape, act);
      const common = { x, gamma, beta, out, groups: cs.groups, eps: cs.eps, silu: cs.silu, act };
      const fused = groupNorm(gpu, { ...common, stats: "fused" });
      const split = groupNorm(gpu, { ...common, stats: "split" });
      if (fused.length !== 2 || split.length !== 3) {
        throw new Error(`${fused.length}/${split.length} dispatches`);
      }
      const a = await run(gpu, fused, out);
      const bb = await run(gpu, split, out);
      const at = a.findIndex((v, i) => !Object.is(v, bb[i]));
      if (at >= 0) throw new Error(`${name} [${cs.shape}]: differs at ${at}: ${bb[at]} vs ${a[at]}`);
    }
  }
});

Deno.test("layerNorm matches the CPU reference (odd shapes, both precisions, both weight paths)", async () => {
  for (const { gpu, act, name } of await configs()) {
    for (const [k, cs] of LN_CASES.entries()) {
      const shape = [...cs.rows, cs.c];
      const n = shape.reduce((a, b) => a * b, 1);
      const [x, xs] = upload(gpu, randomArray(n, 400 + k, 3).map((v) => v + (cs.offset ?? 0)), shape, act);
      const [gamma, gs] = weight(gpu, randomArray(cs.c, 500 + k, 0.5).map((v) => 1 + v));
      const [beta, bs] = weight(gpu, randomArray(cs.c, 600 + k, 0.5));
      const affine = cs.affine ?? true;
      const out = emptyTensor(gpu, shape, act);
      const got = await run(
        gpu,
        layerNorm(gpu, {
          x,
          gamma: affine ? gamma : null,
          beta: affine ? beta : null,
          out,
          eps: cs.eps,
          act,
        }),
        out,
      );
      const want = layerNormRef(xs, cs.c, cs.eps, affine ? gs : null, affine ? bs : null);
      assertClose(got, want, TOL[act], `layerNorm ${name} [${shape}]`);
    }
  }
});
