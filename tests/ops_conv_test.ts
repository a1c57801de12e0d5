// conv2d (implicit GEMM over NHWC) against the float64 CPU reference (tests/ref/gemm.ts).
//
// Shapes are not multiples of any tile: batch 3, 13×9 images, 37 input channels (also 3, 4: the VAE and
// UNet conv_in, and 40: aligned, read in place in buffer mode), 13 or 20 output channels (scalar / vec4
// stores). Every padding mode: 3×3 stride 1 "same", 3×3 stride 2 "same", 3×3 stride 2 "vae_down"
// (diffusers pad (0,1,0,1)), 1×1; bias, time bias, residual, output scale and shift, fused ReLU (TAESD).
// Weights and biases are f16-rounded on the host, so the reference sees exactly what the GPU reads.
// Tolerances (max|got − ref| / max|ref|): f32 activations 1e-5; f16 activations 5e-3.

import type { Gpu } from "../src/gpu/device.ts";
import type { ActDType } from "../src/gpu/pipelines.ts";
import { emptyTensor, readTensor, type Tensor, uploadTensor } from "../src/gpu/tensor.ts";
import { conv2d, convOutSize, convPadding, prepareConvWeight } from "../src/ops/conv.ts";
import { GEMM_TILINGS, type GemmTiling, gemmTiling } from "../src/ops/gemm.ts";
import { conv2dRef } from "./ref/gemm.ts";
import { assertClose, expectThrow, randomArray, roundF16, testGpu } from "./util.ts";

const TOL: Record<ActDType, number> = { f32: 1e-5, f16: 5e-3 };
const SMALL: Partial<GemmTiling> = { tm: 4, tn: 8 };

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

interface ConvCase {
  b: number;
  h: number;
  w: number;
  cin: number;
  cout: number;
  k: 1 | 3;
  stride: 1 | 2;
  padding: "same" | "vae_down";
  act: ActDType;
  bias?: boolean;
  timeBias?: boolean;
  residual?: boolean;
  outputScaleFactor?: number;
  outputShift?: number;
  relu?: boolean;
  tiling: Partial<GemmTiling>;
}

async function checkConv(gpu: Gpu, c: ConvCase, seed: number): Promise<void> {
  const what =
    `conv ${c.k}×${c.k}/${c.stride} ${c.padding} [${c.b},${c.h},${c.w},${c.cin}]→${c.cout} ${c.act} ` +
    `bias=${!!c.bias} time=${!!c.timeBias} res=${!!c.residual} scale=${c.outputScaleFactor ?? 1} ` +
    `shift=${c.outputShift ?? 0} relu=${!!c.relu} ` +
    `${JSON.stringify(c.tiling)} f16=${gpu.f16}`;
  const pad = convPadding(c.padding, c.k, c.k);
  const ho = convOutSize(c.h, c.k, c.stride, pad.top, pad.bottom);
  const wo = convOutSize(c.w, c.k, c.stride, pad.left, pad.right);
  const act = (n: number, s: number, shape: number[]) => {
    const raw = randomArray(n, s);
    const host = c.act === "f16" ? roundF16(raw) : raw;
    return { host, tensor: uploadTensor(gpu, host, shape, c.act) };
  };
  const f16 = (n: number, s: number, shape: number[], scale: number) => {
    const host = roundF16(randomArray(n, s, scale));
    return { host, tensor: uploadTensor(gpu, host, shape, "f16") };
  };
  const mode = c.tiling.mode ?? undefined;
  const x = act(c.b * c.h * c.w * c.cin, seed, [c.b, c.h, c.w, c.cin]);
  const w = f16(
    c.cout * c.cin * c.k * c.k,
    seed + 1,
    [c.cout, c.cin, c.k, c.k],
    1 / Math.sqrt(c.cin * c.k * c.k),
  );
  const weight = prepareConvWeight(gpu, w.tensor, mode);
  w.tensor.destroy(); // the packed copy must not depend on the checkpoint tensor
  const bias = c.bias ? f16(c.cout, seed + 2, [c.cout], 0.5) : undefined;
  const timeBias = c.timeBias ? act(c.b * c.cout, seed + 3, [c.b, c.cout]) : undefined;
  const residual = c.residual ? act(c.b * ho * wo * c.cout, seed + 4, [c.b, ho, wo, c.cout]) : undefined;
  const out = emptyTensor(gpu, [c.b, ho, wo, c.cout], c.act);
  gpu.run(conv2d(gpu, {
    x: x.tensor,
    weight,
    bias: bias?.tensor,
    timeBias: timeBias?.tensor,
    residual: residual?.tensor,
    outputScaleFactor: c.outputScaleFactor,
    outputShift: c.outputShift,
    relu: c.relu,
    out,
    stride: c.stride,
    padding: c.padding,
    act: c.act,
    tiling: c.tiling,
  }));
  const got = await readTensor(gpu, out);
  const ref = conv2dRef({
    x: x.host,
    b: c.b,
    h: c.h,
    w: c.w,
    cin: c.cin,
    weight: w.host,
    cout: c.cout,
    kh: c.k,
    kw: c.k,
    stride: c.stride,
    padTop: pad.top,
    padLeft: pad.left,
    ho,
    wo,
    bias: bias?.host,
    timeBias: timeBias?.host,
    residual: residual?.host,
    outputScaleFactor: c.outputScaleFactor,
    outputShift: c.outputShift,
    relu: c.relu,
  });
  assertClose(got, ref, TOL[c.act], what);
  for (const t of [x.tensor, bias?.tensor, timeBias?.tensor, residual?.tensor, out]) t?.destroy();
}

/** The four conv geometries of SD (3×3/1, 3×3/2, VAE-encoder 3×3/2 with (0,1,0,1) padding, 1×1). */
const GEOMETRIES: Pick<ConvCase, "k" | "stride" | "padding">[] = [
  { k: 3, stride: 1, padding: "same" },
  { k: 3, stride: 2, padding: "same" },
  { k: 3, stride: 2, padding: "vae_down" },
  { k: 1, stride: 1, padding: "same" },
];

Deno.test("conv output sizes follow PyTorch (including the VAE-encoder downsample padding)", () => {
  // [H, k, stride, padding] → Ho, as torch computes it (vae_down: F.pad(0,1,0,1) then padding=0).
  const cases: [number, 1 | 3, number, "same" | "vae_down", number][] = [
    [13, 3, 1, "same", 13],
    [13, 3, 2, "same", 7],
    [9, 3, 2, "same", 5],
    [13, 3, 2, "vae_down", 6],
    [9, 3, 2, "vae_down", 4],
    [512, 3, 2, "vae_down", 256],
    [13, 1, 1, "same", 13],
  ];
  for (const [h, k, s, padding, want] of cases) {
    const p = convPadding(padding, k, k);
    const got = convOutSize(h, k, s, p.top, p.bottom);
    assert(got === want, `H=${h} k=${k} s=${s} ${padding}: ${got} != ${want}`);
  }
});

Deno.test("conv2d: every geometry × f32/f16 × texture/buffer/shared, 37 channels, bias + time bias + residual", async () => {
  const gpu = await testGpu();
  let seed = 2000;
  for (const act of (gpu.f16 ? ["f32", "f16"] : ["f32"]) as ActDType[]) {
    for (const mode of ["texture", "buffer", "shared"] as const) {
      for (const [g, geometry] of GEOMETRIES.entries()) {
        // Alternate the fused extras so every combination of store path and extra appears.
        await checkConv(gpu, {
          b: 3,
          h: 13,
          w: 9,
          cin: 37,
          cout: g % 2 === 0 ? 13 : 20,
          ...geometry,
          act,
          bias: true,
          timeBias: g !== 2,
          residual: g >= 2,
          outputScaleFactor: g === 3 ? 2 : g === 1 ? 0.5 : undefined,
          outputShift: g === 1 ? -1 : undefined,
          // ReLU both alone (TAESD's conv.0/conv.2) and after the residual sum (a TAESD block's fuse).
          relu: g === 0 || g === 2,
          tiling: { ...SMALL, mode },
        }, seed += 10);
      }
    }
  }
});

Deno.test("conv2d: conv_in channel counts (3, 4), aligned 40 channels, and no bias", async () => {
  const gpu = await testGpu();
  let seed = 3000;
  for (const mode of ["texture", "buffer", "shared"] as const) {
    for (const cin of [3, 4, 40]) {
      for (const act of (gpu.f16 ? ["f32", "f16"] : ["f32"]) as ActDType[]) {
        await checkConv(gpu, {
          b: 2,
          h: 13,
          w: 9,
          cin,
          cout: 20,
          k: 3,
          stride: 1,
          padding: "same",
          act,
          bias: cin !== 40,
          tiling: { ...SMALL, mode },
        }, seed += 10);
      }
    }
  }
});

Deno.test("conv2d: f32 path without shader-f16 (weights read via unpack2x16float)", async () => {
  const gpu = await testGpu({ f16: false });
  assert(!gpu.f16, "shader-f16 disabled");
  let seed = 4000;
  for (const mode of ["texture", "buffer", "shared"] as const) {
    for (const geometry of [GEOMETRIES[0], GEOMETRIES[2]]) {
      await checkConv(gpu, {
        b: 3,
        h: 13,
        w: 9,
        cin: 37,
        cout: 20,
        ...geometry,
        act: "f32",
        bias: true,
        timeBias: true,
        residual: true,
        tiling: { ...SMALL, mode },
      }, seed += 10);
    }
  }
});

Deno.test("conv2d: both tiling-table rows (this adapter's and the other) on multi-tile shapes", async () => {
  const gpu = await testGpu();
  const other = GEMM_TILINGS[gemmTiling(gpu).name === "llvmpipe" ? "gpu" : "llvmpipe"];
  let seed = 5000;
  const acts = (gpu.f16 ? ["f32", "f16"] : ["f32"]) as ActDType[];
  for (const [act, tiling] of [...acts.map((a) => [a, {}] as const), ["f32", other] as const]) {
    await checkConv(gpu, {
      b: 2,
      h: 11,
      w: 13,
      cin: 64,
      cout: 36,
      k: 3,
      stride: 1,
      padding: "same",
      act,
      bias: true,
      timeBias: true,
      residual: true,
      tiling,
    }, seed += 10);
  }
});

Deno.test("conv2d: shape, dtype and weight errors are clear", async () => {
  const gpu = await testGpu();
  const t = (shape: number[], dtype: "f32" | "f16" = "f32"): Tensor => emptyTensor(gpu, shape, dtype);
  const weight = prepareConvWeight(gpu, t([13, 37, 3, 3], "f16"));
  const base = { weight, stride: 1 as const, padding: "same" as const, act: "f32" as const };
  expectThrow(
    () => conv2d(gpu, { ...base, x: t([3, 13, 9, 36]), out: t([3, 13, 9, 13]) }),
    /weight expects 37/,
    "cin",
  );
  expectThrow(
    () => conv2d(gpu, { ...base, x: t([3, 13, 9, 37]), out: t([3, 13, 9, 12]) }),
    /expected \[3,13,9,13\]/,
    "out",
  );
  expectThrow(
    () => conv2d(gpu, { ...base, stride: 2, x: t([3, 13, 9, 37]), out: t([3, 13, 9, 13]) }),
    /expected \[3,7,5,13\]/,
    "stride-2 out",
  );
  expectThrow(
    () => conv2d(gpu, { ...base, x: t([3, 13, 9, 37]), out: t([3, 13, 9, 13]), timeBias: t([2, 13]) }),
    /timeBias .* must be \[3, 13\]/,
    "time bias",
  );
  expectThrow(
    () => conv2d(gpu, { ...base, x: t([3, 13, 9, 37], "f16"), out: t([3, 13, 9, 13]) }),
    /x .* is f16/,
    "dtype",
  );
  expectThrow(() => prepareConvWeight(gpu, t([13, 37, 3], "f16")), /\[Cout, Cin, kh, kw\]/, "weight rank");
  const x = t([3, 13, 9, 37]);
  expectThrow(
    () => conv2d(gpu, { ...base, x, out: t([3, 13, 9, 13]), residual: x }),
    /residual .* must match out/,
    "residual shape",
  );
});
