// The messages between the HTTP thread (worker/host.ts) and the engine worker (worker/engine_worker.ts).
// Everything crosses by structured clone; image bytes are transferred, not copied.

import type { DecoderName, GenerateRequest, GenerationEvent, SamplerName } from "../../pipeline/types.ts";
import type { GpuInfo } from "../engine_host.ts";

/** A width × height in pixels whose pipelines are built (and run once) while loading. */
export interface WarmupSize {
  width: number;
  height: number;
}

export interface InitMessage {
  type: "init";
  /** Diffusers folder or single-file checkpoint; undefined: only the GPU comes up (no model). */
  model?: string;
  tokenizerDir?: string;
  /** TAESD folder loaded with the model (previews, --decoder taesd); undefined: none. */
  taesd?: string;
  /** What decodes the final image. */
  decoder: DecoderName;
  disableF16: boolean;
  /** --gpu-choices (merged over SD_GPU_FORCE in the worker), and --retune. */
  gpuChoices?: string;
  retune?: boolean;
  warmup: WarmupSize[];
  /** Guidance of the warm-up runs: the server's default, so the warmed UNet batch (2 with CFG) is the one
   * requests use. */
  warmupGuidance: number;
  /** Accept `lose-device` (tests of recovery). */
  testHooks: boolean;
}

export type ToWorker =
  | InitMessage
  | { type: "generate"; id: number; request: GenerateRequest }
  | { type: "cancel"; id: number }
  /** Test hook: destroys the GPU device, as a driver reset or a removed GPU would. */
  | { type: "lose-device" };

/** A job's failure, with what the HTTP side needs to rebuild the error. */
export type WorkerJobError =
  | { kind: "request"; field: string; message: string }
  | { kind: "aborted" }
  | { kind: "device_lost"; message: string }
  | { kind: "engine"; message: string };

export interface EngineInfo {
  model: string | null;
  defaultSampler?: SamplerName;
  gpuBytes: number;
}

export type FromWorker =
  | { type: "gpu"; info: GpuInfo }
  | { type: "loading"; fraction: number; stage: string }
  | ({ type: "ready" } & EngineInfo)
  | { type: "failed"; reason: string }
  | { type: "event"; id: number; event: GenerationEvent }
  | { type: "end"; id: number; gpuBytes: number }
  | { type: "job-error"; id: number; error: WorkerJobError }
  | { type: "device-lost"; reason: string };

/** Whole-buffer views of the event's image bytes, to transfer (a view into a larger buffer is copied first,
 * so nothing else is detached with it). */
export function transferablesOf(event: GenerationEvent): ArrayBuffer[] {
  const own = (bytes: Uint8Array): Uint8Array =>
    bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
  if (event.type === "done") {
    event.image = own(event.image);
    return [event.image.buffer as ArrayBuffer];
  }
  if (event.type === "preview") {
    event.data = own(event.data);
    return [event.data.buffer as ArrayBuffer];
  }
  return [];
}
