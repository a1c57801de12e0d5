// The HTTP side of the engine worker: spawns it, turns its messages into /healthz states and job event
// streams, and recovers from a lost device or a crashed worker by replacing the worker (a fresh device,
// the weights reloaded, the sizes warmed again) while jobs wait. The HTTP thread itself touches no GPU.

import { Channel } from "../../util/channel.ts";
import {
  type DecoderName,
  type Engine,
  type GenerateRequest,
  type GenerationEvent,
  type ModelDefaults,
  RequestError,
  type SamplerName,
} from "../../pipeline/types.ts";
import {
  DeviceLostError,
  type EngineHost,
  type EngineStatus,
  type GpuInfo,
  UnavailableError,
} from "../engine_host.ts";
import type {
  EngineInfo,
  FromWorker,
  InitMessage,
  WarmupSize,
  WorkerJobError,
  WorkerLoadOptions,
} from "./protocol.ts";

/** The worker's load options (no model: the GPU only, generation answers 503), and the host's own. */
export interface WorkerHostOptions extends WorkerLoadOptions {
  /** What decodes the final image (default vae). */
  decoder?: DecoderName;
  disableF16?: boolean;
  /** Warm the default size (the model's, or `defaultSize`) first; default false. */
  warmupDefault?: boolean;
  /** Sizes warmed while loading (after the default size). */
  warmup?: WarmupSize[];
  /** Accept `loseDevice()` (tests of recovery). */
  testHooks?: boolean;
  /** At most this many recoveries within `recoveryWindowMs`; one more and the host reports failed. */
  maxRecoveries?: number;
  recoveryWindowMs?: number;
}

const NO_MODEL = "the server runs without a model (--no-model): start it with --model DIR (or SD_MODEL=DIR)";

export class WorkerEngineHost implements EngineHost {
  readonly hasModel: boolean;
  readonly modelPath?: string;
  #worker?: Worker;
  #state: EngineStatus = { status: "starting" };
  #gpuInfo?: GpuInfo;
  #info?: EngineInfo;
  #ready = deferred();
  #jobs = new Map<number, Channel<GenerationEvent>>();
  #nextId = 0;
  #recoveries: number[] = [];
  #closed = false;
  readonly #engine: Engine;

  constructor(private readonly options: WorkerHostOptions) {
    this.hasModel = options.model !== undefined;
    this.modelPath = options.model;
    this.#engine = new WorkerEngine(this);
  }

  start(): void {
    if (!this.#worker && !this.#closed) this.#spawn();
  }

  async engine(): Promise<Engine> {
    if (!this.hasModel) throw new UnavailableError(NO_MODEL);
    this.start();
    await this.#ready.promise;
    return this.#engine;
  }

  get current(): Engine | undefined {
    return this.#info?.model ? this.#engine : undefined;
  }

  unavailableReason(): string | undefined {
    if (!this.hasModel) return NO_MODEL;
    if (this.#state.status === "failed") return `the model failed to load: ${this.#state.reason}`;
    return undefined;
  }

  status(): EngineStatus {
    return this.#state;
  }

  gpuInfo(): GpuInfo | undefined {
    return this.#gpuInfo;
  }

  /** @internal Engine facts for WorkerEngine. */
  get info(): EngineInfo | undefined {
    return this.#info;
  }

  /** Test hook: the worker destroys its GPU device, as a driver reset would. */
  loseDevice(): void {
    if (!this.options.testHooks) throw new Error("test hooks are disabled");
    this.#worker?.postMessage({ type: "lose-device" });
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#failJobs(new UnavailableError("the server is shutting down"));
    this.#ready.reject(new UnavailableError("the server is shutting down"));
    const worker = this.#worker;
    this.#worker = undefined;
    if (worker) await retire(worker);
  }

  /** @internal One generation on the worker; aborting `signal` cancels it there between steps. */
  async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
    await this.#ready.promise;
    const worker = this.#worker;
    if (!worker) throw new UnavailableError("the engine is not running");
    const id = ++this.#nextId;
    const events = new Channel<GenerationEvent>();
    this.#jobs.set(id, events);
    const cancel = () => worker.postMessage({ type: "cancel", id });
    signal?.addEventListener("abort", cancel, { once: true });
    try {
      worker.postMessage({ type: "generate", id, request });
      if (signal?.aborted) cancel();
      yield* events;
    } finally {
      signal?.removeEventListener("abort", cancel);
      this.#jobs.delete(id);
    }
  }

  #spawn(): void {
    const worker = new Worker(new URL("./engine_worker.ts", import.meta.url).href, {
      type: "module",
      name: "sd-engine",
    });
    worker.onmessage = (e: MessageEvent<FromWorker>) => {
      if (this.#worker === worker) this.#onMessage(e.data);
    };
    worker.onerror = (e) => {
      e.preventDefault();
      if (this.#worker === worker) this.#recover(`the engine worker crashed: ${e.message}`);
    };
    this.#worker = worker;
    const o = this.options;
    const init: InitMessage = {
      type: "init",
      model: o.model,
      download: o.download,
      tokenizerDir: o.tokenizerDir,
      loraDir: o.loraDir,
      loraStrict: o.loraStrict,
      taesd: o.taesd,
      decoder: o.decoder ?? "vae",
      disableF16: o.disableF16 ?? false,
      gpuChoices: o.gpuChoices,
      retune: o.retune,
      warmupDefault: o.warmupDefault ?? false,
      warmup: o.warmup ?? [],
      defaultSize: o.defaultSize,
      defaultGuidance: o.defaultGuidance,
      batchBudgetBytes: o.batchBudgetBytes,
      testHooks: o.testHooks ?? false,
    };
    worker.postMessage(init);
  }

  #onMessage(msg: FromWorker): void {
    switch (msg.type) {
      case "gpu":
        this.#gpuInfo = msg.info;
        break;
      case "downloading": {
        const progress = msg.totalBytes ? Math.round((msg.bytes / msg.totalBytes) * 1000) / 1000 : null;
        this.#state = { status: "downloading", progress, bytes: msg.bytes, totalBytes: msg.totalBytes };
        if (msg.file) this.#state.file = msg.file;
        break;
      }
      case "loading": {
        const progress = Math.round(Math.min(1, Math.max(0, msg.fraction)) * 1000) / 1000;
        this.#state = this.#state.status === "recovering"
          ? { status: "recovering", reason: this.#state.reason, progress, stage: msg.stage }
          : { status: "loading", progress, stage: msg.stage };
        break;
      }
      case "ready":
        this.#info = {
          model: msg.model,
          defaultSampler: msg.defaultSampler,
          defaults: msg.defaults,
          gpuBytes: msg.gpuBytes,
        };
        this.#state = { status: "ready", model: msg.model };
        this.#ready.resolve();
        break;
      case "failed":
        this.#fail(msg.reason);
        break;
      case "event":
        this.#jobs.get(msg.id)?.push(msg.event);
        break;
      case "end":
        if (this.#info) this.#info.gpuBytes = msg.gpuBytes;
        this.#jobs.get(msg.id)?.close();
        break;
      case "job-error":
        this.#jobs.get(msg.id)?.fail(jobError(msg.error));
        break;
      case "closed":
        break;
      case "device-lost":
        this.#recover(`the GPU device was lost (${msg.reason})`);
        break;
    }
  }

  /** Replaces the worker: running jobs fail with DeviceLostError, waiting ones wait for the new one. */
  #recover(reason: string): void {
    if (this.#closed) return;
    this.#failJobs(new DeviceLostError(`${reason}; the model is reloading, retry the request`));
    if (this.#worker) retire(this.#worker);
    this.#worker = undefined;
    const now = Date.now();
    const window = this.options.recoveryWindowMs ?? 10 * 60_000;
    this.#recoveries = this.#recoveries.filter((t) => now - t < window);
    if (this.#recoveries.length >= (this.options.maxRecoveries ?? 3)) {
      this.#fail(`${reason}, after ${this.#recoveries.length} recoveries in ${window / 60_000} min`);
      return;
    }
    this.#recoveries.push(now);
    console.error(`${reason}: restarting the engine`);
    if (this.#ready.settled) this.#ready = deferred();
    this.#state = { status: "recovering", reason, progress: 0 };
    this.#spawn();
  }

  #fail(reason: string): void {
    console.error(`engine failed: ${reason}`);
    this.#state = { status: "failed", reason };
    if (this.#worker) retire(this.#worker);
    this.#worker = undefined;
    const error = new UnavailableError(`the model failed to load: ${reason}`);
    this.#failJobs(error);
    if (this.#ready.settled) this.#ready = deferred();
    this.#ready.reject(error);
  }

  #failJobs(error: Error): void {
    for (const events of this.#jobs.values()) events.fail(error);
    this.#jobs.clear();
  }
}

/** The engine as the queue sees it; every call goes to the host's worker. */
class WorkerEngine implements Engine {
  constructor(private readonly host: WorkerEngineHost) {}

  get modelName(): string {
    return this.host.info?.model ?? "";
  }

  get defaultSampler(): SamplerName {
    return this.host.info?.defaultSampler ?? "pndm";
  }

  get defaults(): ModelDefaults | undefined {
    return this.host.info?.defaults;
  }

  generate(request: GenerateRequest, signal?: AbortSignal): AsyncIterable<GenerationEvent> {
    return this.host.generate(request, signal);
  }

  gpuBytes(): number {
    return this.host.info?.gpuBytes ?? 0;
  }
}

/** Ends a worker: it releases its GPU device first (see engine_worker.ts shutdown()), then it is terminated;
 * one that does not answer within 3 s (stuck in a GPU call) is terminated anyway. */
async function retire(worker: Worker): Promise<void> {
  const closed = new Promise<void>((resolve) => {
    worker.onmessage = (e: MessageEvent<FromWorker>) => {
      if (e.data.type === "closed") resolve();
    };
  });
  worker.onerror = (e) => e.preventDefault();
  worker.postMessage({ type: "shutdown" });
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([closed, new Promise((r) => (timer = setTimeout(r, 3_000)))]);
  clearTimeout(timer);
  worker.terminate();
}

function jobError(e: WorkerJobError): Error {
  switch (e.kind) {
    case "request":
      return new RequestError(e.field, e.message);
    case "aborted":
      return new DOMException("the generation was cancelled", "AbortError");
    case "device_lost":
      return new DeviceLostError(`the GPU device was lost (${e.message})`);
    case "engine":
      return new Error(e.message);
  }
}

interface Deferred {
  promise: Promise<void>;
  settled: boolean;
  resolve(): void;
  reject(e: Error): void;
}

function deferred(): Deferred {
  const d = { settled: false } as Deferred;
  d.promise = new Promise<void>((resolve, reject) => {
    d.resolve = () => {
      d.settled = true;
      resolve();
    };
    d.reject = (e) => {
      d.settled = true;
      reject(e);
    };
  });
  d.promise.catch(() => {}); // Observed through engine(); never unhandled.
  return d;
}
