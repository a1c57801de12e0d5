// Benchmark (not a test): load a ~1 GiB synthetic safetensors file tensor by tensor into GPU buffers and
// report process RSS growth against the largest tensor and the total.
//
//   deno task bench [--size-mib 1024] [--keep]
//
// On a discrete GPU, uploaded buffers live in VRAM and RSS should grow by about one staging chunk. On
// lavapipe (software Vulkan) "GPU memory" is host memory, so RSS grows by the total uploaded bytes; the
// figure that shows the reader's own footprint is the peak *above* that (transient host buffers).

import { parseArgs } from "node:util";
import { Gpu } from "../src/gpu/device.ts";
import { SafetensorsFile, writeSafetensorsStreaming } from "../src/weights/safetensors.ts";
import type { Tensor } from "../src/gpu/tensor.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { "size-mib": { type: "string", default: "1024" }, keep: { type: "boolean" } },
});
const totalMiB = Number(values["size-mib"]);
const mib = (b: number) => (b / 2 ** 20).toFixed(1);

// A UNet-like mix: one large tensor (like a 1280×1280×3×3 conv, 28 MiB f16) scaled up, many mid-size ones.
const largest = 96 * 2 ** 20; // bytes
const entries: { name: string; dtype: "F16"; shape: number[] }[] = [{
  name: "big",
  dtype: "F16",
  shape: [largest / 2],
}];
let remaining = totalMiB * 2 ** 20 - largest;
for (let i = 0; remaining > 0; i++) {
  const bytes = Math.min(remaining, (8 + (i % 5) * 6) * 2 ** 20);
  entries.push({ name: `t${String(i).padStart(3, "0")}`, dtype: "F16", shape: [bytes / 2] });
  remaining -= bytes;
}
const path = await Deno.makeTempFile({ prefix: "bench-", suffix: ".safetensors" });
console.log(`writing ${entries.length} tensors, ${totalMiB} MiB, to ${path} ...`);
const fill = new Uint16Array(largest / 2).map((_, i) => 0x3c00 + (i % 1024)); // valid f16 values
await writeSafetensorsStreaming(path, entries, (name) => {
  const n = entries.find((e) => e.name === name)!.shape[0];
  return fill.subarray(0, n);
});

const gpu = await Gpu.create();
await gpu.sync();
(globalThis as { gc?: () => void }).gc?.();
const rss0 = Deno.memoryUsage().rss;
let peak = rss0;
const sampler = setInterval(() => (peak = Math.max(peak, Deno.memoryUsage().rss)), 5);

const t0 = performance.now();
const file = await SafetensorsFile.open(path);
const tensors: Tensor[] = [];
let total = 0;
let largestSeen = 0;
for (const name of file.names()) {
  const t = await file.uploadF16(gpu, name);
  tensors.push(t);
  total += t.byteLength;
  largestSeen = Math.max(largestSeen, t.byteLength);
  peak = Math.max(peak, Deno.memoryUsage().rss);
}
await gpu.sync();
const seconds = (performance.now() - t0) / 1000;
file.close();
clearInterval(sampler);
const rssLoaded = Deno.memoryUsage().rss;
for (const t of tensors) t.destroy();
await gpu.sync();
const rssFreed = Deno.memoryUsage().rss;

console.log(`adapter: ${gpu.report.adapter.description}`);
console.log(
  `loaded ${tensors.length} tensors, ${mib(total)} MiB in ${seconds.toFixed(2)} s (${
    (total / 2 ** 20 / seconds).toFixed(0)
  } MiB/s)`,
);
console.log(`largest tensor:              ${mib(largestSeen)} MiB`);
console.log(`RSS before:                  ${mib(rss0)} MiB`);
console.log(
  `RSS growth after load:       ${mib(rssLoaded - rss0)} MiB  (GPU buffers; host memory on lavapipe)`,
);
console.log(`RSS peak growth during load: ${mib(peak - rss0)} MiB`);
console.log(
  `peak above the uploaded data: ${mib(peak - rss0 - total)} MiB  (reader's transient host memory)`,
);
console.log(`RSS growth after destroying buffers: ${mib(rssFreed - rss0)} MiB`);
if (!values.keep) await Deno.remove(path);
gpu.destroy();
