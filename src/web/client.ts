/// <reference lib="dom" />
// The web page's script: reads the form, POSTs /v1/generate asking for server-sent events, and shows the
// queue position, progress, previews as they arrive and the final image with its parameters. Cancel aborts
// the request; the server cancels the job when the connection closes. An uploaded image is sent for
// img2img, and a mask painted over it with the brush makes it inpainting. Bundled by src/web/build.ts.

import { SAMPLER_NAMES } from "../pipeline/types.ts";

interface SseEvent {
  event: string;
  data: string;
}

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing`);
  return el as T;
};

const form = $<HTMLFormElement>("form");
const generateButton = $<HTMLButtonElement>("generate");
const cancelButton = $<HTMLButtonElement>("cancel");
const statusLine = $<HTMLParagraphElement>("status");
const healthLine = $<HTMLSpanElement>("health");
const progressBar = $<HTMLProgressElement>("progress");
const mainImage = $<HTMLImageElement>("image");
const placeholder = $<HTMLDivElement>("placeholder");
const previews = $<HTMLDivElement>("previews");
const parametersBox = $<HTMLPreElement>("parameters");
const downloadLink = $<HTMLAnchorElement>("download");
const samplerSelect = $<HTMLSelectElement>("sampler");
const sizePreset = $<HTMLSelectElement>("size");
const widthInput = $<HTMLInputElement>("width");
const heightInput = $<HTMLInputElement>("height");
const tokenInput = $<HTMLInputElement>("token");

const initImageInput = $<HTMLInputElement>("init-image");
const maskTools = $<HTMLDivElement>("mask-tools");
const initPreview = $<HTMLImageElement>("init-preview");
const maskCanvas = $<HTMLCanvasElement>("mask-canvas");
const brushInput = $<HTMLInputElement>("brush");

let running: AbortController | undefined;
/** The uploaded file as a base64 data: URL (sent as is), and whether a mask was painted on it. */
let initImage: string | undefined;
let maskPainted = false;
/** The running generation's job id (from its first event), for DELETE /v1/jobs/:id. */
let runningJob: string | undefined;

function setState(state: "idle" | "running" | "done" | "error" | "cancelled"): void {
  document.body.dataset.state = state;
  generateButton.disabled = state === "running";
  cancelButton.disabled = state !== "running";
}

function setStatus(text: string, kind: "info" | "error" = "info"): void {
  statusLine.textContent = text;
  statusLine.className = kind;
}

function showImage(mime: string, base64: string): void {
  mainImage.src = `data:${mime};base64,${base64}`;
  mainImage.hidden = false;
  placeholder.hidden = true;
}

function formatMs(ms: number): string {
  return ms >= 10_000 ? `${Math.round(ms / 1000)} s` : `${(ms / 1000).toFixed(1)} s`;
}

/** The form as a /v1/generate body; empty optional fields are left out. */
function requestBody(): Record<string, unknown> {
  const data = new FormData(form);
  const text = (name: string) => String(data.get(name) ?? "").trim();
  const num = (name: string) => (text(name) === "" ? undefined : Number(text(name)));
  const body: Record<string, unknown> = {
    prompt: text("prompt"),
    negative_prompt: text("negative_prompt") || undefined,
    width: num("width"),
    height: num("height"),
    steps: num("steps"),
    guidance_scale: num("guidance_scale"),
    sampler: text("sampler") || undefined,
    seed: num("seed"),
    num_images: num("num_images") === 1 ? undefined : num("num_images"),
    preview_every: num("preview_every"),
    preview: text("preview") || undefined,
  };
  return Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined));
}

/** The image fields of the body: `image` (+ `strength`) for img2img, and `mask` when one was painted. */
function imageFields(): Record<string, unknown> {
  if (!initImage) return {};
  const strength = (document.getElementById("strength") as HTMLInputElement).value.trim();
  return {
    image: initImage,
    ...(strength ? { strength: Number(strength) } : {}),
    ...(maskPainted ? { mask: maskPng() } : {}),
  };
}

/** The painted strokes as the API's mask: a PNG at the image's size, white where to repaint, black elsewhere. */
function maskPng(): string {
  const out = document.createElement("canvas");
  out.width = maskCanvas.width;
  out.height = maskCanvas.height;
  const ctx = out.getContext("2d")!;
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, out.width, out.height);
  ctx.drawImage(maskCanvas, 0, 0);
  return out.toDataURL("image/png");
}

function clearMask(): void {
  maskCanvas.getContext("2d")!.clearRect(0, 0, maskCanvas.width, maskCanvas.height);
  maskPainted = false;
}

function removeImage(): void {
  initImage = undefined;
  initImageInput.value = "";
  maskTools.hidden = true;
  if (initPreview.src) URL.revokeObjectURL(initPreview.src);
  initPreview.removeAttribute("src");
  clearMask();
}

/** A chosen file: shown under a mask canvas of its own pixel size; the size fields follow the image
 * (scaled to at most 1024 on the long side, rounded down to multiples of 64 as SD's UNet needs). */
async function loadInitImage(file: File): Promise<void> {
  initImage = await new Promise<string>((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result)); // a data: URL, which the API accepts
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
  if (initPreview.src) URL.revokeObjectURL(initPreview.src);
  initPreview.src = URL.createObjectURL(file);
  await initPreview.decode();
  maskCanvas.width = initPreview.naturalWidth;
  maskCanvas.height = initPreview.naturalHeight;
  clearMask();
  maskTools.hidden = false;
  const scale = Math.min(1, 1024 / Math.max(maskCanvas.width, maskCanvas.height));
  const fit = (px: number) => String(Math.max(64, Math.floor((px * scale) / 64) * 64));
  widthInput.value = fit(maskCanvas.width);
  heightInput.value = fit(maskCanvas.height);
  widthInput.dispatchEvent(new Event("input"));
}

/** Brush strokes in canvas pixels; the brush size is in screen pixels. */
function setUpBrush(): void {
  let last: { x: number; y: number } | undefined;
  const at = (ev: PointerEvent) => {
    const r = maskCanvas.getBoundingClientRect();
    return {
      x: ((ev.clientX - r.left) * maskCanvas.width) / r.width,
      y: ((ev.clientY - r.top) * maskCanvas.height) / r.height,
    };
  };
  const paint = (ev: PointerEvent) => {
    if (!last) return;
    const p = at(ev);
    const ctx = maskCanvas.getContext("2d")!;
    ctx.strokeStyle = "#fff";
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = (Number(brushInput.value) * maskCanvas.width) / maskCanvas.getBoundingClientRect().width;
    ctx.beginPath();
    ctx.moveTo(last.x, last.y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
    last = p;
    maskPainted = true;
  };
  maskCanvas.addEventListener("pointerdown", (ev) => {
    maskCanvas.setPointerCapture(ev.pointerId);
    last = at(ev);
    paint(ev); // a click paints a dot
  });
  maskCanvas.addEventListener("pointermove", paint);
  for (const type of ["pointerup", "pointercancel"]) {
    maskCanvas.addEventListener(type, () => (last = undefined));
  }
}

/** Splits a text/event-stream body into events. */
async function* readSse(body: ReadableStream<Uint8Array>, signal: AbortSignal): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoderStream() as unknown as TransformStream<Uint8Array, string>;
  const reader = body.pipeThrough(decoder).getReader();
  signal.addEventListener("abort", () => reader.cancel().catch(() => {}), { once: true });
  let buffer = "";
  while (true) {
    const { done, value } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
      }
      if (data.length) yield { event, data: data.join("\n") };
    }
  }
}

function authHeaders(): Record<string, string> {
  const token = tokenInput.value.trim();
  localStorage.setItem("sd-token", token);
  return token ? { authorization: `Bearer ${token}` } : {};
}

async function generate(): Promise<void> {
  const controller = new AbortController();
  running = controller;
  setState("running");
  previews.replaceChildren();
  parametersBox.textContent = "";
  downloadLink.hidden = true;
  progressBar.value = 0;
  setStatus("Submitting…");
  const started = performance.now();
  try {
    const res = await fetch("/v1/generate", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream", ...authHeaders() },
      body: JSON.stringify({ ...requestBody(), ...imageFields() }),
      signal: controller.signal,
    });
    if (!res.ok || !res.body) {
      const err = await res.json().catch(() => ({}));
      throw new Error(err?.error?.message ?? `HTTP ${res.status}`);
    }
    for await (const { event, data } of readSse(res.body, controller.signal)) {
      const msg = JSON.parse(data);
      switch (event) {
        case "queued":
          runningJob = msg.job_id;
          setStatus(msg.position === 0 ? "Starting…" : `Queued: ${msg.position} ahead`);
          break;
        case "started":
          setStatus(`Seed ${msg.seed}: ${msg.steps} steps at ${msg.width}×${msg.height}`);
          progressBar.max = msg.steps;
          break;
        case "progress":
          progressBar.max = msg.steps;
          progressBar.value = msg.step;
          setStatus(`Step ${msg.step}/${msg.steps} · about ${formatMs(msg.eta_ms)} left`);
          break;
        case "preview": {
          showImage(msg.mime, msg.data);
          const thumb = document.createElement("img");
          thumb.src = `data:${msg.mime};base64,${msg.data}`;
          thumb.alt = `preview at step ${msg.step}`;
          thumb.title = `step ${msg.step}`;
          previews.append(thumb);
          break;
        }
        case "done": {
          // A batch answers with `images`: the first is shown, every one is a thumbnail to click.
          const images: string[] = msg.images ?? [msg.image];
          showImage(msg.mime, images[0]);
          if (images.length > 1) {
            previews.replaceChildren(...images.map((b64, i) => {
              const thumb = document.createElement("img");
              thumb.src = `data:${msg.mime};base64,${b64}`;
              thumb.alt = `image ${i + 1} of ${images.length}`;
              thumb.title = `image ${i + 1} (seed ${msg.seeds?.[i] ?? msg.seed})`;
              thumb.className = "batch";
              thumb.addEventListener("click", () => {
                showImage(msg.mime, b64);
                downloadLink.href = mainImage.src;
              });
              return thumb;
            }));
          }
          progressBar.value = progressBar.max;
          parametersBox.textContent = msg.parameters;
          downloadLink.href = mainImage.src;
          downloadLink.download = `sd-${msg.seed}.${msg.mime === "image/jpeg" ? "jpg" : "png"}`;
          downloadLink.hidden = false;
          const t = msg.timings;
          setStatus(
            `Done in ${formatMs(performance.now() - started)} · seed ${msg.seed} · ` +
              `${t.steps_per_second.toFixed(2)} steps/s`,
          );
          setState("done");
          return;
        }
        case "error":
          throw new Error(msg.message);
      }
    }
    throw new Error("the connection closed before the image was ready");
  } catch (e) {
    if (controller.signal.aborted) {
      setStatus("Cancelled.");
      setState("cancelled");
    } else {
      setStatus(`Error: ${(e as Error).message}`, "error");
      setState("error");
    }
  } finally {
    if (running === controller) {
      running = undefined;
      runningJob = undefined;
    }
  }
}

/** The model's defaults (from /healthz) in the fields the user has not changed from the page's own. */
function prefill(
  d: { width: number; height: number; steps: number; guidance_scale: number; sampler?: string },
) {
  const set = (input: HTMLInputElement, value: number) => {
    if (input.value === input.defaultValue) input.value = input.defaultValue = String(value);
  };
  const sizeUntouched = widthInput.value === widthInput.defaultValue &&
    heightInput.value === heightInput.defaultValue;
  set(widthInput, d.width);
  set(heightInput, d.height);
  set($<HTMLInputElement>("steps"), d.steps);
  set($<HTMLInputElement>("guidance_scale"), d.guidance_scale);
  if (sizeUntouched) {
    const preset = `${d.width}x${d.height}`;
    sizePreset.value = [...sizePreset.options].some((o) => o.value === preset) ? preset : "";
  }
  if (d.sampler) samplerSelect.options[0].text = `model default (${d.sampler})`;
}

async function pollHealth(): Promise<void> {
  try {
    const res = await fetch("/healthz");
    const h = await res.json();
    if (h.status === "ready") {
      if (h.defaults) prefill(h.defaults);
      healthLine.textContent = h.model
        ? `${h.model} · ${h.adapter ?? "GPU"}${h.f16 ? " · f16" : ""}`
        : "no model";
      healthLine.className = h.model ? "ok" : "warn";
      return;
    }
    const stage = h.stage ? ` (${h.stage})` : "";
    healthLine.textContent = h.status === "loading"
      ? `loading model ${Math.round(h.progress * 100)}%${stage}`
      : h.status === "downloading"
      ? `downloading model ${h.progress === null ? "" : `${Math.round(h.progress * 100)}% `}` +
        `(${Math.round(h.bytes / 2 ** 20)} MiB)`
      : h.status === "recovering"
      ? `recovering: ${h.reason}; reloading ${Math.round(h.progress * 100)}%${stage}`
      : h.status === "failed"
      ? `failed: ${h.reason}`
      : h.status;
    healthLine.className = h.status === "failed" ? "bad" : "warn";
    if (h.status === "failed") return;
  } catch {
    healthLine.textContent = "server unreachable";
    healthLine.className = "bad";
  }
  setTimeout(pollHealth, 1000);
}

for (const name of SAMPLER_NAMES) samplerSelect.add(new Option(name, name));
sizePreset.addEventListener("change", () => {
  if (!sizePreset.value) return;
  const [w, h] = sizePreset.value.split("x");
  widthInput.value = w;
  heightInput.value = h;
});
for (const input of [widthInput, heightInput]) {
  input.addEventListener("input", () => {
    const match = `${widthInput.value}x${heightInput.value}`;
    sizePreset.value = [...sizePreset.options].some((o) => o.value === match) ? match : "";
  });
}
$<HTMLButtonElement>("random-seed").addEventListener("click", () => {
  ($<HTMLInputElement>("seed")).value = "";
});
form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (!running) generate();
});
cancelButton.addEventListener("click", () => {
  // Tell the server explicitly: a browser may keep an aborted stream's connection open for a while.
  if (runningJob) {
    fetch(`/v1/jobs/${encodeURIComponent(runningJob)}`, { method: "DELETE", headers: authHeaders() })
      .catch(() => {});
  }
  running?.abort();
});
initImageInput.addEventListener("change", () => {
  const file = initImageInput.files?.[0];
  if (!file) return removeImage();
  loadInitImage(file).catch((e) => {
    removeImage();
    setStatus(`Cannot read that image: ${(e as Error).message}`, "error");
  });
});
$<HTMLButtonElement>("clear-mask").addEventListener("click", clearMask);
$<HTMLButtonElement>("remove-image").addEventListener("click", removeImage);
setUpBrush();
tokenInput.value = localStorage.getItem("sd-token") ?? "";
setState("idle");
pollHealth();
