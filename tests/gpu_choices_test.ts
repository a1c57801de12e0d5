// Forced GPU choices (src/gpu/choices.ts): the parser, and that each forced choice reaches the kernels the
// tiny UNet's plan records (PipelineCache.info names each pipeline's shader, entry point and defines).
//
// CI runs the model and prompt → image fixture tests a second and third time with SD_GPU_FORCE set
// (tiling=workgroup, then tiling=workgroup,accumulate=f16, then f16=off; .ci/run). The last test here runs in those runs too and checks that the
// shared test GPU took the forced paths, so a forced run that silently ran the adapter's defaults fails.

import { Gpu } from "../src/gpu/device.ts";
import {
  formatGpuChoices,
  type GpuChoices,
  gpuChoicesFromEnv,
  parseGpuChoices,
  resolveGpuChoices,
} from "../src/gpu/choices.ts";
import type { PipelineInfo } from "../src/gpu/pipelines.ts";
import { gemmTiling, storageOf } from "../src/ops/gemm.ts";
import { loadModel } from "../src/models/harness.ts";
import type { UNet } from "../src/models/unet/unet.ts";
import { SafetensorsFile } from "../src/weights/safetensors.ts";
import { readJsonFile } from "../src/util/json.ts";
import { assert, assertEquals, expectThrow, testGpu } from "./util.ts";

const UNET = new URL("./fixtures/tiny_sd/unet/", import.meta.url).pathname;

Deno.test("GPU choices: every key parses, prints canonically, and errors name the key and the source", () => {
  const c = parseGpuChoices(
    " tiling=Workgroup, tile=4x4 ,splitk=off,accumulate=F16,attention=4x2/8,f16=off,subgroups=on,tune=retune",
  );
  assertEquals(c, {
    tiling: "workgroup",
    tile: { tm: 4, tn: 4 },
    splitK: false,
    accumulate: "f16",
    attention: { qpi: 4, kb: 2, wg: 8 },
    f16: false,
    subgroups: true,
    tune: "retune",
  }, "parsed");
  assertEquals(
    formatGpuChoices(c),
    "tiling=workgroup,tile=4x4,splitk=off,accumulate=f16,attention=4x2/8,f16=off,subgroups=on,tune=retune",
    "canonical",
  );
  assertEquals(parseGpuChoices(formatGpuChoices(c)), c, "round trip");
  assertEquals(parseGpuChoices("tiling=shared,tile=16x16/8").tiling, "workgroup", "ops' own mode names");
  assertEquals(parseGpuChoices("tiling=buffer").tiling, "registers", "buffer = registers");
  assertEquals(parseGpuChoices(""), {}, "empty");
  expectThrow(() => parseGpuChoices("tiling=warp", "--gpu-choices"), /--gpu-choices: tiling must be/, "mode");
  expectThrow(() => parseGpuChoices("tile=4"), /SD_GPU_FORCE: tile must be TMxTN/, "tile syntax");
  expectThrow(() => parseGpuChoices("tile=0x4"), /tile rows must be 1-64/, "tile range");
  expectThrow(() => parseGpuChoices("f16=maybe"), /f16 must be on or off/, "on/off");
  expectThrow(() => parseGpuChoices("fp16=off"), /unknown key "fp16"/, "unknown key");
  expectThrow(() => parseGpuChoices("tiling"), /not key=value/, "no value");
  expectThrow(() => parseGpuChoices("attention=4x2"), /QPIxKB\/WG/, "attention syntax");
  expectThrow(() => parseGpuChoices("accumulate=f64"), /accumulate must be f32 or f16/, "accumulate");
});

Deno.test("GPU choices: a flag overrides SD_GPU_FORCE key by key", () => {
  const before = Deno.env.get("SD_GPU_FORCE");
  try {
    Deno.env.set("SD_GPU_FORCE", "tiling=registers,f16=off");
    assertEquals(resolveGpuChoices(undefined), { tiling: "registers", f16: false }, "env alone");
    assertEquals(resolveGpuChoices("tiling=texture"), { tiling: "texture", f16: false }, "flag over env");
    Deno.env.set("SD_GPU_FORCE", "tiling=nope");
    expectThrow(() => resolveGpuChoices(undefined), /SD_GPU_FORCE: tiling/, "env errors name the variable");
  } finally {
    if (before === undefined) Deno.env.delete("SD_GPU_FORCE");
    else Deno.env.set("SD_GPU_FORCE", before);
  }
});

/** The tiny UNet's plan at an 8×8 latent and the variant of every pipeline it dispatches. */
async function unetKernels(gpu: Gpu): Promise<PipelineInfo[]> {
  using weights = await SafetensorsFile.open(`${UNET}diffusion_pytorch_model.fp16.safetensors`);
  const config = await readJsonFile(`${UNET}config.json`);
  const unet = await loadModel(gpu, "unet", config, weights, gpu.f16 ? "f16" : "f32") as UNet;
  const plan = unet.plan(2, 8, 8, 77).plan;
  const infos = plan.dispatches.map((d) => gpu.pipelines.info(d.pipeline));
  unet.dropPlans();
  unet.weights.destroy();
  assert(infos.every((i) => i !== undefined), "every pipeline of the plan comes from the pipeline cache");
  return infos as PipelineInfo[];
}

const isGemm = (i: PipelineInfo) =>
  (i.shader === "matmul" && i.defines.GEMM) || (i.shader === "conv" && i.defines.CONV);

/** Checks every GEMM and conv kernel against a forced tiling; returns how many there were. */
function checkGemms(infos: PipelineInfo[], c: GpuChoices, what: string): number {
  const gemms = infos.filter(isGemm);
  assert(gemms.some((i) => i.shader === "conv") && gemms.some((i) => i.shader === "matmul"), `${what}: both`);
  for (const i of gemms) {
    const name = `${what}: ${i.shader}:${i.entryPoint} ${
      JSON.stringify({ TEX: i.defines.TEX, TM: i.defines.TM })
    }`;
    if (c.tiling === "workgroup") assert(i.entryPoint.endsWith("_shared"), `${name} is workgroup-tiled`);
    if (c.tiling === "registers" || c.tiling === "texture") {
      assert(!i.entryPoint.endsWith("_shared"), `${name} is a register tile`);
      assertEquals(!!i.defines.TEX, c.tiling === "texture", `${name} reads textures`);
    }
    if (c.tile && c.tiling !== "workgroup") {
      assertEquals(i.defines.TM, c.tile.tm, `${name} rows per invocation`);
    }
    if (c.splitK !== undefined && i.shader === "matmul") {
      assertEquals(!!i.defines.SPLITK, c.splitK, `${name} split-K`);
    }
    // accumulate=f16 applies where x is f16 (f16 activations); f32 ones always accumulate in f32.
    if (c.accumulate) {
      assertEquals(!!i.defines.ACC16, c.accumulate === "f16" && i.defines.ACT === "f16", `${name} f16 sums`);
    }
  }
  return gemms.length;
}

Deno.test("GPU choices: workgroup tiling and f16=off reach every GEMM and conv of the tiny UNet", async () => {
  const gpu = await Gpu.create({ choices: { tiling: "workgroup", f16: false } });
  try {
    assert(!gpu.f16, "shader-f16 refused");
    assertEquals(gpu.report.f16SelfTest, gpu.report.f16Offered ? "disabled" : "not-offered", "f16 report");
    assertEquals(gpu.report.forced, "tiling=workgroup,f16=off", "report");
    assertEquals(gemmTiling(gpu).source, "forced", "tiling source");
    const infos = await unetKernels(gpu);
    assert(checkGemms(infos, { tiling: "workgroup" }, "workgroup") >= 10, "GEMM kernels found");
    assert(infos.every((i) => !i.f16Weights), "every kernel reads weights through unpack2x16float");
  } finally {
    gpu.destroy();
  }
});

Deno.test("GPU choices: forced register tiles, split-K and attention tiling reach the kernels", async () => {
  const probe = await testGpu();
  const splitK = probe.report.subgroupSize !== null;
  const choices: GpuChoices = {
    tiling: "registers",
    tile: { tm: 2, tn: 8, wg: 64 },
    splitK,
    attention: { qpi: 2, kb: 1, wg: 16 },
    ...(probe.f16 ? { accumulate: "f16" as const } : {}),
  };
  const gpu = await Gpu.create({ choices });
  try {
    const infos = await unetKernels(gpu);
    checkGemms(infos, choices, "registers");
    // f16 sums on storage buffers read the operands as f16 vectors (no unpacking).
    for (const i of infos.filter(isGemm)) {
      assertEquals(!!i.defines.X16_LOADS, !!i.defines.ACC16, "f16 loads with f16 sums on buffers");
    }
    if (probe.f16) assert(infos.some((i) => i.defines.ACC16), "f16 sums reached the UNet's kernels");
    const attention = infos.filter((i) => i.shader === "attention" && i.entryPoint === "main");
    assert(attention.length > 0, "attention kernels");
    for (const i of attention) {
      assertEquals([i.defines.WG, i.defines.QBLOCK, i.defines.KB], [16, 32, 1], "attention tiling");
    }
    if (!splitK) console.log(`split-K not checked: subgroups ${probe.report.subgroups}`);
  } finally {
    gpu.destroy();
  }
});

Deno.test("GPU choices: SD_GPU_FORCE reaches the shared test GPU (checks CI's forced runs)", async () => {
  const env = gpuChoicesFromEnv();
  const gpu = await testGpu();
  assertEquals(gpu.report.forced, formatGpuChoices(env), "the forced choices the test GPU reports");
  if (env.f16 === false) assert(!gpu.f16, "f16=off: no shader-f16");
  const tiling = gemmTiling(gpu);
  const forced = !!(env.tiling || env.tile || env.splitK !== undefined || env.accumulate === "f16");
  assertEquals(tiling.source, forced ? "forced" : "adapter", "source");
  const infos = await unetKernels(gpu);
  if (forced) checkGemms(infos, env, "SD_GPU_FORCE");
  else {
    // The adapter's own row: texture operands on llvmpipe, workgroup tiles elsewhere.
    const storage = storageOf(tiling.tiling.mode);
    for (const i of infos.filter(isGemm)) {
      assertEquals(!!i.defines.TEX, storage === "texture", "adapter storage");
    }
  }
  assert(infos.every((i) => i.f16Weights === gpu.f16), "every kernel's weight path follows gpu.f16");
  console.log(`test GPU: forced "${gpu.report.forced}", GEMM tiling ${JSON.stringify(tiling.tiling)}`);
});
