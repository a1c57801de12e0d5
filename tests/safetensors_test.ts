// Safetensors: round trips, every malformed-header case, GPU uploads (F16 and BF16 → F16), and every
// fixture file opens.

import { assertClose, testGpu } from "./util.ts";
import {
  MAX_HEADER_BYTES,
  SafetensorsError,
  SafetensorsFile,
  serializeSafetensors,
  writeSafetensors,
} from "../src/weights/safetensors.ts";
import { f16ToF32Array, f32ToF16Array } from "../src/gpu/device.ts";
import { readTensor } from "../src/gpu/tensor.ts";
import { readJsonFile } from "../src/util/json.ts";

const tmp = await Deno.makeTempDir({ prefix: "st-test-" });

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

async function expectError(fn: () => Promise<unknown>, ...needles: string[]): Promise<void> {
  try {
    await fn();
  } catch (e) {
    assert(e instanceof SafetensorsError, `expected SafetensorsError, got ${e}`);
    for (const n of needles) assert(e.message.includes(n), `error "${e.message}" does not mention "${n}"`);
    return;
  }
  throw new Error(`expected an error mentioning ${needles.join(", ")}`);
}

/** A file made of a raw header string and `dataBytes` of data. */
async function rawFile(
  name: string,
  header: string,
  dataBytes = 0,
  declaredLength?: bigint,
): Promise<string> {
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + h.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, declaredLength ?? BigInt(h.length), true);
  out.set(h, 8);
  const path = `${tmp}/${name}.safetensors`;
  await Deno.writeFile(path, out);
  return path;
}

Deno.test("safetensors round trip of every dtype", async () => {
  const f32 = Float32Array.from({ length: 6 }, (_, i) => i * 0.5 - 1);
  const f16 = f32ToF16Array([1, -2, 0.5, 65504]);
  const bf16 = Uint16Array.from([0x3f80, 0xc000, 0x3f00, 0x4780]); // 1, -2, 0.5, 65536
  const i32 = Int32Array.from([1, -2, 3]);
  const i64 = BigInt64Array.from([999n, -1n]);
  const path = `${tmp}/all.safetensors`;
  await writeSafetensors(path, {
    b: { dtype: "F32", shape: [2, 3], data: f32 },
    a: { dtype: "F16", shape: [4], data: f16 },
    c: { dtype: "BF16", shape: [2, 2], data: bf16 },
    d: { dtype: "I32", shape: [3], data: i32 },
    e: { dtype: "I64", shape: [2], data: i64 },
    empty: { dtype: "F32", shape: [0, 4], data: new Float32Array(0) },
  }, { format: "pt" });
  using f = await SafetensorsFile.open(path);
  assert(f.names().sort().join() === "a,b,c,d,e,empty", `names ${f.names()}`);
  assert(f.metadata.format === "pt", "metadata");
  assert(f.info("b").shape.join() === "2,3", "shape");
  assertClose(await f.readF32("b"), f32, 0, "F32");
  assertClose(await f.readF32("a"), [1, -2, 0.5, 65504], 0, "F16");
  assertClose(await f.readF32("c"), [1, -2, 0.5, 65536], 0, "BF16");
  assertClose(await f.readF32("d"), [1, -2, 3], 0, "I32");
  const e = await f.readI64("e");
  assert(e[0] === 999n && e[1] === -1n, "I64");
  // BF16 → F16 bits: 65536 overflows f16 → inf.
  const bits = f16ToF32Array(await f.readF16Bits("c"));
  assert(bits[0] === 1 && bits[1] === -2 && bits[2] === 0.5 && bits[3] === Infinity, `bf16→f16 ${bits}`);
  assert((await f.readF32("empty")).length === 0, "empty tensor");
  await expectError(() => f.readF32("nope"), "all.safetensors", '"nope"', "no such tensor");
  await expectError(() => f.readI64("a"), '"a"', "integer");
});

Deno.test("safetensors header is padded to 8 bytes and sorted like the reference writer", () => {
  const bytes = serializeSafetensors({
    z: { dtype: "F32", shape: [1], data: new Float32Array([1]) },
    a: { dtype: "F32", shape: [1], data: new Float32Array([2]) },
  });
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert((8 + n) % 8 === 0, "header padding");
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  assert(header.a.data_offsets[0] === 0 && header.z.data_offsets[0] === 4, "sorted offsets");
});

Deno.test("safetensors rejects every malformed header, naming file and tensor", async (t) => {
  const ok = (extra = "") => `{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}${extra}}`;
  const cases: [string, () => Promise<string>, string[]][] = [
    ["too short", async () => {
      const p = `${tmp}/short.safetensors`;
      await Deno.writeFile(p, new Uint8Array(5));
      return p;
    }, ["short.safetensors", "shorter than"]],
    ["header length bound", () => rawFile("huge", ok(), 8, BigInt(MAX_HEADER_BYTES) + 1n), ["exceeds"]],
    ["header past end of file", () => rawFile("pastend", ok(), 8, 4096n), ["past the end of the file"]],
    ["not JSON", () => rawFile("notjson", "{not json", 0), ["notjson.safetensors", "not valid JSON"]],
    ["not an object", () => rawFile("array", "[1,2]", 0), ["not a JSON object"]],
    ["unknown dtype", () => rawFile("dtype", `{"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}`, 8), [
      '"w"',
      "unsupported dtype",
    ]],
    ["bad shape", () => rawFile("shape", `{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, 4), [
      '"w"',
      "invalid shape",
    ]],
    ["bad offsets", () => rawFile("offs", `{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}`, 4), [
      '"w"',
      "invalid data_offsets",
    ]],
    [
      "shape × dtype ≠ range",
      () => rawFile("size", `{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, 8),
      [
        '"w"',
        "needs 12 bytes",
      ],
    ],
    ["range outside file", () => rawFile("outside", ok(), 4), ['"w"', "past the end of the data"]],
    [
      "overlap",
      () =>
        rawFile(
          "overlap",
          `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`,
          12,
        ),
      ['"b"', "overlaps", '"a"'],
    ],
    ["metadata not strings", () => rawFile("meta", ok(`,"__metadata__":{"x":1}`), 8), ["__metadata__.x"]],
    ["missing file", () => Promise.resolve(`${tmp}/does-not-exist.safetensors`), ["cannot open"]],
  ];
  for (const [name, make, needles] of cases) {
    await t.step(name, async () => {
      const path = await make();
      await expectError(() => SafetensorsFile.open(path), ...needles);
    });
  }
});

Deno.test("safetensors uploads straight into GPU buffers, BF16 converted to F16", async () => {
  const gpu = await testGpu();
  const n = 1001; // odd: exercises the 4-byte tail padding
  const values = Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 10);
  const bf16 = new Uint16Array(n);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  const bfValues = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    f[0] = values[i];
    bf16[i] = u[0] >>> 16; // truncation is a valid bf16 value
    u[0] = bf16[i] << 16;
    bfValues[i] = f[0];
  }
  const path = `${tmp}/upload.safetensors`;
  await writeSafetensors(path, {
    h: { dtype: "F16", shape: [7, 143], data: f32ToF16Array(values) },
    b: { dtype: "BF16", shape: [n], data: bf16 },
    f: { dtype: "F32", shape: [n], data: values },
  });
  using file = await SafetensorsFile.open(path);
  const th = await file.uploadF16(gpu, "h");
  const tb = await file.uploadF16(gpu, "b");
  const tf = await file.uploadF16(gpu, "f");
  assert(th.dtype === "f16" && th.shape.join() === "7,143", "shape kept");
  const want = f16ToF32Array(f32ToF16Array(values));
  assertClose(await readTensor(gpu, th), want, 0, "F16 upload");
  assertClose(await readTensor(gpu, tf), want, 0, "F32 → F16 upload");
  assertClose(await readTensor(gpu, tb), f16ToF32Array(f32ToF16Array(bfValues)), 0, "BF16 → F16 upload");
  for (const t of [th, tb, tf]) t.destroy();
});

Deno.test("every fixture file opens", async () => {
  let count = 0;
  async function walk(dir: string): Promise<void> {
    for await (const e of Deno.readDir(dir)) {
      const p = `${dir}/${e.name}`;
      if (e.isDirectory) await walk(p);
      else if (e.name.endsWith(".safetensors")) {
        using f = await SafetensorsFile.open(p);
        for (const name of f.names()) f.info(name);
        count++;
      } else if (e.name.endsWith(".json")) {
        await readJsonFile(p);
        count++;
      }
    }
  }
  await walk(new URL("./fixtures", import.meta.url).pathname);
  assert(count > 0, "no fixture files found");
});
