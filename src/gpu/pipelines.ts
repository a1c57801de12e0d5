// Pipeline cache keyed by shader name, defines and entry point, so nothing is compiled twice.
//
// Shaders are plain WGSL files in `shaders/`, imported as text (see shaders.ts) so that they are part of
// the module graph and embedded by `deno compile`. Before compiling, a small preprocessor:
//   - prepends the precision prelude (`enable f16;`, the weight load helpers `w4`/`w2`, the `act` alias),
//   - replaces `//#include NAME` lines with shaders/NAME.wgsl (shared declarations),
//   - keeps or drops `//#if NAME` / `//#else` / `//#endif` blocks (NAME true when defines[NAME] is truthy),
//   - replaces `{{NAME}}` with defines[NAME].

import { GpuError } from "./errors.ts";
import { SHADERS } from "./shaders.ts";

export type ShaderDefines = Record<string, string | number | boolean>;

/** Activation storage type inside kernels. */
export type ActDType = "f32" | "f16";

export function prelude(f16Weights: boolean, act: ActDType): string {
  if (act === "f16" && !f16Weights) throw new Error("f16 activations need shader-f16");
  // Weights are always f16 in memory. With shader-f16 they are read as f16 vectors; without it the same
  // bytes are read as u32 pairs and widened with unpack2x16float.
  const weights = f16Weights
    ? `enable f16;
alias wvec4 = vec4<f16>;
alias wvec2 = vec2<f16>;
fn w4(p: wvec4) -> vec4<f32> { return vec4<f32>(p); }
fn w2(p: wvec2) -> vec2<f32> { return vec2<f32>(p); }
`
    : `alias wvec4 = vec2<u32>;
alias wvec2 = u32;
fn w4(p: wvec4) -> vec4<f32> { return vec4<f32>(unpack2x16float(p.x), unpack2x16float(p.y)); }
fn w2(p: wvec2) -> vec2<f32> { return unpack2x16float(p); }
`;
  return `${weights}alias act = ${act};
alias act4 = vec4<${act}>;
`;
}

export function preprocess(
  source: string,
  defines: ShaderDefines,
  include: (name: string) => string | undefined = (name) => SHADERS[name],
): string {
  source = expandIncludes(source, include, []);
  const out: string[] = [];
  const stack: { active: boolean; parentActive: boolean }[] = [];
  let active = true;
  for (const line of source.split("\n")) {
    const m = line.match(/^\s*\/\/#(if|else|endif)\s*(!?)(\w*)/);
    if (m) {
      if (m[1] === "if") {
        const v = Boolean(defines[m[3]]);
        stack.push({ active, parentActive: active });
        active = active && (m[2] === "!" ? !v : v);
      } else if (m[1] === "else") {
        const top = stack[stack.length - 1];
        if (!top) throw new Error("//#else without //#if");
        active = top.parentActive && !active;
      } else {
        const top = stack.pop();
        if (!top) throw new Error("//#endif without //#if");
        active = top.active;
      }
      continue;
    }
    if (active) out.push(line);
  }
  if (stack.length) throw new Error("unterminated //#if");
  return out.join("\n").replace(/\{\{(\w+)\}\}/g, (_, name: string) => {
    if (!(name in defines)) throw new Error(`shader define {{${name}}} not given`);
    return String(defines[name]);
  });
}

/** Replaces `//#include NAME` lines with shaders/NAME.wgsl (recursively; cycles are an error). */
function expandIncludes(
  source: string,
  include: (name: string) => string | undefined,
  chain: string[],
): string {
  return source.replace(/^[ \t]*\/\/#include[ \t]+(\w+)[ \t]*$/gm, (_, name: string) => {
    if (chain.includes(name)) throw new Error(`shader include cycle: ${[...chain, name].join(" → ")}`);
    const text = include(name);
    if (text === undefined) throw new Error(`//#include ${name}: no shader named ${name}`);
    return expandIncludes(text, include, [...chain, name]);
  });
}

/** What a cached pipeline was built from: tests and reports check which kernel variant a plan runs. */
export interface PipelineInfo {
  shader: string;
  entryPoint: string;
  defines: Readonly<ShaderDefines>;
  /** The prelude read weights as f16 (shader-f16) rather than through unpack2x16float. */
  f16Weights: boolean;
}

export class PipelineCache {
  private readonly cache = new Map<string, GPUComputePipeline>();
  private readonly infos = new WeakMap<GPUComputePipeline, PipelineInfo>();
  private readonly failed = new WeakSet<GPUComputePipeline>();
  private pending: Promise<void>[] = [];
  compiled = 0;

  /** `f16`: whether the device has shader-f16 (the shader prelude enables it). */
  constructor(private readonly device: GPUDevice, private readonly f16: boolean) {}

  get size(): number {
    return this.cache.size;
  }

  get(name: string, defines: ShaderDefines, entryPoint: string): GPUComputePipeline {
    const key = `${name}|${entryPoint}|${JSON.stringify(Object.entries(defines).sort())}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    const source = SHADERS[name];
    if (source === undefined) throw new GpuError(`shader ${name}`, `no shader named ${name} in shaders/`);
    const act = (defines.ACT ?? "f32") as ActDType;
    const code = prelude(this.f16, act) + preprocess(source, defines);
    const device = this.device;
    device.pushErrorScope("validation");
    const module = device.createShaderModule({ code, label: name });
    const pipeline = device.createComputePipeline({
      layout: "auto",
      compute: { module, entryPoint },
      label: `${name}:${entryPoint}`,
    });
    // Compilation errors are reported asynchronously; surface them on the next healthy-check.
    this.pending.push(
      device.popErrorScope().then((err) => {
        if (err) {
          this.cache.delete(key);
          this.failed.add(pipeline);
          console.error(`shader ${name} failed to compile: ${err.message}`);
        }
      }),
    );
    this.infos.set(pipeline, { shader: name, entryPoint, defines: { ...defines }, f16Weights: this.f16 });
    this.cache.set(key, pipeline);
    this.compiled++;
    return pipeline;
  }

  /** The shader, entry point and defines a pipeline of this cache was compiled from. */
  info(pipeline: GPUComputePipeline): PipelineInfo | undefined {
    return this.infos.get(pipeline);
  }

  /** Waits for every compilation check so far; true when `pipeline` failed to compile (autotuning skips it). */
  async failedToCompile(pipeline: GPUComputePipeline): Promise<boolean> {
    const pending = this.pending;
    this.pending = [];
    await Promise.all(pending);
    return this.failed.has(pipeline);
  }
}
