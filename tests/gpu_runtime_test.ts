// GPU runtime: adapter and limits, the f16 self-test and both weight paths, error surfacing, the
// pipeline cache and the shader preprocessor.

import { testGpu } from "./util.ts";
import { GpuError } from "../src/gpu/device.ts";
import { prelude, preprocess } from "../src/gpu/pipelines.ts";
import { emptyTensor, readTensor, uploadTensor } from "../src/gpu/tensor.ts";

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

Deno.test("a WebGPU adapter is found and its maximum limits are requested", async () => {
  const gpu = await testGpu();
  assert(
    gpu.report.adapter.description.length > 0 || gpu.report.adapter.vendor.length > 0,
    "adapter described",
  );
  assert(
    gpu.device.limits.maxStorageBufferBindingSize === gpu.adapter.limits.maxStorageBufferBindingSize,
    "binding",
  );
  assert(gpu.device.limits.maxBufferSize === gpu.adapter.limits.maxBufferSize, "buffer size");
  // CI runs on lavapipe, which offers shader-f16: the self-test must pass there.
  if (gpu.report.f16Offered) assert(gpu.report.f16SelfTest === "pass" && gpu.f16, "f16 self-test passes");
});

Deno.test("the f32 path works without shader-f16 and reads f16 weights via unpack2x16float", async () => {
  for (const f16 of [true, false]) {
    const gpu = await testGpu({ f16 });
    assert(gpu.f16 === (f16 && gpu.report.f16Offered), `f16 flag ${gpu.f16}`);
    if (!f16) {
      assert(gpu.report.f16SelfTest === "disabled" || gpu.report.f16SelfTest === "not-offered", "disabled");
    }
    const n = 1030;
    const a = uploadTensor(gpu, Float32Array.from({ length: n }, (_, i) => i - 500), [n], "f32");
    const wv = Float32Array.from({ length: n }, (_, i) => Math.fround((i % 13) * 0.125 - 0.75));
    const w = uploadTensor(gpu, wv, [n], "f16");
    const out = emptyTensor(gpu, [n], "f32");
    const pipeline = gpu.kernel("selftest", { ACT: "f32" });
    gpu.run([gpu.dispatch(pipeline, [a.buffer, w.buffer, out.buffer], [Math.ceil(n / 64)])]);
    const got = await readTensor(gpu, out);
    for (let i = 0; i < n; i++) {
      const want = (i - 500) * 2 + wv[i];
      assert(got[i] === want, `f16=${f16} element ${i}: got ${got[i]}, want ${want}`);
    }
  }
});

Deno.test("the prelude declares f16 weights only when shader-f16 is usable", () => {
  assert(prelude(true, "f32").startsWith("enable f16;"), "f16 prelude enables f16");
  assert(prelude(false, "f32").includes("unpack2x16float"), "f32 prelude unpacks");
  assert(!prelude(false, "f32").includes("enable f16"), "f32 prelude does not enable f16");
  let threw = false;
  try {
    prelude(false, "f16");
  } catch {
    threw = true;
  }
  assert(threw, "f16 activations without shader-f16 are refused");
});

Deno.test("the preprocessor handles //#if blocks and {{defines}}", () => {
  const src = "a\n//#if X\nb {{N}}\n//#else\nc\n//#endif\n//#if !X\nd\n//#endif\ne";
  assert(preprocess(src, { X: true, N: 4 }) === "a\nb 4\ne", "X true");
  assert(preprocess(src, { X: false, N: 4 }) === "a\nc\nd\ne", "X false");
  let threw = false;
  try {
    preprocess("{{MISSING}}", {});
  } catch (e) {
    threw = String(e).includes("MISSING");
  }
  assert(threw, "missing define named");
});

Deno.test("the preprocessor expands //#include before //#if, and refuses unknown names and cycles", () => {
  const parts: Record<string, string> = {
    a: "//#if X\nfrom a\n//#endif",
    b: "//#include c",
    c: "//#include b",
  };
  const got = preprocess("top\n//#include a\nend", { X: true }, (n) => parts[n]);
  assert(got === "top\nfrom a\nend", `include: ${JSON.stringify(got)}`);
  for (const [src, needle] of [["//#include nope", "nope"], ["//#include b", "cycle"]]) {
    let message = "";
    try {
      preprocess(src, {}, (n) => parts[n]);
    } catch (e) {
      message = String(e);
    }
    assert(message.includes(needle), `expected an error mentioning ${needle}, got "${message}"`);
  }
});

Deno.test("the pipeline cache compiles each shader and define set once", async () => {
  const gpu = await testGpu();
  const before = gpu.pipelines.compiled;
  const p1 = gpu.kernel("selftest", { ACT: "f32" });
  const p2 = gpu.kernel("selftest", { ACT: "f32" });
  assert(p1 === p2, "same pipeline object");
  assert(gpu.pipelines.compiled <= before + 1, "compiled at most once");
  let threw = false;
  try {
    gpu.kernel("no_such_shader");
  } catch (e) {
    threw = e instanceof GpuError && e.message.includes("no_such_shader");
  }
  assert(threw, "unknown shader names itself");
});

Deno.test("GPU validation errors surface as exceptions naming the operation", async () => {
  const gpu = await testGpu();
  let message = "";
  try {
    await gpu.scoped("upload of tensor x", () => {
      // Writing past the end of a buffer is a validation error.
      const b = gpu.storage(16, "tiny");
      gpu.device.queue.writeBuffer(b, 64, new Uint8Array(16));
    });
  } catch (e) {
    message = e instanceof GpuError ? e.message : `wrong error type: ${e}`;
  }
  assert(message.includes("upload of tensor x"), `error names the operation: "${message}"`);
  let dispatchMessage = "";
  try {
    const pipeline = gpu.kernel("selftest", { ACT: "f32" });
    const b = gpu.storage(64);
    gpu.dispatch(pipeline, [b, b, b], [1e9], "huge dispatch");
  } catch (e) {
    dispatchMessage = e instanceof Error ? e.message : String(e);
  }
  assert(
    dispatchMessage.includes("huge dispatch"),
    `dispatch limit error names the op: "${dispatchMessage}"`,
  );
  gpu.assertHealthy("after errors"); // the device stays usable
});
