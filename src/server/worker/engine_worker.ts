// The engine worker: owns the GPU device, the model and the running generation, so the HTTP thread never
// compiles a shader, submits GPU work, reads back or uploads weights. Messages in and out are in
// protocol.ts. Jobs run one at a time, in the order they arrive, after loading and warm-up.
//
// Warm-up runs one 1-step generation per listed size, then the TAESD preview decode of that size when TAESD
// is loaded (previews default to it): on a fresh machine most of a first step is shader compilation (139 s of
// a 160 s first step for SD 1.5 at 256² on lavapipe, against 19–22 s warm), and the plans of a size
// (buffers, bind groups) are built on first use. After it, "ready" means warm.

import { Gpu } from "../../gpu/device.ts";
import { resolveGpuChoices } from "../../gpu/choices.ts";
import { tuneLine } from "../../ops/autotune.ts";
import { lowerThreadPriority } from "../../util/thread_priority.ts";
import type { StableDiffusionPipeline } from "../../pipeline/pipeline.ts";
import { greyPng } from "../../pipeline/inpaint.ts";
import { type GenerateRequest, RequestError } from "../../pipeline/types.ts";
import { errorText, type GpuInfo } from "../engine_host.ts";
import {
  type DownloadSpec,
  type FromWorker,
  type InitMessage,
  type ToWorker,
  transferablesOf,
  type WarmupSize,
  type WorkerJobError,
} from "./protocol.ts";

/** The engine's nice value: below the HTTP thread, so requests are answered first while it computes. */
const ENGINE_NICE = 10;

const scope = self as unknown as {
  onmessage: ((e: MessageEvent<ToWorker>) => void) | null;
  postMessage(message: FromWorker, transfer?: Transferable[]): void;
};
const post = (message: FromWorker, transfer: Transferable[] = []) => scope.postMessage(message, transfer);

let gpu: Gpu | undefined;
let pipeline: StableDiffusionPipeline | undefined;
let testHooks = false;
/** Set once the device is lost: the host replaces this worker; nothing more runs here. */
let lost = false;
/** Set when the server stops: the device is destroyed on purpose. */
let closing = false;
/** Jobs received but not started, and the running one's controller. */
const pending = new Set<number>();
const cancelled = new Set<number>();
const running = new Map<number, AbortController>();
/** The chain jobs run on: starts once loading and warm-up are over, one generation at a time. */
let jobs: Promise<void> = Promise.resolve();

scope.onmessage = ({ data: msg }) => {
  switch (msg.type) {
    case "init":
      testHooks = msg.testHooks;
      jobs = start(msg);
      break;
    case "generate":
      pending.add(msg.id);
      jobs = jobs.then(() => run(msg.id, msg.request));
      break;
    case "cancel":
      if (running.has(msg.id)) running.get(msg.id)!.abort();
      else if (pending.has(msg.id)) cancelled.add(msg.id);
      break;
    case "lose-device":
      if (testHooks) gpu?.device.destroy();
      break;
    case "shutdown":
      shutdown();
      break;
  }
};

/**
 * Destroys the device before the host terminates this thread. Measured on lavapipe, `serve --no-model` and
 * SIGTERM, 20 runs each: terminating a worker that still held a live device crashed the process at exit
 * (SIGSEGV) 2 times; destroying it first, 0. (Ending the thread with self.close() crashed 4 times in 10.)
 */
function shutdown(): void {
  closing = true;
  for (const controller of running.values()) controller.abort();
  gpu?.device.destroy();
  post({ type: "closed" });
}

async function start(init: InitMessage): Promise<void> {
  // Before the device exists, so that the driver's threads inherit it (see util/thread_priority.ts).
  lowerThreadPriority(ENGINE_NICE);
  try {
    gpu = await Gpu.create({ disableF16: init.disableF16, choices: resolveGpuChoices(init.gpuChoices) });
  } catch (e) {
    post({ type: "failed", reason: `GPU: ${errorText(e)}` });
    return;
  }
  post({ type: "gpu", info: gpuInfoOf(gpu) });
  gpu.device.lost.then((info) => {
    lost = true;
    if (closing) return;
    for (const controller of running.values()) controller.abort();
    post({ type: "device-lost", reason: `${info.reason}: ${info.message}` });
  });
  if (init.model === undefined) {
    post({ type: "ready", model: null, gpuBytes: 0 });
    return;
  }
  if (init.download && !(await download(init.download))) return;
  try {
    await Deno.stat(init.model).catch(() => {
      throw new Error(`model path ${init.model} does not exist`);
    });
    // Imported here so that an engine module that fails to load is reported as a load failure.
    const { loadPipeline } = await import("../../pipeline/load.ts");
    // Weights take the first half of the progress bar, warm-up the rest (it dominates on a cold cache: 270 s
    // of a 276 s load of SD 1.5 at 256² on lavapipe).
    const share = init.warmupDefault || init.warmup.length ? 0.5 : 1;
    pipeline = await loadPipeline(gpu, init.model, {
      tokenizerDir: init.tokenizerDir,
      batchBudgetBytes: init.batchBudgetBytes,
      loraDir: init.loraDir,
      loraStrict: init.loraStrict,
      onWarning: (m) => console.error(`warning: ${m}`),
      taesd: init.taesd,
      decoder: init.decoder,
      onProgress: (fraction, what) => post({ type: "loading", fraction: fraction * share, stage: what }),
      // Kernel tiles tuned for the warmed sizes (the cache makes later starts cost nothing).
      tune: init.retune ? "retune" : gpu.choices.tune ?? "auto",
      tuneOptions: {
        sizes: [
          ...(init.defaultSize ? [{ width: init.defaultSize, height: init.defaultSize }] : []),
          ...init.warmup,
        ],
        native: init.warmupDefault && !init.defaultSize,
      },
      onTuned: (s) => console.error(tuneLine(s)),
    });
    // The default size first (the model's unless --default-size), at the default guidance.
    const d = pipeline.defaults;
    const defaultSize = init.defaultSize
      ? { width: init.defaultSize, height: init.defaultSize }
      : { width: d?.width ?? 512, height: d?.height ?? 512 };
    const sizes = init.warmupDefault ? [defaultSize] : [];
    for (const s of init.warmup) {
      if (!sizes.some((x) => x.width === s.width && x.height === s.height)) sizes.push(s);
    }
    const guidance = init.defaultGuidance ?? d?.guidanceScale ?? 7.5;
    for (const [k, size] of sizes.entries()) {
      const fraction = share + ((1 - share) * k) / sizes.length;
      post({ type: "loading", fraction, stage: `warmup ${size.width}x${size.height}` });
      await warmup(pipeline, size, guidance);
    }
    post({
      type: "ready",
      model: pipeline.modelName,
      defaultSampler: pipeline.defaultSampler,
      defaults: pipeline.defaults,
      ...bytes(),
    });
  } catch (e) {
    pipeline = undefined;
    if (!lost) post({ type: "failed", reason: errorText(e) });
  }
}

/** Fetches the default model (reporting bytes, at most 4 times a second); false, reported, if it failed. */
async function download(spec: DownloadSpec): Promise<boolean> {
  const { downloadModel, downloadAdvice } = await import("../../weights/download/index.ts");
  let last = 0;
  try {
    await downloadModel({
      model: spec.model,
      dir: spec.dir,
      endpoint: spec.endpoint,
      token: spec.token,
      retries: 3,
      log: (line) => console.error(`weights: ${line}`),
      onBytes: ({ bytes, totalBytes, file }) => {
        const now = performance.now();
        if (now - last < 250 && bytes !== totalBytes) return;
        last = now;
        post({ type: "downloading", bytes, totalBytes, file });
      },
    });
    return true;
  } catch (e) {
    post({ type: "failed", reason: downloadAdvice(spec, errorText(e)) });
    return false;
  }
}

/** One 1-step generation at `size`: compiles every kernel and builds every plan a request of that size uses
 * (text encoder, UNet at the request's batch, the final decoder; the VAE encoder too for an inpainting model),
 * then the TAESD preview plan when TAESD is loaded (previews default to it). */
async function warmup(p: StableDiffusionPipeline, size: WarmupSize, guidanceScale: number): Promise<void> {
  const request: GenerateRequest = { prompt: "", ...size, steps: 1, guidanceScale, seed: 0, previewEvery: 0 };
  if (p.unetKind === "inpainting") {
    // An inpainting model runs nothing without an image and a mask; this also builds the VAE encoder's plan.
    request.initImage = greyPng();
    request.maskAll = true;
  }
  try {
    for await (const _ of p.generate(request)) { /* events of the warm-up run are not needed */ }
    await p.warmTaesdPreview(size.width, size.height);
  } catch (e) {
    // A size this model cannot run is the caller's mistake, not a load failure.
    if (!(e instanceof RequestError)) throw e;
    console.error(`warm-up ${size.width}x${size.height} skipped: ${e.message}`);
  }
}

async function run(id: number, request: GenerateRequest): Promise<void> {
  pending.delete(id);
  if (cancelled.delete(id)) return post({ type: "job-error", id, error: { kind: "aborted" } });
  if (lost) return post({ type: "job-error", id, error: { kind: "device_lost", message: "device lost" } });
  if (!pipeline) {
    return post({ type: "job-error", id, error: { kind: "engine", message: "the model is not loaded" } });
  }
  const controller = new AbortController();
  running.set(id, controller);
  try {
    for await (const event of pipeline.generate(request, controller.signal)) {
      if (controller.signal.aborted) break;
      post({ type: "event", id, event }, transferablesOf(event));
    }
    if (controller.signal.aborted) post({ type: "job-error", id, error: jobError(null, controller) });
    else post({ type: "end", id, ...bytes() });
  } catch (e) {
    // A destroyed device fails the next GPU call before `device.lost` settles: give it a moment, so the
    // job is reported as lost rather than as a validation error.
    await Promise.race([gpu!.device.lost, new Promise((r) => setTimeout(r, 100))]);
    post({ type: "job-error", id, error: jobError(e, controller) });
  } finally {
    running.delete(id);
  }
}

function jobError(e: unknown, controller: AbortController): WorkerJobError {
  if (lost) return { kind: "device_lost", message: "device lost" };
  if (e instanceof RequestError) return { kind: "request", field: e.field, message: e.message };
  if (controller.signal.aborted) return { kind: "aborted" };
  return { kind: "engine", message: errorText(e) };
}

function bytes(): { gpuBytes: number } {
  try {
    return { gpuBytes: pipeline?.gpuBytes() ?? 0 };
  } catch {
    return { gpuBytes: 0 };
  }
}

/** /healthz's adapter fields from the GPU's start-up report. */
function gpuInfoOf(gpu: Gpu): GpuInfo {
  const r = gpu.report;
  return {
    adapter: r.adapter.description || r.adapter.vendor || r.adapter.device || "unknown adapter",
    adapterInfo: r.adapter,
    f16: r.f16,
    f16SelfTest: r.f16SelfTest,
    subgroups: r.subgroups,
    // The forced GPU choices (--gpu-choices / SD_GPU_FORCE), "" when none.
    forced: r.forced,
    limits: r.limits,
  };
}
