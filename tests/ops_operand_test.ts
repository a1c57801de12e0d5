// Producers writing a GEMM's x operand (src/ops/operand.ts): GroupNorm (+ SiLU), LayerNorm and attention
// store their result as x texels, and the linear / conv after them reads those texels instead of packing a
// buffer. The results must equal the unfused pair (producer → buffer → GEMM) bit for bit, for f32 and f16
// activations and both operand storages: textures (llvmpipe's table row; the model builder fuses only these)
// and storage buffers.

import type { Gpu } from "../src/gpu/device.ts";
import type { Dispatch } from "../src/gpu/device.ts";
import type { ActDType } from "../src/gpu/pipelines.ts";
import { emptyTensor, readTensor, type Tensor, uploadTensor, writeActivation } from "../src/gpu/tensor.ts";
import { type GemmTiling, scratchOperand, xRowTexels } from "../src/ops/gemm.ts";
import { linear } from "../src/ops/linear.ts";
import { conv2d, prepareConvWeight } from "../src/ops/conv.ts";
import { groupNorm, layerNorm } from "../src/ops/norm.ts";
import { attention } from "../src/ops/attention.ts";
import type { PackedActivations } from "../src/ops/operand.ts";
import { assert, randomArray, roundF16, testGpu } from "./util.ts";

const MODES: GemmTiling["mode"][] = ["texture", "buffer"];

function f16Weights(gpu: Gpu, shape: number[], seed: number, scale: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return uploadTensor(gpu, roundF16(randomArray(n, seed, scale)), shape, "f16");
}

/** Runs `fused` and `plain` (each writes `out`) and requires identical results. */
async function same(gpu: Gpu, what: string, plain: Dispatch[], fused: Dispatch[], out: Tensor) {
  gpu.run(plain);
  const want = await readTensor(gpu, out);
  writeActivation(gpu, out, new Float32Array(out.numel).fill(-7)); // the fused run must write every value
  gpu.run(fused);
  const got = await readTensor(gpu, out);
  const at = want.findIndex((v, i) => !Object.is(v, got[i]));
  assert(at < 0, `${what}: differs at ${at}: ${got[at]} vs ${want[at]}`);
}

function operand(gpu: Gpu, mode: GemmTiling["mode"], shape: number[], act: ActDType): PackedActivations {
  const k = shape[shape.length - 1];
  const rows = shape.reduce((a, b) => a * b, 1) / k;
  return { operand: scratchOperand(gpu, mode, rows * xRowTexels(k, act)), shape, act };
}

Deno.test("norms and attention write GEMM operands: equal to the unfused pair bit for bit", async () => {
  const gpu = await testGpu();
  const acts: ActDType[] = gpu.f16 ? ["f32", "f16"] : ["f32"];
  let seed = 900;
  for (const act of acts) {
    for (const mode of MODES) {
      const tiling = { mode };
      const tag = `${act} ${mode}`;
      // GroupNorm + SiLU (40 channels: groups of 5 straddle vec4 units) → conv 3×3, and → linear.
      const shape = [2, 9, 7, 40];
      const x = uploadTensor(gpu, randomArray(2 * 9 * 7 * 40, seed++, 2), shape, act);
      const gamma = f16Weights(gpu, [40], seed++, 0.5);
      const beta = f16Weights(gpu, [40], seed++, 0.5);
      const gn = { x, gamma, beta, groups: 8, eps: 1e-5, silu: true, act };
      const normed = emptyTensor(gpu, shape, act);
      const weight = prepareConvWeight(gpu, f16Weights(gpu, [24, 40, 3, 3], seed++, 0.1), mode);
      const convOut = emptyTensor(gpu, [2, 9, 7, 24], act);
      const conv = { weight, out: convOut, stride: 1 as const, padding: "same" as const, act, tiling };
      const packed = operand(gpu, mode, shape, act);
      await same(
        gpu,
        `groupNorm → conv ${tag}`,
        [...groupNorm(gpu, { ...gn, out: normed }), ...conv2d(gpu, { ...conv, x: normed })],
        [...groupNorm(gpu, { ...gn, out: packed }), ...conv2d(gpu, { ...conv, x: packed })],
        convOut,
      );
      const rows = [2 * 9 * 7, 40];
      const w = f16Weights(gpu, [16, 40], seed++, 0.2);
      const linOut = emptyTensor(gpu, [rows[0], 16], act);
      const packedRows = operand(gpu, mode, rows, act);
      await same(
        gpu,
        `groupNorm → linear ${tag}`,
        [
          ...groupNorm(gpu, { ...gn, out: normed }),
          ...linear(gpu, { x: normed.view(rows), weight: w, out: linOut, act, tiling }),
        ],
        [
          ...groupNorm(gpu, { ...gn, out: packedRows }),
          ...linear(gpu, { x: packedRows, weight: w, out: linOut, act, tiling }),
        ],
        linOut,
      );

      // LayerNorm → linear.
      const tokens = uploadTensor(gpu, randomArray(3 * 11 * 48, seed++, 3), [33, 48], act);
      const ln = {
        x: tokens,
        gamma: f16Weights(gpu, [48], seed++, 1),
        beta: f16Weights(gpu, [48], seed++, 1),
      };
      const lnOut = emptyTensor(gpu, [33, 48], act);
      const w2 = f16Weights(gpu, [12, 48], seed++, 0.2);
      const out2 = emptyTensor(gpu, [33, 12], act);
      const packedLn = operand(gpu, mode, [33, 48], act);
      await same(
        gpu,
        `layerNorm → linear ${tag}`,
        [
          ...layerNorm(gpu, { ...ln, out: lnOut, eps: 1e-5, act }),
          ...linear(gpu, { x: lnOut, weight: w2, out: out2, act, tiling }),
        ],
        [
          ...layerNorm(gpu, { ...ln, out: packedLn, eps: 1e-5, act }),
          ...linear(gpu, { x: packedLn, weight: w2, out: out2, act, tiling }),
        ],
        out2,
      );

      // Attention (2 heads × 16) → the output projection with a residual.
      const [B, nq, nk, hd] = [2, 19, 7, 32];
      const q = uploadTensor(gpu, randomArray(B * nq * hd, seed++, 2), [B, nq, hd], act);
      const kv = uploadTensor(gpu, randomArray(B * nk * 2 * hd, seed++, 1), [B, nk, 2 * hd], act);
      const att = {
        q,
        k: { tensor: kv, offset: 0, rowStride: 2 * hd },
        v: { tensor: kv, offset: hd, rowStride: 2 * hd },
        heads: 2,
        headDim: 16,
        act,
      };
      const attOut = emptyTensor(gpu, [B, nq, hd], act);
      const wo = f16Weights(gpu, [hd, hd], seed++, 0.2);
      const res = uploadTensor(gpu, randomArray(B * nq * hd, seed++, 1), [B * nq, hd], act);
      const proj = emptyTensor(gpu, [B * nq, hd], act);
      const packedAtt = operand(gpu, mode, [B * nq, hd], act);
      await same(
        gpu,
        `attention → linear ${tag}`,
        [
          ...attention(gpu, { ...att, out: attOut }),
          ...linear(gpu, { x: attOut.view([B * nq, hd]), weight: wo, residual: res, out: proj, act, tiling }),
        ],
        [
          ...attention(gpu, { ...att, out: packedAtt }),
          ...linear(gpu, { x: packedAtt, weight: wo, residual: res, out: proj, act, tiling }),
        ],
        proj,
      );
    }
  }
});
