// WebGPU adapter/device acquisition, error surfacing, and the f16 self-test.
//
// Everything GPU-side goes through one `Gpu` object: it owns the device, the pipeline cache and the
// buffer pool, and records dispatches into one command buffer per model call (`gpu.run`).

import { BufferPool } from "./pool.ts";
import { PipelineCache, type ShaderDefines } from "./pipelines.ts";
import { GpuError } from "./errors.ts";
import { formatGpuChoices, type GpuChoices, gpuChoicesFromEnv } from "./choices.ts";
import { f16SelfTest, subgroupSelfTest } from "./self_tests.ts";

export { GpuError };

export interface GpuOptions {
  /** Refuse shader-f16 even where offered: exercises the f32 + unpack2x16float path. */
  disableF16?: boolean;
  /**
   * Forced choices (tiling, tiles, f16, subgroups, tuning; see choices.ts). Default: the SD_GPU_FORCE
   * environment variable, so every Gpu of a process (tests, the engine worker) takes the forced paths.
   */
  choices?: GpuChoices;
  powerPreference?: GPUPowerPreference;
  /**
   * Caps `gpu.maxBinding` below the device's storage binding limit, as if the device allowed only this many
   * bytes per binding: tests force the row-banded paths (conv2d, groupNorm, elementwise) on small tensors.
   */
  maxBindingBytes?: number;
}

export interface GpuReport {
  adapter: { vendor: string; architecture: string; device: string; description: string; fallback: boolean };
  /** shader-f16 offered by the adapter. */
  f16Offered: boolean;
  /** Result of the start-up numeric check of f16 storage and arithmetic. */
  f16SelfTest: "pass" | "fail" | "not-offered" | "disabled";
  /** f16 is used in shaders (weights read as f16, optional f16 activations). */
  f16: boolean;
  /**
   * The subgroups feature: "pass" when granted and its self-test passed (Deno's adapter.features does not
   * list it even where requestDevice grants it, so it is requested and the refusal caught), "fail" when the
   * self-test failed, "not-offered" when the device refused it, "disabled" by `subgroups=off`.
   */
  subgroups: "pass" | "fail" | "not-offered" | "disabled";
  /** The fixed subgroup size kernels may rely on (adapter min = max size), else null. */
  subgroupSize: number | null;
  /** The forced choices in effect (canonical spec; "" when nothing is forced). */
  forced: string;
  limits: { maxStorageBufferBindingSize: number; maxBufferSize: number };
}

/** One recorded compute dispatch: built once per shape, replayed many times. */
export interface Dispatch {
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  workgroups: readonly [number, number, number];
  label?: string;
}

export type Binding = GPUBuffer | { buffer: GPUBuffer; offset?: number; size?: number };

export class Gpu {
  readonly pipelines: PipelineCache;
  readonly pool: BufferPool;
  private lost: string | null = null;
  /** Unmapped MAP_READ buffers by size, for readBytes. */
  private readonly stagingFree = new Map<number, GPUBuffer[]>();
  private uncaptured: string | null = null;

  private constructor(
    readonly adapter: GPUAdapter,
    readonly device: GPUDevice,
    readonly f16: boolean,
    readonly report: GpuReport,
    /** Forced choices (from the options or SD_GPU_FORCE): the ops read tiling, tile and attention here. */
    readonly choices: GpuChoices,
    private readonly bindingCap: number | null = null,
  ) {
    this.pipelines = new PipelineCache(device, f16);
    this.pool = new BufferPool(device);
    device.lost.then((info) => {
      this.lost = `${info.reason}: ${info.message}`;
    });
    device.addEventListener("uncapturederror", (ev) => {
      this.uncaptured = (ev as GPUUncapturedErrorEvent).error.message;
    });
  }

  static async create(options: GpuOptions = {}): Promise<Gpu> {
    if (!("gpu" in navigator) || !navigator.gpu) {
      throw new GpuError("adapter request", "this runtime has no WebGPU (navigator.gpu is undefined)");
    }
    ensureRuntimeDir();
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: options.powerPreference });
    if (!adapter) {
      throw new GpuError(
        "adapter request",
        "no WebGPU adapter found. Install GPU drivers with Vulkan/Metal/D3D12, or on CPU-only Linux " +
          "Mesa's lavapipe (apt-get install mesa-vulkan-drivers)",
      );
    }
    const cap = options.maxBindingBytes;
    if (cap !== undefined && !(Number.isInteger(cap) && cap >= 16)) {
      throw new GpuError("device creation", `maxBindingBytes must be an integer ≥ 16, got ${cap}`);
    }
    const choices = options.choices ?? gpuChoicesFromEnv();
    const disableF16 = options.disableF16 || choices.f16 === false;
    const f16Offered = adapter.features.has("shader-f16");
    if (choices.f16 === true && !disableF16 && !f16Offered) {
      throw new GpuError("device creation", "f16=on was forced, but the adapter does not offer shader-f16");
    }
    const wantF16 = f16Offered && !disableF16;
    const limits = {
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
      maxBufferSize: adapter.limits.maxBufferSize,
      maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: adapter.limits.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: adapter.limits.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupSizeY: adapter.limits.maxComputeWorkgroupSizeY,
      maxStorageBuffersPerShaderStage: adapter.limits.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupsPerDimension: adapter.limits.maxComputeWorkgroupsPerDimension,
      // Attention's K/V textures have one row per token (9216 for a 768² VAE decode; the default is 8192).
      maxTextureDimension2D: adapter.limits.maxTextureDimension2D,
    };
    const features: GPUFeatureName[] = wantF16 ? ["shader-f16"] : [];
    // Timestamps let benchmarks time every dispatch (gpu.profile); only requested where offered.
    if (adapter.features.has("timestamp-query")) features.push("timestamp-query");
    // Subgroups: Deno's adapter.features omits the feature even where the device grants it (lavapipe grants
    // it, subgroupAdd then works), so it is requested whenever not disabled, and a refusal means not offered.
    let device: GPUDevice | null = null;
    let subgroups: GpuReport["subgroups"] = choices.subgroups === false ? "disabled" : "not-offered";
    if (choices.subgroups !== false) {
      try {
        device = await adapter.requestDevice({
          requiredFeatures: [...features, "subgroups" as GPUFeatureName],
          requiredLimits: limits,
        });
        subgroups = device.features.has("subgroups") ? "fail" : "not-offered";
      } catch {
        device = null;
      }
    }
    device ??= await adapter.requestDevice({ requiredFeatures: features, requiredLimits: limits });
    const info = adapter.info as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number };
    // A fixed subgroup size lets a workgroup of exactly that many invocations be one subgroup (split-K).
    const fixedSize = info.subgroupMinSize !== undefined && info.subgroupMinSize === info.subgroupMaxSize
      ? info.subgroupMinSize
      : null;
    let subgroupSize: number | null = null;
    if (subgroups === "fail") {
      const size = await subgroupSelfTest(device, fixedSize);
      subgroups = size === false ? "fail" : "pass";
      subgroupSize = size === false ? null : size;
    }
    if (choices.subgroups === true && subgroups !== "pass") {
      device.destroy();
      throw new GpuError("device creation", `subgroups=on was forced, but subgroups are ${subgroups}`);
    }
    let selfTest: GpuReport["f16SelfTest"] = !f16Offered ? "not-offered" : disableF16 ? "disabled" : "fail";
    if (wantF16) selfTest = (await f16SelfTest(device)) ? "pass" : "fail";
    const f16 = selfTest === "pass";
    if (choices.f16 === true && !disableF16 && !f16) {
      device.destroy();
      throw new GpuError("device creation", "f16=on was forced, but the shader-f16 self-test failed");
    }
    const report: GpuReport = {
      adapter: {
        vendor: info.vendor,
        architecture: info.architecture,
        device: info.device,
        description: info.description,
        fallback: (info as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter ?? false,
      },
      f16Offered,
      f16SelfTest: selfTest,
      f16,
      subgroups,
      subgroupSize,
      forced: formatGpuChoices(choices),
      limits: {
        maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
        maxBufferSize: limits.maxBufferSize,
      },
    };
    return new Gpu(adapter, device, f16, report, choices, cap ?? null);
  }

  /** Storage binding limit ops plan for: the device's, or the smaller `maxBindingBytes` the Gpu was made with. */
  get maxBinding(): number {
    const device = this.device.limits.maxStorageBufferBindingSize;
    return this.bindingCap === null ? device : Math.min(device, this.bindingCap);
  }

  /** Throws if the device was lost or an uncaptured error happened since the last check. */
  assertHealthy(operation: string): void {
    if (this.lost) throw new GpuError(operation, `device lost (${this.lost})`);
    if (this.uncaptured) {
      const msg = this.uncaptured;
      this.uncaptured = null;
      throw new GpuError(operation, msg);
    }
  }

  /** Runs `fn` inside validation and out-of-memory error scopes; a captured error throws naming `operation`. */
  async scoped<T>(operation: string, fn: () => T): Promise<T> {
    this.assertHealthy(operation);
    this.device.pushErrorScope("out-of-memory");
    this.device.pushErrorScope("validation");
    let result: T | undefined;
    let thrown: unknown = null;
    try {
      result = fn();
    } catch (e) {
      thrown = e;
    }
    const validation = await this.device.popErrorScope();
    const oom = await this.device.popErrorScope();
    if (validation) throw new GpuError(operation, validation.message);
    if (oom) throw new GpuError(operation, `out of memory: ${oom.message}`);
    if (thrown !== null) throw thrown;
    return result as T;
  }

  /** Compiles (or fetches from cache) a kernel from `shaders/NAME.wgsl` with text defines. */
  kernel(name: string, defines: ShaderDefines = {}, entryPoint = "main"): GPUComputePipeline {
    return this.pipelines.get(name, defines, entryPoint);
  }

  /** Makes a uniform buffer holding `data` (u32/f32 words). Called at plan-build time, not per step. */
  uniform(data: ArrayBufferView<ArrayBuffer>, label = "params"): GPUBuffer {
    const size = Math.max(16, Math.ceil(data.byteLength / 16) * 16);
    const buf = this.device.createBuffer({
      size,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      label,
    });
    this.device.queue.writeBuffer(buf, 0, data.buffer, data.byteOffset, data.byteLength);
    return buf;
  }

  /** Bind group with `buffers[i]` at binding i of group 0. */
  bind(pipeline: GPUComputePipeline, buffers: Binding[], label?: string): GPUBindGroup {
    return this.device.createBindGroup({
      label,
      layout: pipeline.getBindGroupLayout(0),
      entries: buffers.map((b, i) => ({
        binding: i,
        resource: b instanceof GPUBuffer
          ? { buffer: b }
          : { buffer: b.buffer, offset: b.offset, size: b.size },
      })),
    });
  }

  /** Builds one dispatch record. */
  dispatch(
    pipeline: GPUComputePipeline,
    buffers: Binding[],
    workgroups: readonly [number, number?, number?],
    label?: string,
  ): Dispatch {
    const [x, y = 1, z = 1] = workgroups;
    const lim = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (x > lim || y > lim || z > lim) {
      throw new GpuError(label ?? "dispatch", `workgroup count ${x}×${y}×${z} exceeds the limit ${lim}`);
    }
    const name = label ?? pipeline.label;
    return { pipeline, bindGroup: this.bind(pipeline, buffers, name), workgroups: [x, y, z], label: name };
  }

  /** Encodes all dispatches into one compute pass and submits one command buffer. */
  run(dispatches: readonly Dispatch[], label = "model call"): void {
    this.assertHealthy(label);
    const encoder = this.device.createCommandEncoder({ label });
    const pass = encoder.beginComputePass({ label });
    for (const d of dispatches) {
      if (d.workgroups[0] === 0 || d.workgroups[1] === 0 || d.workgroups[2] === 0) continue;
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bindGroup);
      pass.dispatchWorkgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
    }
    pass.end();
    this.device.queue.submit([encoder.finish()]);
  }

  /**
   * `run` in `segments` command buffers, each submitted before the previous one is awaited (the queue never
   * runs dry), checking `signal` as each finishes: a cancel stops the call after at most two segments of it
   * instead of the whole call. One SD 1.5 UNet step at 256² is ~20 s on lavapipe, so a cancel that arrives
   * just after a step began took a whole step with one command buffer; with 8 it takes at most a quarter.
   * Throws `signal.reason` once aborted (the segment in flight still completes).
   */
  async runCancellable(
    dispatches: readonly Dispatch[],
    label: string,
    signal: AbortSignal,
    segments = 8,
  ): Promise<void> {
    const per = Math.max(1, Math.ceil(dispatches.length / segments));
    let previous: Promise<unknown> | undefined;
    for (let start = 0; start < dispatches.length; start += per) {
      signal.throwIfAborted();
      this.run(dispatches.slice(start, start + per), label);
      const submitted = this.device.queue.onSubmittedWorkDone();
      if (previous) await previous;
      previous = submitted;
    }
    signal.throwIfAborted();
  }

  /**
   * Benchmarks only: runs each dispatch in its own timed compute pass and returns GPU milliseconds per
   * dispatch (needs the timestamp-query feature; null where the adapter lacks it).
   */
  async profile(dispatches: readonly Dispatch[]): Promise<{ label: string; ms: number }[] | null> {
    if (!this.device.features.has("timestamp-query")) return null;
    const out: { label: string; ms: number }[] = [];
    const chunk = 1024;
    for (let first = 0; first < dispatches.length; first += chunk) {
      const part = dispatches.slice(first, first + chunk);
      const count = part.length * 2;
      const querySet = this.device.createQuerySet({ type: "timestamp", count });
      const resolve = this.device.createBuffer({
        size: count * 8,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      });
      const encoder = this.device.createCommandEncoder({ label: "profile" });
      part.forEach((d, i) => {
        const pass = encoder.beginComputePass({
          timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
        });
        pass.setPipeline(d.pipeline);
        pass.setBindGroup(0, d.bindGroup);
        pass.dispatchWorkgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
        pass.end();
      });
      encoder.resolveQuerySet(querySet, 0, count, resolve, 0);
      this.device.queue.submit([encoder.finish()]);
      const times = new BigInt64Array(await this.readBytes(resolve, count * 8, 0, "profile"));
      part.forEach((d, i) =>
        out.push({ label: d.label ?? d.pipeline.label, ms: Number(times[2 * i + 1] - times[2 * i]) / 1e6 })
      );
      querySet.destroy();
      resolve.destroy();
    }
    return out;
  }

  /** Waits for the queue; surfaces errors that happened meanwhile. */
  async sync(operation = "queue"): Promise<void> {
    await this.device.queue.onSubmittedWorkDone();
    this.assertHealthy(operation);
  }

  /** Creates a storage buffer. Size is rounded up to 4 bytes. */
  storage(byteLength: number, label?: string, extraUsage = 0): GPUBuffer {
    const size = Math.max(16, Math.ceil(byteLength / 16) * 16);
    if (size > this.device.limits.maxBufferSize) {
      throw new GpuError(label ?? "buffer", `buffer of ${size} bytes exceeds maxBufferSize`);
    }
    return this.device.createBuffer({
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST | extraUsage,
      label,
    });
  }

  /** Copies a buffer region back to the host. */
  async readBytes(
    buffer: GPUBuffer,
    byteLength: number,
    offset = 0,
    label = "readback",
  ): Promise<ArrayBuffer> {
    const size = Math.ceil(byteLength / 4) * 4;
    // Staging buffers are kept per size and reused: the sampling loop reads the UNet output every step.
    const staging = this.stagingFree.get(size)?.pop() ??
      this.device.createBuffer({
        size,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
        label: "staging",
      });
    const encoder = this.device.createCommandEncoder({ label });
    encoder.copyBufferToBuffer(buffer, offset, staging, 0, size);
    this.device.queue.submit([encoder.finish()]);
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (e) {
      staging.destroy();
      this.assertHealthy(label);
      throw new GpuError(label, String(e));
    }
    const out = staging.getMappedRange().slice(0, byteLength);
    staging.unmap();
    const free = this.stagingFree.get(size) ?? [];
    if (free.length < 4) free.push(staging);
    else staging.destroy();
    this.stagingFree.set(size, free);
    this.assertHealthy(label);
    return out;
  }

  destroy(): void {
    this.pool.clear();
    this.device.destroy();
  }
}

/** Mesa's Vulkan drivers print an error line when XDG_RUNTIME_DIR is unset; give them a private one. */
function ensureRuntimeDir(): void {
  try {
    if (Deno.env.get("XDG_RUNTIME_DIR")) return;
    Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync({ prefix: "sd-webgpu-xdg-" }));
  } catch {
    // no env/write permission: the driver only prints a warning
  }
}

// ---- f16 <-> f32 conversion on the host ----

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** Round-to-nearest-even f32 → f16 bits. */
export function f32ToF16(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  e = half >>> 10;
  return sign | half;
}

const f16Table = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    t[h] = e === 0
      ? s * m * 2 ** -24
      : e === 31
      ? (m ? NaN : s * Infinity)
      : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return t;
})();

export function f16ToF32(h: number): number {
  return f16Table[h & 0xffff];
}

export function f32ToF16Array(src: ArrayLike<number>): Uint16Array<ArrayBuffer> {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToF16(src[i]);
  return out;
}

export function f16ToF32Array(src: Uint16Array): Float32Array<ArrayBuffer> {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f16Table[src[i]];
  return out;
}

/** bf16 bits → f16 bits (via f32; rounds to nearest even, saturating to ±inf as f16 does). */
export function bf16ToF16Array(src: Uint16Array, out = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) {
    u32Scratch[0] = src[i] << 16;
    out[i] = f32ToF16(f32Scratch[0]);
  }
  return out;
}
