// The real engine behind `serve --model PATH`: the GPU comes up first, then the model loads in the
// background and reports its progress to /healthz. The engine module is imported lazily so that a model
// problem (or an engine bug) leaves the server up and answering "failed" instead of not starting.

import type { Gpu } from "../gpu/device.ts";
import type { EngineLoader, GpuInfo } from "./engine_host.ts";

export interface ModelLoaderOptions {
  /** Tokenizer folder for single-file checkpoints (which ship none). */
  tokenizerDir?: string;
}

export function modelEngineLoader(
  modelPath: string,
  gpu: Promise<Gpu>,
  options: ModelLoaderOptions = {},
): EngineLoader {
  return async (onProgress) => {
    try {
      await Deno.stat(modelPath);
    } catch {
      throw new Error(`model path ${modelPath} does not exist`);
    }
    const device = await gpu;
    const { loadPipeline } = await import("../pipeline/load.ts");
    return await loadPipeline(device, modelPath, {
      tokenizerDir: options.tokenizerDir,
      onProgress: (fraction, what) => onProgress({ fraction, stage: what }),
    });
  };
}

/** /healthz's adapter fields from the GPU's start-up report. */
export function gpuInfoOf(gpu: Gpu): GpuInfo {
  const r = gpu.report;
  return {
    adapter: r.adapter.description || r.adapter.vendor || r.adapter.device || "unknown adapter",
    adapterInfo: r.adapter,
    f16: r.f16,
    f16SelfTest: r.f16SelfTest,
    limits: r.limits,
  };
}
