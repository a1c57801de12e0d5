// Elementwise / data-movement ops against CPU references, for both activation precisions and both weight
// paths. Tolerances (max|gpu − ref| / max|ref|): f32 1e-5 (pure data movement: exact), f16 5e-3.

import type { Gpu } from "../src/gpu/device.ts";
import type { ActDType } from "../src/gpu/pipelines.ts";
import { emptyTensor, readTensor, type Tensor, uploadTensor } from "../src/gpu/tensor.ts";
import { add, addBroadcast, cfgCombine, geglu, map, silu } from "../src/ops/elementwise.ts";
import {
  cast,
  concatChannels,
  copyChannels,
  nchwToNhwc,
  nhwcToNchw,
  resizeNearest,
  sliceChannels,
  upsampleNearest2x,
} from "../src/ops/layout.ts";
import { timestepEmbedding } from "../src/ops/timestep.ts";
import { SafetensorsFile } from "../src/weights/safetensors.ts";
import {
  concatLastRef,
  geluRef,
  geluTanhRef,
  mapRef,
  nchwToNhwcRef,
  nhwcToNchwRef,
  quickGeluRef,
  siluRef,
  timestepEmbeddingRef,
  upsample2xRef,
} from "./ref/ops.ts";
import { assertClose, randomArray, roundF16, testGpu } from "./util.ts";

const TOL: Record<ActDType, number> = { f32: 1e-5, f16: 5e-3 };

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

function upload(gpu: Gpu, data: Float32Array, shape: number[], act: ActDType): [Tensor, Float32Array] {
  return [uploadTensor(gpu, data, shape, act), act === "f16" ? roundF16(data) : data];
}

async function run(gpu: Gpu, dispatches: ReturnType<typeof add>, out: Tensor): Promise<Float32Array> {
  gpu.run(dispatches);
  return await readTensor(gpu, out);
}

const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);

Deno.test("add: out = a·alpha + b·beta, vec4 and scalar, out of place and in place", async () => {
  for (const { gpu, act, name } of await configs()) {
    for (const shape of [[3, 13, 9, 37], [2, 77, 40]]) {
      const n = numel(shape);
      const [a, as] = upload(gpu, randomArray(n, 1, 3), shape, act);
      const [b, bs] = upload(gpu, randomArray(n, 2, 3), shape, act);
      const out = emptyTensor(gpu, shape, act);
      const got = await run(gpu, add(gpu, { a, b, out, alpha: 0.5, beta: -2, act }), out);
      assertClose(got, as.map((v, i) => 0.5 * v - 2 * bs[i]), TOL[act], `add ${name} [${shape}]`);
      const inplace = await run(gpu, add(gpu, { a, b, out: a, act }), a);
      assertClose(inplace, as.map((v, i) => v + bs[i]), TOL[act], `add in place ${name} [${shape}]`);
    }
  }
});

Deno.test("addBroadcast adds a [B, C] vector to every position", async () => {
  for (const { gpu, act, name } of await configs()) {
    for (const shape of [[3, 13, 9, 37], [2, 5, 7, 40]]) {
      const [bt, c] = [shape[0], shape[3]];
      const n = numel(shape);
      const [x, xs] = upload(gpu, randomArray(n, 3, 2), shape, act);
      const [y, ys] = upload(gpu, randomArray(bt * c, 4, 2), [bt, c], act);
      const out = emptyTensor(gpu, shape, act);
      const want = xs.map((v, i) => v + ys[Math.floor(i / (n / bt)) * c + (i % c)]);
      assertClose(
        await run(gpu, addBroadcast(gpu, { x, y, out, act }), out),
        want,
        TOL[act],
        `bcast ${name}`,
      );
      assertClose(
        await run(gpu, addBroadcast(gpu, { x, y, out: x, act }), x),
        want,
        TOL[act],
        `bcast inplace ${name}`,
      );
    }
  }
});

Deno.test("map: scale/bias, SiLU, GELU (erf and tanh), quick GELU, tanh soft clamp, clamp", async () => {
  const cases: [string, Parameters<typeof map>[1]["activation"], (v: number) => number][] = [
    ["silu", "silu", siluRef],
    ["gelu", "gelu", geluRef],
    ["gelu_tanh", "gelu_tanh", geluTanhRef],
    ["quick_gelu", "quick_gelu", quickGeluRef],
  ];
  for (const { gpu, act, name } of await configs()) {
    for (const shape of [[3, 77, 37], [2, 9, 13, 8]]) {
      const n = numel(shape);
      // wide range, including the tails where exp under/overflows
      const [x, xs] = upload(gpu, randomArray(n, 5, 12), shape, act);
      const out = emptyTensor(gpu, shape, act);
      for (const [label, activation, fn] of cases) {
        const got = await run(gpu, map(gpu, { x, out, activation, scale: 0.75, bias: 0.25, act }), out);
        assertClose(got, mapRef(xs, (v) => fn(v * 0.75 + 0.25)), TOL[act], `${label} ${name} [${shape}]`);
      }
      // TAESD's decoder input: tanh(x / 3) · 3 (the range reaches ±12, where tanh saturates).
      const soft = await run(
        gpu,
        map(gpu, { x, out, scale: 1 / 3, activation: "tanh", outScale: 3, act }),
        out,
      );
      assertClose(soft, mapRef(xs, (v) => Math.tanh(v / 3) * 3), TOL[act], `tanh soft clamp ${name}`);
      const clamped = await run(gpu, map(gpu, { x, out, scale: 0.5, bias: 0.5, clamp: [0, 1], act }), out);
      assertClose(
        clamped,
        mapRef(xs, (v) => Math.min(1, Math.max(0, v * 0.5 + 0.5))),
        TOL[act],
        `clamp ${name}`,
      );
      const s = await run(gpu, silu(gpu, { x, out, act }), out);
      assertClose(s, mapRef(xs, siluRef), TOL[act], `silu ${name}`);
    }
  }
});

Deno.test("geglu: x[:, :F] · gelu(x[:, F:])", async () => {
  for (const { gpu, act, name } of await configs()) {
    for (const [rows, f] of [[77, 37], [26, 40]]) {
      const [x, xs] = upload(gpu, randomArray(rows * 2 * f, 6, 4), [rows, 2 * f], act);
      const out = emptyTensor(gpu, [rows, f], act);
      const want = new Float32Array(rows * f);
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < f; c++) want[r * f + c] = xs[r * 2 * f + c] * geluRef(xs[r * 2 * f + f + c]);
      }
      assertClose(
        await run(gpu, geglu(gpu, { x, out, act }), out),
        want,
        TOL[act],
        `geglu ${name} ${rows}×${f}`,
      );
    }
  }
});

Deno.test("concat / slice / copy along channels (NHWC skip connections)", async () => {
  for (const { gpu, act, name } of await configs()) {
    for (const [c1, c2] of [[37, 21], [32, 64], [40, 3]]) {
      const px = 3 * 13 * 9;
      const [a, as] = upload(gpu, randomArray(px * c1, 7), [3, 13, 9, c1], act);
      const [b, bs] = upload(gpu, randomArray(px * c2, 8), [3, 13, 9, c2], act);
      const out = emptyTensor(gpu, [3, 13, 9, c1 + c2], act);
      const got = await run(gpu, concatChannels(gpu, { a, b, out, act }), out);
      const want = concatLastRef(as, bs, c1, c2);
      assertClose(got, want, 0, `concat ${name} ${c1}+${c2}`);
      const back = emptyTensor(gpu, [3, 13, 9, c2], act);
      assertClose(
        await run(gpu, sliceChannels(gpu, { x: out, out: back, start: c1, act }), back),
        bs,
        0,
        `slice ${name}`,
      );
    }
    // copy into the middle of a wider tensor, leaving the rest untouched
    const [x, xs] = upload(gpu, randomArray(10 * 8, 9), [10, 8], act);
    const [dst, ds] = upload(gpu, randomArray(10 * 12, 10), [10, 12], act);
    const got = await run(
      gpu,
      copyChannels(gpu, { x, out: dst, srcStart: 4, dstStart: 4, count: 4, act }),
      dst,
    );
    const want = ds.slice();
    for (let r = 0; r < 10; r++) for (let c = 4; c < 8; c++) want[r * 12 + c] = xs[r * 8 + c];
    assertClose(got, want, 0, `copyChannels ${name}`);
  }
});

Deno.test("upsampleNearest2x on NHWC maps", async () => {
  for (const { gpu, act, name } of await configs()) {
    for (const shape of [[3, 13, 9, 37], [2, 4, 5, 8]]) {
      const [b, h, w, c] = shape;
      const [x, xs] = upload(gpu, randomArray(numel(shape), 11), shape, act);
      const out = emptyTensor(gpu, [b, 2 * h, 2 * w, c], act);
      const got = await run(gpu, upsampleNearest2x(gpu, { x, out, act }), out);
      assertClose(got, upsample2xRef(xs, b, h, w, c), 0, `upsample ${name} [${shape}]`);
    }
  }
});

Deno.test("resizeNearest to sizes that are not ×2 picks torch's nearest source pixel", async () => {
  // torch: source = min(floor(o · (float)in/out), in − 1), e.g. 2 → 3 reads rows 0, 0, 1.
  for (const { gpu, act, name } of await configs()) {
    for (const [shape, oh, ow] of [[[2, 2, 3, 8], 3, 6], [[1, 5, 3, 7], 7, 4]] as const) {
      const [b, h, w, c] = shape;
      const [x, xs] = upload(gpu, randomArray(numel([...shape]), 12), [...shape], act);
      const out = emptyTensor(gpu, [b, oh, ow, c], act);
      const got = await run(gpu, resizeNearest(gpu, { x, out, act }), out);
      const want = new Float32Array(b * oh * ow * c);
      const src = (o: number, i: number, n: number) =>
        Math.min(Math.floor(Math.fround(o * Math.fround(i / n))), i - 1);
      for (let bb = 0; bb < b; bb++) {
        for (let y = 0; y < oh; y++) {
          for (let xx = 0; xx < ow; xx++) {
            for (let ch = 0; ch < c; ch++) {
              want[((bb * oh + y) * ow + xx) * c + ch] =
                xs[((bb * h + src(y, h, oh)) * w + src(xx, w, ow)) * c + ch];
            }
          }
        }
      }
      assertClose(got, want, 0, `resize ${name} [${shape}] → ${oh}×${ow}`);
    }
  }
});

Deno.test("timestepEmbedding reproduces diffusers' time_proj from the golden UNet", async () => {
  const file = await SafetensorsFile.open(
    new URL("./fixtures/ops/unet_norm_time.safetensors", import.meta.url).pathname,
  );
  const want = await file.readF32("time_proj"); // [2, 32]
  const steps = Float32Array.from(await file.readI64("timestep"), Number); // [999, 1]
  file.close();
  for (const { gpu, act, name } of await configs()) {
    const t = uploadTensor(gpu, steps, [2], "f32");
    const out = emptyTensor(gpu, [2, 32], act);
    const got = await run(
      gpu,
      timestepEmbedding(gpu, { timesteps: t, out, flipSinToCos: true, freqShift: 0, act }),
      out,
    );
    // f32: torch's own f32 sin/cos/exp differ from exact by ~1 ulp (measured 1.7e-6); the GPU matches the
    // float64 reference of the same f32 arguments to ~6e-8.
    assertClose(got, want, act === "f32" ? 1e-5 : 5e-3, `time_proj ${name}`);
  }
});

Deno.test("timestepEmbedding: odd dim, freq shift 1, no flip, scale, fractional and large timesteps", async () => {
  const steps = new Float32Array([0, 1, 17.5, 500.25, 999]);
  for (const { gpu, act, name } of await configs()) {
    for (
      const [dim, flip, shift, scale] of [[321, false, 1, 1], [320, true, 0, 1], [37, true, 1, 2]] as const
    ) {
      const t = uploadTensor(gpu, steps, [steps.length], "f32");
      const out = emptyTensor(gpu, [steps.length, dim], act);
      const got = await run(
        gpu,
        timestepEmbedding(gpu, { timesteps: t, out, flipSinToCos: flip, freqShift: shift, scale, act }),
        out,
      );
      const want = timestepEmbeddingRef(steps, dim, flip, shift, scale);
      // f32: arguments are bit-identical to torch's, so only sin/cos rounding (~1 ulp) remains.
      assertClose(got, want, act === "f32" ? 2e-6 : 5e-3, `timestep embedding ${name} dim ${dim}`);
    }
  }
});

Deno.test("NCHW ↔ NHWC layout conversion with dtype changes, and cast", async () => {
  for (const { gpu, name } of await configs()) {
    const dtypes: ActDType[] = gpu.f16 ? ["f32", "f16"] : ["f32"];
    const [b, c, h, w] = [3, 37, 13, 9];
    const data = randomArray(b * c * h * w, 12, 5);
    for (const from of dtypes) {
      for (const to of dtypes) {
        const tol = from === "f16" || to === "f16" ? 5e-3 : 0;
        const x = uploadTensor(gpu, data, [b, c, h, w], from);
        const nhwc = emptyTensor(gpu, [b, h, w, c], to);
        const got = await run(gpu, nchwToNhwc(gpu, { x, out: nhwc }), nhwc);
        assertClose(got, nchwToNhwcRef(data, b, c, h, w), tol, `nchw→nhwc ${from}→${to} ${name}`);
        const back = emptyTensor(gpu, [b, c, h, w], from);
        const round = await run(gpu, nhwcToNchw(gpu, { x: nhwc, out: back }), back);
        assertClose(round, data, tol, `nhwc→nchw ${to}→${from} ${name}`);
        const held = readTensor(gpu, nhwc);
        assertClose(nhwcToNchwRef(await held, b, h, w, c), round, tol, `nhwc→nchw reference ${name}`);
        const casted = emptyTensor(gpu, [b, c, h, w], to);
        assertClose(
          await run(gpu, cast(gpu, { x, out: casted }), casted),
          data,
          tol,
          `cast ${from}→${to} ${name}`,
        );
      }
    }
  }
});

Deno.test("cfgCombine: u + g·(c − u) over the batch halves, guidance as number or tensor", async () => {
  for (const { gpu, act, name } of await configs()) {
    const shape = [2 * 3, 9, 13, 4];
    const n = numel(shape) / 2;
    const [x, xs] = upload(gpu, randomArray(2 * n, 13, 2), shape, act);
    const out = emptyTensor(gpu, [3, 9, 13, 4], "f32");
    const want = (g: number) => Float32Array.from({ length: n }, (_, i) => xs[i] + g * (xs[n + i] - xs[i]));
    assertClose(
      await run(gpu, cfgCombine(gpu, { x, out, guidance: 7.5 }), out),
      want(7.5),
      TOL[act],
      `cfg ${name}`,
    );
    const g = uploadTensor(gpu, new Float32Array([3]), [1], "f32");
    const plan = cfgCombine(gpu, { x, out, guidance: g });
    assertClose(await run(gpu, plan, out), want(3), TOL[act], `cfg tensor ${name}`);
    gpu.device.queue.writeBuffer(g.buffer, 0, new Float32Array([1.5]));
    assertClose(await run(gpu, plan, out), want(1.5), TOL[act], `cfg rewritten guidance ${name}`);
  }
});
