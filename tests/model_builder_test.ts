// The model builder and the weight declarations: every forward reads exactly the weights its blocks
// declare, FLOP counts follow from the recorded ops, and compiled plans recycle buffers after their last use
// while keeping inputs and outputs.

import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { readTensor, uploadTensor, writeActivation } from "../src/gpu/tensor.ts";
import { ModelBuilder } from "../src/models/builder.ts";
import { declaredShapes, type TensorSpec, WeightDecl } from "../src/models/declare.ts";
import { clipTensorSpecs, unetTensorSpecs, vaeTensorSpecs } from "../src/models/expected.ts";
import { referenceConfigs, type ReferenceModel } from "../src/models/presets.ts";
import { parseUNetConfig } from "../src/models/unet/config.ts";
import { unetGraph } from "../src/models/unet/unet.ts";
import { vaeDecoderGraph, vaeEncoderGraph } from "../src/models/vae/vae.ts";
import { clipGraph } from "../src/models/clip/clip.ts";
import { Weights } from "../src/models/weights.ts";
import { parseTaesdConfig, TAESD_CONFIG_JSON } from "../src/models/taesd/config.ts";
import { taesdDecoderGraph, taesdEncoderGraph, taesdTensorSpecs } from "../src/models/taesd/taesd.ts";
import { taesdDecodeFlops } from "../src/models/flops.ts";
import { SafetensorsFile } from "../src/weights/safetensors.ts";
import { linearRef } from "./ref/gemm.ts";
import { assertClose, expectThrow, randomArray, roundF16, testGpu } from "./util.ts";

const TINY_UNET_CONFIG = "tests/fixtures/tiny_sd/unet/config.json";

function assertSameNames(read: ReadonlySet<string>, specs: TensorSpec[], unused: string[], what: string) {
  const declared = new Set(specs.map((s) => s.name));
  const notDeclared = [...read].filter((n) => !declared.has(n));
  const neverRead = [...declared].filter((n) => !read.has(n) && !unused.includes(n));
  assertEquals(notDeclared, [], `${what}: the forward reads undeclared weights`);
  assertEquals(neverRead, [], `${what}: declared weights the forward never reads`);
}

for (const model of ["sd15", "sd21"] as ReferenceModel[]) {
  Deno.test(`${model}: UNet, VAE and CLIP forwards read exactly their declared weights`, () => {
    const c = referenceConfigs(model);
    const unet = unetTensorSpecs(c.unet);
    const shape = { batch: 2, height: 32, width: 32, contextTokens: 77 };
    const u = unetGraph(c.unet, declaredShapes(unet), "f32", shape);
    assertSameNames(u.b.weightsRead(), unet, [], `${model} unet`);

    const vae = vaeTensorSpecs(c.vae);
    const read = new Set([
      ...vaeDecoderGraph(c.vae, declaredShapes(vae), "f32", 8, 8).b.weightsRead(),
      ...vaeEncoderGraph(c.vae, declaredShapes(vae), "f32", 64, 64).b.weightsRead(),
    ]);
    assertSameNames(read, vae, [], `${model} vae`);

    const clip = clipTensorSpecs(c.textEncoder);
    // The pooled projection is declared (checkpoints carry it) but SD conditions on hidden states only.
    const unusedClip = c.textEncoder.with_projection ? ["text_projection.weight"] : [];
    const t = clipGraph(c.textEncoder, declaredShapes(clip), "f32", 1, 77);
    assertSameNames(t.b.weightsRead(), clip, unusedClip, `${model} clip`);
  });
}

Deno.test("TAESD: decoder and encoder read exactly the declared weights, which are the checkpoint's", async () => {
  const c = parseTaesdConfig(TAESD_CONFIG_JSON);
  const specs = taesdTensorSpecs(c);
  const read = new Set([
    ...taesdDecoderGraph(c, declaredShapes(specs), "f32", 8, 8).b.weightsRead(),
    ...taesdEncoderGraph(c, declaredShapes(specs), "f32", 64, 64).b.weightsRead(),
  ]);
  assertSameNames(read, specs, [], "taesd");
  // The fixture is laid out as madebyollin/taesd: the same names and shapes, 2,445,063 parameters.
  using file = await SafetensorsFile.open("tests/fixtures/taesd/model/diffusion_pytorch_model.safetensors");
  assertEquals(
    Object.fromEntries(specs.map((s) => [s.name, s.shape])),
    Object.fromEntries(file.names().sort().map((n) => [n, file.info(n).shape])),
  );
  assertEquals(specs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0), 2_445_063);
  // 3×3 convs only: 64→64 at every level plus conv_in (4→64) and the RGB conv (64→3), no biases counted.
  const per = (hw: number, cin: number, cout: number) => 2 * hw * cin * cout * 9;
  const c64 = (hw: number) => per(hw, 64, 64);
  const want = per(64, 4, 64) + 9 * c64(64) + 10 * c64(256) + 10 * c64(1024) + 4 * c64(4096) +
    per(4096, 64, 3);
  assertEquals(taesdDecodeFlops(c, 8, 8), want);
});

Deno.test("an LCM UNet declares time_embedding.cond_proj; the forward leaves it unread", async () => {
  const json = JSON.parse(await Deno.readTextFile(TINY_UNET_CONFIG));
  const c = parseUNetConfig({ ...json, time_cond_proj_dim: 256 });
  const specs = unetTensorSpecs(c);
  const shape = { batch: 1, height: 16, width: 16, contextTokens: 7 };
  const g = unetGraph(c, declaredShapes(specs), "f32", shape);
  assertSameNames(g.b.weightsRead(), specs, ["time_embedding.cond_proj.weight"], "lcm unet");
});

Deno.test("a forward that names an undeclared weight fails while recording, naming it", () => {
  const d = WeightDecl.root();
  d.at("block").linear("proj", 8, 4);
  const b = ModelBuilder.create(declaredShapes(d.specs), "f32").at("block");
  const x = b.input("x", [3, 4]);
  b.linear("proj", x);
  expectThrow(
    () => b.linear("proj_out", x),
    /weight "block\.proj_out\.weight" is not declared/,
    "undeclared",
  );
});

Deno.test("FLOPs are counted from the recorded ops and the declared shapes", () => {
  const d = WeightDecl.root();
  d.conv("conv", 8, 4, 3);
  d.linear("lin", 16, 8);
  const b = ModelBuilder.create(declaredShapes(d.specs), "f32");
  const x = b.input("x", [2, 6, 5, 4]);
  const h = b.conv("conv", x, { stride: 2 }); // [2, 3, 3, 8]
  assertEquals(h.shape, [2, 3, 3, 8]);
  const y = b.linear("lin", h.view([2, 9, 8]));
  const q = y.view([2, 9, 16]);
  b.attention(q, q, q, { heads: 2, headDim: 8 });
  const conv = 2 * (2 * 3 * 3 * 8) * 4 * 9;
  const lin = 2 * 18 * 8 * 16;
  const attn = 4 * 2 * 2 * 9 * 9 * 8;
  assertEquals(b.flops(), conv + lin + attn);
});

Deno.test("compiled plans reuse a buffer after its last read, keep inputs and outputs, and compute", async () => {
  const gpu = await testGpu();
  const [M, K] = [5, 8];
  const d = WeightDecl.root();
  for (const name of ["a", "b", "c"]) d.linear(name, K, K);
  const host = new Map(
    d.specs.map((s, i) => [s.name, roundF16(randomArray(s.shape.reduce((p, q) => p * q), i + 1, 0.5))]),
  );
  const weights = await Weights.load(gpu, "test", {
    names: () => [...host.keys()],
    info: (name) => ({ shape: d.specs.find((s) => s.name === name)!.shape, dtype: "F16" }),
    uploadF16: (g, name) =>
      Promise.resolve(
        uploadTensor(g, host.get(name)!, d.specs.find((s) => s.name === name)!.shape, "f16", name),
      ),
  }, new Map(d.specs.map((s) => [s.name, s.shape])));
  try {
    const b = ModelBuilder.create(weights, "f32");
    const x = b.input("x", [M, K]);
    const out = b.output(b.linear("c", b.linear("b", b.linear("a", x))));
    const { plan, tensor } = b.compile(gpu, weights);
    // x, a (then reused for c), b: three buffers of M·K f32 each, not four.
    assertEquals(plan.bytes, 3 * Math.ceil((M * K * 4) / 16) * 16);
    assertEquals(new Set([tensor(x).buffer, tensor(out).buffer]).size, 2, "input and output stay distinct");
    const xs = randomArray(M * K, 99);
    writeActivation(gpu, tensor(x), xs);
    plan.run("builder test");
    let want = xs;
    for (const n of ["a", "b", "c"]) {
      want = linearRef(want, host.get(`${n}.weight`)!, M, K, K, { bias: host.get(`${n}.bias`) });
    }
    assertClose(await readTensor(gpu, tensor(out)), want, 1e-5, "three chained linears");
    plan.destroy();
  } finally {
    weights.destroy();
  }
});
