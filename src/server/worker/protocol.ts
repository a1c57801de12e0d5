// The messages between the HTTP thread (worker/host.ts) and the engine worker (worker/engine_worker.ts).
// Everything crosses by structured clone; image bytes are transferred, not copied.

import type {
  DecoderName,
  GenerateRequest,
  GenerationEvent,
  ModelDefaults,
  SamplerName,
} from "../../pipeline/types.ts";
import type { HubModelName } from "../../weights/download/index.ts";
import type { GpuInfo } from "../engine_host.ts";

/** A width × height in pixels whose pipelines are built (and run once) while loading. */
export interface WarmupSize {
  width: number;
  height: number;
}

/** Fetch a Hub model into `dir/<model>` before loading it (the default model; resumable, no network when
 * already complete). */
export interface DownloadSpec {
  model: HubModelName;
  dir: string;
  endpoint?: string;
  token?: string;
}

/** What the worker loads and how: passed from the host's options to the init message as they are. */
export interface WorkerLoadOptions {
  /** Diffusers folder or single-file checkpoint; undefined: only the GPU comes up (no model). */
  model?: string;
  /** Download the model first (then `model` is where it lands; the default model). */
  download?: DownloadSpec;
  tokenizerDir?: string;
  /** Folder of LoRA files the requests' LoRA names resolve in (only there; the worker reads the files). */
  loraDir?: string;
  loraStrict?: boolean;
  /** TAESD folder loaded with the model (previews, --decoder taesd), its decoder warmed with the model's
   * sizes; undefined: none. */
  taesd?: string;
  /** --gpu-choices (merged over SD_GPU_FORCE in the worker), and --retune. */
  gpuChoices?: string;
  retune?: boolean;
  /** The server's explicit --default-size, over the model's. */
  defaultSize?: number;
  /** The server's explicit default guidance, over the model's: warm-up runs use the default guidance, so
   * the warmed UNet batch (2 with CFG) is the one requests use. */
  defaultGuidance?: number;
  /** Activation budget of one batched UNet evaluation. */
  batchBudgetBytes?: number;
}

export interface InitMessage extends WorkerLoadOptions {
  type: "init";
  /** What decodes the final image. */
  decoder: DecoderName;
  disableF16: boolean;
  /** Warm the default size (the model's, or `defaultSize`) first. */
  warmupDefault: boolean;
  /** More sizes to warm after it. */
  warmup: WarmupSize[];
  /** Accept `lose-device` (tests of recovery). */
  testHooks: boolean;
}

export type ToWorker =
  | InitMessage
  | { type: "generate"; id: number; request: GenerateRequest }
  | { type: "cancel"; id: number }
  /** Test hook: destroys the GPU device, as a driver reset or a removed GPU would. */
  | { type: "lose-device" }
  /** The server is stopping: release the GPU, answer `closed`, and end. */
  | { type: "shutdown" };

/** A job's failure, with what the HTTP side needs to rebuild the error. */
export type WorkerJobError =
  | { kind: "request"; field: string; message: string }
  | { kind: "aborted" }
  | { kind: "device_lost"; message: string }
  | { kind: "engine"; message: string };

export interface EngineInfo {
  model: string | null;
  defaultSampler?: SamplerName;
  /** The model's own defaults (pipeline/defaults.ts). */
  defaults?: ModelDefaults;
  gpuBytes: number;
}

export type FromWorker =
  | { type: "gpu"; info: GpuInfo }
  | { type: "downloading"; bytes: number; totalBytes: number | null; file?: string }
  | { type: "loading"; fraction: number; stage: string }
  | ({ type: "ready" } & EngineInfo)
  | { type: "failed"; reason: string }
  | { type: "event"; id: number; event: GenerationEvent }
  | { type: "end"; id: number; gpuBytes: number }
  | { type: "job-error"; id: number; error: WorkerJobError }
  | { type: "device-lost"; reason: string }
  | { type: "closed" };

/** Whole-buffer views of the event's image bytes, to transfer (a view into a larger buffer is copied first,
 * so nothing else is detached with it). */
export function transferablesOf(event: GenerationEvent): ArrayBuffer[] {
  const own = (bytes: Uint8Array): Uint8Array =>
    bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
  if (event.type === "done") {
    if (event.images) {
      // `image` is `images[0]`: each buffer is transferred once.
      event.images = event.images.map(own);
      event.image = event.images[0];
      return [...new Set(event.images.map((b) => b.buffer as ArrayBuffer))];
    }
    event.image = own(event.image);
    return [event.image.buffer as ArrayBuffer];
  }
  if (event.type === "preview") {
    event.data = own(event.data);
    return [event.data.buffer as ArrayBuffer];
  }
  return [];
}
