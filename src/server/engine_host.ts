// The engine's life cycle as the server sees it: loaded in the background at start-up, reported for
// /healthz as starting / loading / ready / recovering / failed, and handed to the queue one job at a time.
//
// Two hosts implement it: `WorkerEngineHost` (worker/host.ts), the real one, where a Deno Worker owns the
// GPU and the model; and `LocalEngineHost` below, which runs an engine on the calling thread (test doubles).

import type { Engine } from "../pipeline/types.ts";

/** Load progress as a fraction in [0, 1] with an optional stage label ("unet", "vae", …). */
export interface LoadProgress {
  fraction: number;
  stage?: string;
}

/**
 * Builds an engine on the calling thread (LocalEngineHost). Called once, in the background; reports progress
 * as it goes (a bare number is read as a fraction).
 */
export type EngineLoader = (onProgress: (progress: LoadProgress | number) => void) => Promise<Engine>;

/** What /healthz reports about the adapter once it is up (from `Gpu.report`). */
export interface GpuInfo {
  adapter: string;
  f16: boolean;
  [key: string]: unknown;
}

export type EngineStatus =
  | { status: "starting" }
  /** Fetching the default model before loading it: bytes so far of `totalBytes` (null: not yet known). */
  | {
    status: "downloading";
    progress: number | null;
    bytes: number;
    totalBytes: number | null;
    file?: string;
  }
  | { status: "loading"; progress: number; stage?: string }
  | { status: "ready"; model: string | null }
  /** The GPU device was lost (or the engine crashed): a fresh one is loading; jobs wait for it. */
  | { status: "recovering"; reason: string; progress: number; stage?: string }
  | { status: "failed"; reason: string };

/** What the queue and the status routes need of the engine's host. */
export interface EngineHost {
  /** False when the server runs without a model (generation answers 503). */
  readonly hasModel: boolean;
  /** The model's folder or checkpoint file, where the host knows it (A1111's sd-models lists it). */
  readonly modelPath?: string;
  /** Starts loading (idempotent). */
  start(): void;
  /** The engine once it is ready (it waits through loading and recovery); rejects with UnavailableError
   * when there is none or it failed. */
  engine(): Promise<Engine>;
  /** The loaded engine, or undefined while first loading / without a model. */
  readonly current: Engine | undefined;
  /** Why a request cannot be queued now, if it cannot. */
  unavailableReason(): string | undefined;
  status(): EngineStatus;
  gpuInfo(): GpuInfo | undefined;
  /** Releases the engine (after the queue has drained). */
  close(): Promise<void>;
  /** Test hook: loses the GPU device (hosts that own one). */
  loseDevice?(): void;
}

/** The GPU device was lost while a job ran: the job fails with this, and the host recovers. */
export class DeviceLostError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DeviceLostError";
  }
}

/** The engine is not usable (no model, still failing, shutting down): the server answers 503. */
export class UnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnavailableError";
  }
}

export interface EngineHostInit {
  /** A ready engine, or a loader that builds one. Absent: the server runs without a model (503s). */
  engine?: Engine | EngineLoader;
  /** The adapter report for /healthz; absent where the engine has no GPU to report (test doubles). */
  gpu?: Promise<GpuInfo>;
}

/** Runs the engine on the calling thread: for test doubles, whose "GPU work" is timers. */
export class LocalEngineHost implements EngineHost {
  #gpuInfo?: GpuInfo;
  #gpuError?: string;
  #gpuPending: boolean;
  #engine?: Engine;
  #engineError?: string;
  #progress: LoadProgress = { fraction: 0 };
  #loading?: Promise<Engine>;
  readonly hasModel: boolean;

  constructor(private readonly init: EngineHostInit) {
    this.hasModel = init.engine !== undefined;
    this.#gpuPending = init.gpu !== undefined;
    init.gpu?.then(
      (info) => {
        this.#gpuInfo = info;
        this.#gpuPending = false;
      },
      (e) => {
        this.#gpuError = errorText(e);
        this.#gpuPending = false;
      },
    );
    if (init.engine !== undefined && typeof init.engine !== "function") this.#engine = init.engine;
  }

  /** Starts loading (idempotent). Load failures are kept for /healthz and for callers of `engine()`. */
  start(): void {
    if (this.hasModel) this.#load();
  }

  #load(): Promise<Engine> {
    if (this.#loading) return this.#loading;
    const source = this.init.engine;
    if (source === undefined) {
      this.#loading = Promise.reject(
        new UnavailableError(
          "the server runs without a model (--no-model): start it with --model DIR (or SD_MODEL=DIR)",
        ),
      );
    } else if (typeof source !== "function") {
      this.#loading = Promise.resolve(source);
    } else {
      this.#loading = (async () => {
        // Let the GPU come up first so a GPU failure is reported as such.
        if (this.init.gpu) await this.init.gpu;
        const engine = await source((p) => {
          const next = typeof p === "number" ? { fraction: p } : p;
          if (Number.isFinite(next.fraction)) {
            this.#progress = { fraction: Math.min(1, Math.max(0, next.fraction)), stage: next.stage };
          }
        });
        this.#engine = engine;
        return engine;
      })();
      this.#loading.catch((e) => (this.#engineError = errorText(e)));
    }
    this.#loading.catch(() => {}); // Reported through status() and engine(); never unhandled.
    return this.#loading;
  }

  /** The loaded engine, or undefined while loading / without a model. */
  get current(): Engine | undefined {
    return this.#engine;
  }

  /** Waits for the engine; rejects with UnavailableError when there is none or it failed to load. */
  async engine(): Promise<Engine> {
    if (this.#engine) return this.#engine;
    try {
      return await this.#load();
    } catch (e) {
      if (e instanceof UnavailableError) throw e;
      throw new UnavailableError(`the model failed to load: ${errorText(e)}`);
    }
  }

  /** Whether a request can be queued now (it then waits while the model loads). */
  unavailableReason(): string | undefined {
    if (!this.hasModel) {
      return "the server runs without a model (--no-model): start it with --model DIR (or SD_MODEL=DIR)";
    }
    if (this.#gpuError) return `the GPU is unavailable: ${this.#gpuError}`;
    if (this.#engineError) return `the model failed to load: ${this.#engineError}`;
    return undefined;
  }

  status(): EngineStatus {
    if (this.#gpuError) return { status: "failed", reason: `GPU: ${this.#gpuError}` };
    if (this.#engineError) return { status: "failed", reason: this.#engineError };
    if (this.#gpuPending) return { status: "starting" };
    if (!this.hasModel) return { status: "ready", model: null };
    if (this.#engine) return { status: "ready", model: this.#engine.modelName };
    if (!this.#loading) return { status: "starting" };
    return { status: "loading", progress: round3(this.#progress.fraction), stage: this.#progress.stage };
  }

  gpuInfo(): GpuInfo | undefined {
    return this.#gpuInfo;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
