// Row-banded conv2d and a row-banded VAE decoder ("tiled VAE without seams").
//
// (a) conv2d forced into ≥ 3 row bands by a small `maxBindingBytes` must equal the unbanded conv exactly
//     (max |difference| 0): every geometry (3×3/1, 3×3/2 "same", 3×3/2 "vae_down", 1×1), bias, time bias,
//     residual, f32 and f16 activations, texture operands (llvmpipe's table row), buffer operands read in
//     place (Cin % 8 == 0) or packed (Cin = 20), and the workgroup-memory kernel. Windows start at odd rows
//     and unaligned byte offsets. The unbanded result is also checked against the float64 CPU reference
//     (tests/ref/gemm.ts; f32 1e-5, f16 5e-3 of max|ref|, as ops_conv_test.ts).
// (b) SD's full-width VAE decoder (referenceConfigs("sd15"), synthetic weights written with src/models/synth.ts)
//     decodes a 12×8 latent to 96×64 once on a normal Gpu and once on a Gpu created with a small
//     `maxBindingBytes`, so every map from 24×16×512 up (conv, groupNorm, upsample) runs in row bands. The
//     two images must be identical (tolerance 0: banding changes which rows a dispatch covers, never the
//     arithmetic of an output), which shows that band boundaries leave no seams. Building the plan also
//     repacks every conv/Linear weight once and releases its f16 original: Weights.bytes must equal the
//     repacked operands (textures: width·height·16 bytes) plus the biases and norms, and get() of a
//     released weight must say which accessor to use.

import type { Dispatch, Gpu } from "../src/gpu/device.ts";
import { Gpu as GpuClass } from "../src/gpu/device.ts";
import type { ActDType } from "../src/gpu/pipelines.ts";
import { emptyTensor, readTensor, type Tensor, uploadTensor } from "../src/gpu/tensor.ts";
import { conv2d, convOutSize, convPadding, prepareConvWeight } from "../src/ops/conv.ts";
import { type GemmTiling, gemmTiling, storageOf, TEXTURE_WIDTH } from "../src/ops/gemm.ts";
import { referenceConfigs } from "../src/models/presets.ts";
import { Weights } from "../src/models/weights.ts";
import { Vae } from "../src/models/vae/vae.ts";
import { writeActivation } from "../src/gpu/tensor.ts";
import { expectedTensors, vaeTensorSpecs } from "../src/models/expected.ts";
import { SafetensorsFile } from "../src/weights/safetensors.ts";
import { writeSynthWeights } from "../src/models/synth.ts";
import { conv2dRef } from "./ref/gemm.ts";
import { assertClose, expectThrow, randomArray, roundF16, testGpu } from "./util.ts";

const TOL: Record<ActDType, number> = { f32: 1e-5, f16: 5e-3 };

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let d = 0;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i] - b[i]);
    if (!(e <= d)) d = Number.isNaN(e) ? Infinity : e;
  }
  return d;
}

interface BandCase {
  h: number;
  w: number;
  cin: number;
  cout: number;
  k: 1 | 3;
  stride: 1 | 2;
  padding: "same" | "vae_down";
  timeBias?: boolean;
  residual?: boolean;
  mode?: GemmTiling["mode"];
}

const CASES: BandCase[] = [
  { h: 41, w: 13, cin: 24, cout: 32, k: 3, stride: 1, padding: "same", timeBias: true, residual: true },
  { h: 41, w: 13, cin: 20, cout: 32, k: 3, stride: 2, padding: "same" },
  { h: 40, w: 14, cin: 24, cout: 32, k: 3, stride: 2, padding: "vae_down", residual: true },
  { h: 41, w: 16, cin: 24, cout: 13, k: 1, stride: 1, padding: "same", residual: true },
  // buffer operands: x windows read in place (Cin % 8 == 0), and packed (Cin = 20)
  { h: 41, w: 13, cin: 24, cout: 32, k: 3, stride: 1, padding: "same", residual: true, mode: "buffer" },
  { h: 41, w: 13, cin: 20, cout: 32, k: 3, stride: 2, padding: "same", timeBias: true, mode: "buffer" },
  // workgroup-memory kernel (discrete GPUs' table row)
  {
    h: 41,
    w: 13,
    cin: 24,
    cout: 32,
    k: 3,
    stride: 1,
    padding: "same",
    timeBias: true,
    residual: true,
    mode: "shared",
  },
];

/** Unbanded vs banded conv2d on one case; returns the number of bands. */
async function checkBandedConv(gpu: Gpu, c: BandCase, act: ActDType, seed: number): Promise<number> {
  const what = `conv ${c.k}×${c.k}/${c.stride} ${c.padding} [1,${c.h},${c.w},${c.cin}]→${c.cout} ${act} ` +
    `${c.mode ?? "adapter"} time=${!!c.timeBias} res=${!!c.residual}`;
  const pad = convPadding(c.padding, c.k, c.k);
  const ho = convOutSize(c.h, c.k, c.stride, pad.top, pad.bottom);
  const wo = convOutSize(c.w, c.k, c.stride, pad.left, pad.right);
  const tensors: Tensor[] = [];
  const upload = (n: number, s: number, shape: number[], dtype: "f32" | "f16", scale = 1) => {
    const host = dtype === "f16" ? roundF16(randomArray(n, s, scale)) : randomArray(n, s, scale);
    const tensor = uploadTensor(gpu, host, shape, dtype);
    tensors.push(tensor);
    return { host, tensor };
  };
  const x = upload(c.h * c.w * c.cin, seed, [1, c.h, c.w, c.cin], act);
  const w = upload(c.cout * c.cin * c.k * c.k, seed + 1, [c.cout, c.cin, c.k, c.k], "f16", 0.2);
  const weight = prepareConvWeight(gpu, w.tensor, c.mode);
  const bias = upload(c.cout, seed + 2, [c.cout], "f16", 0.5);
  const timeBias = c.timeBias ? upload(c.cout, seed + 3, [1, c.cout], act) : undefined;
  const residual = c.residual ? upload(ho * wo * c.cout, seed + 4, [1, ho, wo, c.cout], act) : undefined;
  const plain = emptyTensor(gpu, [1, ho, wo, c.cout], act);
  const banded = emptyTensor(gpu, [1, ho, wo, c.cout], act);
  tensors.push(plain, banded);
  const params = {
    x: x.tensor,
    weight,
    bias: bias.tensor,
    timeBias: timeBias?.tensor,
    residual: residual?.tensor,
    stride: c.stride,
    padding: c.padding,
    act,
    tiling: c.mode ? { mode: c.mode } : undefined,
    label: "band test",
  };
  // A third of the largest tensor: ≥ 3 bands whose x windows start at unaligned row offsets.
  const biggest = Math.max(x.tensor.byteLength, plain.byteLength);
  const maxBindingBytes = Math.ceil(biggest / 12) * 4;
  // Built in validation scopes: a misaligned or oversized window fails here.
  const plainOps: Dispatch[] = await gpu.scoped(what, () => conv2d(gpu, { ...params, out: plain }));
  const bandOps: Dispatch[] = await gpu.scoped(
    what,
    () => conv2d(gpu, { ...params, out: banded, maxBindingBytes }),
  );
  const convs = (ds: Dispatch[]) => ds.filter((d) => d.label === "conv2d band test").length;
  if (convs(plainOps) !== 1) throw new Error(`${what}: the unbanded conv has ${convs(plainOps)} dispatches`);
  const bands = convs(bandOps);
  if (bands < 3) throw new Error(`${what}: ${bands} bands at a ${maxBindingBytes}-byte limit, expected ≥ 3`);
  gpu.run([...plainOps, ...bandOps]);
  const want = await readTensor(gpu, plain);
  const got = await readTensor(gpu, banded);
  const diff = maxAbsDiff(got, want);
  if (diff !== 0) throw new Error(`${what}: ${bands} bands differ from the unbanded conv by up to ${diff}`);
  const ref = conv2dRef({
    x: x.host,
    b: 1,
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
    bias: bias.host,
    timeBias: timeBias?.host,
    residual: residual?.host,
  });
  assertClose(want, ref, TOL[act], `${what} (unbanded vs CPU reference)`);
  for (const t of tensors) t.destroy();
  return bands;
}

Deno.test("conv2d row bands equal the unbanded conv exactly (every geometry, f32/f16, texture/buffer/shared)", async () => {
  const gpu = await testGpu();
  const acts: ActDType[] = gpu.f16 ? ["f32", "f16"] : ["f32"];
  let seed = 100;
  for (const c of CASES) {
    for (const act of acts) await checkBandedConv(gpu, c, act, seed += 10);
  }
});

Deno.test("conv2d row bands: batch > 1 and limits below one band are clear errors", async () => {
  const gpu = await testGpu();
  const x = emptyTensor(gpu, [2, 16, 16, 8], "f32");
  const out = emptyTensor(gpu, [2, 16, 16, 8], "f32");
  const wt = uploadTensor(gpu, new Float32Array(8 * 8 * 9), [8, 8, 3, 3], "f16");
  const weight = prepareConvWeight(gpu, wt);
  const base = { x, weight, out, stride: 1 as const, padding: "same" as const, act: "f32" as const };
  expectThrow(() => conv2d(gpu, { ...base, maxBindingBytes: 4096 }), "needs batch 1", "batch 2");
  const x1 = x.view([1, 32, 16, 8]);
  const out1 = out.view([1, 32, 16, 8]);
  // One output row of 512 bytes needs 3 input rows of 512 bytes (+ alignment): 1024 bytes cannot hold them.
  expectThrow(
    () => conv2d(gpu, { ...base, x: x1, out: out1, maxBindingBytes: 1024 }),
    "cannot split into row bands",
    "tiny limit",
  );
  for (const t of [x, out, wt]) t.destroy();
});

Deno.test("Gpu maxBindingBytes caps gpu.maxBinding, and conv2d bands by it by default", async () => {
  const device = (await testGpu()).maxBinding;
  const gpu = await GpuClass.create({ maxBindingBytes: 8192 });
  try {
    if (gpu.maxBinding !== Math.min(device, 8192)) throw new Error(`maxBinding ${gpu.maxBinding}`);
    const x = uploadTensor(gpu, randomArray(32 * 16 * 8, 5), [1, 32, 16, 8], "f32");
    const out = emptyTensor(gpu, [1, 32, 16, 8], "f32");
    const weight = prepareConvWeight(
      gpu,
      uploadTensor(gpu, roundF16(randomArray(8 * 8 * 9, 6, 0.3)), [8, 8, 3, 3], "f16"),
    );
    const ops = conv2d(gpu, { x, weight, out, stride: 1, padding: "same", act: "f32", label: "cap" });
    const bands = ops.filter((d) => d.label === "conv2d cap").length;
    if (bands < 2) throw new Error(`16 KiB maps under an 8 KiB cap ran in ${bands} band(s)`);
  } finally {
    gpu.destroy();
  }
  const bad = await GpuClass.create({ maxBindingBytes: 3 }).then(() => null, (e) => String(e));
  if (!bad?.includes("maxBindingBytes")) throw new Error(`maxBindingBytes 3: ${bad ?? "accepted"}`);
});

// ---- (b) the full-width VAE decoder ----

/** Latent 12×8 → image 96×64; maps from 24×16×512 (786 KiB f32) up exceed the cap and run in bands. */
const LATENT: [number, number] = [12, 8];
const CAP: Record<ActDType, number> = { f32: 512 * 1024, f16: 256 * 1024 };

interface Decoded {
  image: Float32Array;
  dispatches: number;
}

/**
 * GPU bytes the VAE's weights should occupy after a decode plan is built: every decoder conv and Linear
 * weight repacked and its f16 original released (kept only where it is the operand itself: buffer mode,
 * Linear with K % 8 == 0); the encoder's weights, unused, stay as uploaded.
 */
function repackedBytes(gpu: Gpu): number {
  const storage = storageOf(gemmTiling(gpu).tiling.mode);
  const buffer = (bytes: number) => Math.max(16, Math.ceil(bytes / 16) * 16);
  const operand = (texels: number) =>
    storage === "texture" ? Math.ceil(texels / TEXTURE_WIDTH) * TEXTURE_WIDTH * 16 : buffer(texels * 16);
  let total = 0;
  for (const spec of vaeTensorSpecs(referenceConfigs("sd15").vae)) {
    const [n, k, kh, kw] = spec.shape;
    const decoder = spec.name.startsWith("decoder.") || spec.name.startsWith("post_quant_conv.");
    if (spec.role !== "weight" || !decoder) total += buffer(2 * spec.shape.reduce((a, b) => a * b, 1));
    else if (spec.shape.length === 4) total += operand(n * kh * kw * Math.ceil(k / 8));
    else if (storage === "buffer" && k % 8 === 0) total += buffer(2 * n * k);
    else total += operand(n * Math.ceil(k / 8));
  }
  return total;
}

async function decodeOnce(gpu: Gpu, path: string, act: ActDType, z: Float32Array): Promise<Decoded> {
  const config = referenceConfigs("sd15").vae;
  using file = await SafetensorsFile.open(path);
  const weights = await Weights.load(gpu, "vae", file, expectedTensors("vae", config));
  const vae = new Vae(gpu, config, weights, act);
  try {
    const p = await gpu.scoped("vae decode plan", () => vae.decodePlan(...LATENT));
    // Building the plan repacked every conv/Linear weight and released the f16 originals.
    if (weights.bytes !== repackedBytes(gpu)) {
      throw new Error(`VAE weights hold ${weights.bytes} GPU bytes, expected ${repackedBytes(gpu)}`);
    }
    expectThrow(
      () => weights.get("decoder.conv_in.weight"),
      'weights.conv("decoder.conv_in.weight")',
      "conv",
    );
    const q = "decoder.mid_block.attentions.0.to_q.weight";
    if (storageOf(gemmTiling(gpu).tiling.mode) === "texture") {
      expectThrow(() => weights.get(q), `weights.linear("${q}")`, "linear");
    }
    weights.get("decoder.conv_in.bias"); // biases and norms stay
    writeActivation(gpu, p.z, z);
    p.plan.run("vae decode");
    return { image: await readTensor(gpu, p.image), dispatches: p.plan.dispatches.length };
  } finally {
    vae.dropPlans();
    weights.destroy();
  }
}

Deno.test("VAE decoder (SD's full-width config): row-banded decode equals the unbanded one exactly", async () => {
  const config = referenceConfigs("sd15").vae;
  const dir = await Deno.makeTempDir({ prefix: "vae-banding-" });
  try {
    const path = `${dir}/vae.safetensors`;
    await writeSynthWeights(path, vaeTensorSpecs(config), 3);
    const z = randomArray(LATENT[0] * LATENT[1] * config.latent_channels, 17, 2); // NHWC [1, 12, 8, 4]
    const shared = await testGpu();
    const acts: ActDType[] = shared.f16 ? ["f32", "f16"] : ["f32"];
    for (const act of acts) {
      const plain = await decodeOnce(shared, path, act, z);
      const capped = await GpuClass.create({ maxBindingBytes: CAP[act] });
      let banded: Decoded;
      try {
        banded = await decodeOnce(capped, path, act, z);
      } finally {
        capped.destroy();
      }
      const what = `VAE decode ${LATENT} → ${LATENT.map((d) => 8 * d)} ${act}, cap ${CAP[act]} bytes`;
      if (banded.dispatches <= plain.dispatches + 20) {
        throw new Error(`${what}: ${banded.dispatches} vs ${plain.dispatches} dispatches: too few bands`);
      }
      // A real image, not zeros or NaN: finite values with some spread.
      let sum = 0;
      let sq = 0;
      for (const v of plain.image) {
        if (!Number.isFinite(v)) throw new Error(`${what}: non-finite output`);
        sum += v;
        sq += v * v;
      }
      const n = plain.image.length;
      const std = Math.sqrt(sq / n - (sum / n) ** 2);
      if (!(std > 1e-2)) throw new Error(`${what}: degenerate output (std ${std})`);
      const diff = maxAbsDiff(banded.image, plain.image);
      if (diff !== 0) throw new Error(`${what}: banded image differs from the unbanded one by up to ${diff}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
