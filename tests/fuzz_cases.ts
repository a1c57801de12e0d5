// Hostile requests shared by the server fuzzers (tests/server_fuzz_test.ts on the test double,
// tests/server_real_fuzz_test.ts on the tiny real model): a seeded PRNG, odd values, mutated and malformed
// JSON bodies, multipart image-edit forms with odd parts, junk methods, paths, queries and headers, oversized
// bodies, SSE clients that hang up, and raw-socket exchanges (malformed HTTP, bodies that stop short, bodies
// trickled slowly). Every sender here turns what happened into a `Probe` and never throws for what the
// server does.

import { encodeImage } from "../src/image/codec.ts";
import { readSse } from "./server_harness.ts";

/** mulberry32: a small seeded PRNG. */
export function rng(seed: number) {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  return { next, int, pick };
}

export type Rng = ReturnType<typeof rng>;

export const ODD_STRINGS = [
  "",
  " ",
  "\u0000",
  "\ud800", // lone surrogate
  "\udfff\ud800",
  "\u202e\u202dRTL override",
  "zero\u200bwidth\u200d",
  "👩‍👩‍👧‍👦🏳️‍🌈",
  "\ufeffBOM",
  "e\u0301\u0301\u0301\u0301",
  "<script>alert(1)</script>",
  "'; DROP TABLE jobs; --",
  "${7*7}{{7*7}}",
  "../../etc/passwd",
  "%00%ff%",
  "\r\n\r\nevent: done\ndata: {}\n\n",
  "a".repeat(5000),
  "ǅǈǋ".repeat(400),
];

export const ODD_NUMBERS = [
  0,
  -0,
  -1,
  1,
  7,
  8,
  9,
  63,
  64,
  65,
  2 ** 31,
  -(2 ** 31),
  2 ** 53,
  2 ** 64,
  1e308,
  -1e308,
  5e-324,
  0.5,
  -0.5,
  3.14159,
  Number.MAX_SAFE_INTEGER,
  Number.MIN_SAFE_INTEGER,
];

export const FIELDS = [
  "prompt",
  "negative_prompt",
  "width",
  "height",
  "steps",
  "guidance_scale",
  "sampler",
  "seed",
  "preview_every",
  "preview",
  "output_format",
  "image",
  "mask",
  "strength",
  "n",
  "size",
  "response_format",
  "stream",
  "partial_images",
  "quality",
  "model",
  "__proto__",
  "constructor",
];

export function randomValue(r: Rng, depth = 0): unknown {
  switch (r.int(depth > 3 ? 5 : 8)) {
    case 0:
      return null;
    case 1:
      return r.next() < 0.5;
    case 2:
      return r.pick(ODD_NUMBERS) * (r.next() < 0.2 ? -1 : 1);
    case 3:
      return r.pick(ODD_STRINGS);
    case 4:
      return r.int(2000) - 1000;
    case 5:
      return Array.from({ length: r.int(5) }, () => randomValue(r, depth + 1));
    case 6:
      return Object.fromEntries(
        Array.from({ length: r.int(5) }, () => [r.pick(FIELDS), randomValue(r, depth + 1)]),
      );
    default:
      return `${r.pick(ODD_STRINGS)}${r.int(1e6)}`;
  }
}

/** The valid small requests the hostile ones start from, sized for the engine under test. */
export interface FuzzShape {
  /** Bytes just over the server's body limit. */
  overLimit: number;
  /** A valid native body (POST /v1/generate). */
  native: Record<string, unknown>;
  /** A valid OpenAI body (POST /v1/images/generations). */
  openai: Record<string, unknown>;
  /** A valid streamed native body the client hangs up on. */
  sseHangup: Record<string, unknown>;
}

/** A valid small request with one to three fields replaced by something hostile. */
export function mutatedRequest(r: Rng, shape: FuzzShape, openai: boolean): Record<string, unknown> {
  return mutated(r, { ...(openai ? shape.openai : shape.native) }, FIELDS);
}

/** `base` with one to three of `fields` deleted or replaced by random values. */
function mutated(r: Rng, base: Record<string, unknown>, fields: readonly string[]): Record<string, unknown> {
  for (let k = 0; k <= r.int(3); k++) {
    const field = r.pick(fields);
    if (r.next() < 0.15) delete base[field];
    // defineProperty: "__proto__" must become an own key of the JSON, not the object's prototype.
    else {Object.defineProperty(base, field, {
        value: randomValue(r),
        enumerable: true,
        writable: true,
        configurable: true,
      });}
  }
  return base;
}

/** The fields of A1111's txt2img / img2img bodies the fuzzer replaces. */
export const A1111_FIELDS = [
  "prompt",
  "negative_prompt",
  "width",
  "height",
  "steps",
  "cfg_scale",
  "sampler_name",
  "scheduler",
  "seed",
  "batch_size",
  "n_iter",
  "init_images",
  "mask",
  "mask_blur",
  "denoising_strength",
  "inpainting_fill",
  "inpainting_mask_invert",
  "override_settings",
  "send_images",
  "enable_hr",
  "__proto__",
];

/** A valid A1111 body (txt2img, or img2img with a small image and maybe a mask) at the native shape's size,
 * with one to three fields replaced. */
export function mutatedA1111Request(r: Rng, shape: FuzzShape, img2img: boolean): Record<string, unknown> {
  const { prompt, width, height, steps } = shape.native;
  const w = typeof width === "number" ? width : 32;
  const h = typeof height === "number" ? height : 32;
  const png = encodeImage(new Uint8Array(w * h * 3).fill(90), w, h, "png").bytes.toBase64();
  const base: Record<string, unknown> = { prompt, width, height, steps };
  if (img2img) {
    Object.assign(base, { init_images: [png], ...(r.next() < 0.5 ? { mask: png, mask_blur: 4 } : {}) });
  }
  return mutated(r, base, A1111_FIELDS);
}

/** A PNG as a Blob part (a copy: Blob takes ArrayBuffer-backed views only). */
function png(w: number, h: number): Blob {
  return new Blob([encodeImage(new Uint8Array(w * h * 3).fill(90), w, h, "png").bytes.slice()], {
    type: "image/png",
  });
}

/** A valid /v1/images/edits form (image, mask, prompt, size, steps, at the shape's OpenAI size) with one to
 * three parts replaced by something hostile: odd text, random bytes as a file, repeated parts, images of odd
 * sizes. */
export function mutatedEditForm(r: Rng, shape: FuzzShape): FormData {
  const size = String(shape.openai.size ?? "32x32");
  const [w, h] = size.split("x").map(Number);
  const form = new FormData();
  const parts: [string, string | Blob][] = [
    ["prompt", "a cat"],
    ["size", size],
    ["steps", "2"],
    ["image", png(w, h)],
  ];
  if (r.next() < 0.5) parts.push(["mask", png(w, h)]);
  for (let k = 0; k <= r.int(3); k++) {
    const name = r.pick([...FIELDS, "image[]"]);
    const value = r.pick([
      () => String(randomValue(r)).toWellFormed().slice(0, 300),
      () => new Blob([Uint8Array.from({ length: r.int(200) }, () => r.int(256))]),
      () => png(1 + r.int(64), 1 + r.int(64)),
    ])();
    const i = parts.findIndex(([n]) => n === name);
    if (r.next() < 0.3 || i < 0) parts.push([name, value]);
    else parts.splice(i, 1, [name, value]);
  }
  for (const [name, value] of parts) form.append(name, value);
  return form;
}

/** The kinds of hostile request `hostileRequest` builds. */
export const HOSTILE_KINDS = [
  "random-json",
  "mutated-native",
  "mutated-openai",
  "mutated-edits",
  "mutated-a1111",
  "bytes",
  "truncated-json",
  "content-type",
  "method",
  "query",
  "path",
  "headers",
  "oversized",
  "sse-hangup",
] as const;

export type HostileKind = typeof HOSTILE_KINDS[number];

export interface HostileRequest {
  kind: string;
  path: string;
  init: RequestInit;
  /** Read this many server-sent events, then drop the connection (SSE clients that hang up). */
  hangUpAfterEvents?: number;
}

export const GENERATION_PATHS = ["/v1/generate", "/v1/images/generations"] as const;

/** One hostile HTTP request of the given kind. */
export function hostileRequest(kind: HostileKind, r: Rng, shape: FuzzShape): HostileRequest {
  const endpoint = r.pick(GENERATION_PATHS);
  let init: RequestInit = { method: "POST", headers: { "content-type": "application/json" } };
  let path: string = endpoint;
  let hangUpAfterEvents: number | undefined;
  switch (kind) {
    case "random-json":
      init.body = JSON.stringify(randomValue(r));
      break;
    case "mutated-native":
      path = "/v1/generate";
      init.body = JSON.stringify(mutatedRequest(r, shape, false));
      break;
    case "mutated-openai":
      path = "/v1/images/generations";
      init.body = JSON.stringify(mutatedRequest(r, shape, true));
      break;
    case "mutated-edits":
      path = "/v1/images/edits";
      // fetch sets the multipart Content-Type with its boundary.
      init = { method: "POST", body: mutatedEditForm(r, shape) };
      break;
    case "mutated-a1111": {
      const img2img = r.next() < 0.5;
      path = img2img ? "/sdapi/v1/img2img" : "/sdapi/v1/txt2img";
      init.body = JSON.stringify(mutatedA1111Request(r, shape, img2img));
      break;
    }
    case "bytes":
      init.body = Uint8Array.from({ length: r.int(300) }, () => r.int(256));
      break;
    case "truncated-json": {
      const text = JSON.stringify(mutatedRequest(r, shape, endpoint.includes("images")));
      init.body = text.slice(0, r.int(text.length));
      break;
    }
    case "content-type":
      init.headers = {
        "content-type": r.pick([
          "text/plain",
          "application/xml",
          "multipart/form-data; boundary=x",
          "",
          "json",
        ]),
      };
      init.body = JSON.stringify({ prompt: "p" });
      break;
    case "method":
      init = { method: r.pick(["PUT", "DELETE", "PATCH", "OPTIONS", "GET"]) };
      path = r.pick([
        "/v1/generate",
        "/v1/images/generations",
        "/v1/models",
        "/metrics",
        "/healthz",
        "/",
        "/sdapi/v1/txt2img",
        "/sdapi/v1/progress",
      ]);
      break;
    case "query": {
      const params = Array.from({ length: r.int(6) }, () => {
        const key = r.pick([...FIELDS, "access_token", "_", "%ZZ", "a[]"]);
        const value = encodeURIComponent(String(randomValue(r)).toWellFormed()).slice(0, 200);
        return `${key}=${r.next() < 0.2 ? "%E0%A4%A" : value}`;
      });
      init = { method: "GET" };
      path = `/v1/generate?${params.join("&")}`;
      break;
    }
    case "path":
      init = { method: r.pick(["GET", "POST"]) };
      path = r.pick([
        "//v1//generate",
        "/v1/generate/../models",
        "/v1/%2e%2e/metrics",
        `/${"a".repeat(4000)}`,
        "/v1/generate%00",
        "/v1/images/generations/extra",
        "/%E2%82",
      ]);
      break;
    case "headers":
      init.headers = {
        "content-type": "application/json",
        accept: r.pick([
          "text/event-stream",
          "*/*",
          "text/event-stream;q=0",
          "\u00ff\u00fe",
          "a/b, text/event-stream",
        ]),
        authorization: r.pick(["Bearer", "Bearer \u00ff", `Bearer ${"x".repeat(3000)}`, "Basic Og=="]),
        "last-event-id": r.pick(["", "1", "x".repeat(100)]),
      };
      init.body = JSON.stringify(mutatedRequest(r, shape, endpoint.includes("images")));
      break;
    case "oversized":
      init.body = JSON.stringify({ prompt: "p", image: "A".repeat(shape.overLimit + r.int(10_000)) });
      if (r.next() < 0.5) init.body = streamedBody(init.body as string);
      break;
    case "sse-hangup":
      path = "/v1/generate";
      init.headers = { "content-type": "application/json", accept: "text/event-stream" };
      init.body = JSON.stringify(shape.sseHangup);
      hangUpAfterEvents = 1 + r.int(4);
      break;
  }
  return { kind, path, init, hangUpAfterEvents };
}

/** A body sent without Content-Length (chunked), so a size limit applies while the server reads it. */
export function streamedBody(body: string | Uint8Array): ReadableStream<Uint8Array> {
  const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
  return new ReadableStream({
    start(c) {
      c.enqueue(bytes);
      c.close();
    },
  });
}

export interface Probe {
  kind: string;
  status: number | "network-error" | "aborted";
  /** The start of an error answer (status ≥ 400), or what went wrong on the client's side. */
  detail?: string;
}

/** Sends one hostile request and reads (or abandons) the answer; never throws for what the server does. */
export async function sendHostile(url: string, req: HostileRequest, timeoutMs = 5_000): Promise<Probe> {
  const client = new AbortController();
  const signal = AbortSignal.any([AbortSignal.timeout(timeoutMs), client.signal]);
  let request: Request;
  try {
    request = new Request(`${url}${req.path}`, { ...req.init, signal });
  } catch (e) {
    throw new Error(`the fuzzer built a request fetch refuses (${req.kind}): ${e}`);
  }
  try {
    const res = await fetch(request);
    if (req.hangUpAfterEvents !== undefined && res.ok && res.body) {
      // Read a few events, then drop the connection mid-stream.
      let n = 0;
      for await (const _ of readSse(res.body)) if (++n >= req.hangUpAfterEvents) break;
      client.abort();
      return { kind: req.kind, status: res.status };
    }
    const text = await res.text().catch(() => "");
    return { kind: req.kind, status: res.status, detail: res.status >= 400 ? text.slice(0, 300) : undefined };
  } catch (e) {
    return {
      kind: req.kind,
      status: signal.aborted ? "aborted" : (e instanceof TypeError ? "network-error" : "aborted"),
      detail: String(e).slice(0, 300),
    };
  }
}

// ---- numbers and text the JSON encoder would never write -------------------------------------------

/** Number literals as raw JSON text: huge, negative, tiny, NaN-like (invalid JSON), and wrong types. */
export const NUMBER_LITERALS = [
  "1e999",
  "-1e999",
  "1e308",
  "-1e308",
  "1e-400",
  "-0",
  "0",
  "-1",
  "-64",
  "2147483648",
  "4294967296",
  "9007199254740993",
  "18446744073709551616",
  "99999999999999999999999999999999999999999999",
  "1.0000000000000002",
  "63.99999999999999",
  "64.00000000000001",
  "NaN",
  "-NaN",
  "Infinity",
  "-Infinity",
  "0x40",
  "+64",
  "064",
  ".5",
  "5.",
  "1_000",
  '"64"',
  '"1e999"',
  '"NaN"',
  "[64]",
  '{"value":64}',
  "true",
  "null",
];

export const NUMBER_FIELDS = [
  "width",
  "height",
  "steps",
  "guidance_scale",
  "seed",
  "strength",
  "eta",
  "preview_every",
  "n",
  "partial_images",
  "output_compression",
];

/** A valid body's JSON with one numeric field set to a raw literal (often not even valid JSON). */
export function hugeNumberBody(r: Rng, base: Record<string, unknown>): string {
  const field = r.pick(NUMBER_FIELDS);
  const { [field]: _, ...rest } = base;
  const text = JSON.stringify(rest);
  return `${text.slice(0, -1)},${JSON.stringify(field)}:${r.pick(NUMBER_LITERALS)}}`;
}

/** Byte sequences that are not UTF-8: stray continuation bytes, overlong forms, encoded surrogates, a
 * truncated four-byte sequence, bytes that never occur. */
export const INVALID_UTF8 = [
  [0xff],
  [0xfe, 0xff],
  [0x80],
  [0xc0, 0xaf],
  [0xe0, 0x80, 0xaf],
  [0xed, 0xa0, 0x80],
  [0xf0, 0x9f, 0x98],
  [0xf4, 0x90, 0x80, 0x80],
  [0xc3],
];

/** A JSON body whose prompt string holds bytes that are not UTF-8. */
export function invalidUtf8Body(r: Rng, base: Record<string, unknown>): Uint8Array<ArrayBuffer> {
  const enc = new TextEncoder();
  const [head, tail] = JSON.stringify({ ...base, prompt: "@@" }).split("@@");
  return Uint8Array.from([...enc.encode(head + "a cat "), ...r.pick(INVALID_UTF8), ...enc.encode(tail)]);
}

// ---- raw sockets ------------------------------------------------------------------------------------

/** Malformed HTTP straight on the socket: the server must shrug it off. */
export async function rawProbe(url: string, r: Rng): Promise<void> {
  const { hostname, port } = new URL(url);
  const payload = r.pick([
    "GARBAGE\r\n\r\n",
    'POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nContent-Type: application/json\r\n\r\n{"pro',
    "GET / HTTP/1.1\r\nHost: x\r\n" + "X-Long: " + "a".repeat(100_000) + "\r\n\r\n",
    "POST /v1/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "GET /healthz HTTP/1.1\r\n",
    "\u0000\u0001\u0002\r\n\r\n",
  ]);
  try {
    const conn = await Deno.connect({ hostname, port: Number(port) });
    try {
      await conn.write(new TextEncoder().encode(payload));
      const buf = new Uint8Array(512);
      await Promise.race([conn.read(buf), new Promise((r) => setTimeout(r, 50))]);
    } finally {
      conn.close();
    }
  } catch { /* the server may reset the connection: fine */ }
}

/** The head of an HTTP/1.1 request (through the blank line). */
export function requestHead(method: string, path: string, headers: Record<string, string | number>): string {
  const lines = [`${method} ${path} HTTP/1.1`, "Host: fuzz", "Connection: close"];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  return lines.join("\r\n") + "\r\n\r\n";
}

export interface RawAnswer {
  /** The status line's code; undefined when the server closed without answering (or we gave up). */
  status?: number;
  headers: Headers;
  body: Uint8Array;
  error?: string;
}

/**
 * One exchange on a fresh socket: writes `pieces` with `delayMs` between them, then either reads the answer
 * to the end (`Connection: close`) or, with `abandon`, closes the socket at once (or after half-closing it
 * and reading whatever comes back, with `abandon: "half-close"`).
 */
export async function rawExchange(
  url: string,
  pieces: Uint8Array[],
  options: { delayMs?: () => number; abandon?: "close" | "half-close"; timeoutMs?: number } = {},
): Promise<RawAnswer> {
  const { hostname, port } = new URL(url);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timedOut = false;
  const empty = { headers: new Headers(), body: new Uint8Array() };
  try {
    timer = setTimeout(() => {
      timedOut = true;
      try {
        conn.close();
      } catch { /* closed already */ }
    }, options.timeoutMs ?? 30_000);
    for (const [i, piece] of pieces.entries()) {
      if (i > 0 && options.delayMs) await new Promise((r) => setTimeout(r, options.delayMs!()));
      await writeAll(conn, piece);
    }
    if (options.abandon === "close") return empty;
    if (options.abandon === "half-close") await conn.closeWrite();
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(64 * 1024);
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
    return parseHttpResponse(concat(chunks));
  } catch (e) {
    return { ...empty, error: timedOut ? "timed out" : String(e) };
  } finally {
    clearTimeout(timer);
    if (!timedOut) {
      try {
        conn.close();
      } catch { /* closed already */ }
    }
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** Status, headers and (de-chunked) body of a whole HTTP/1.1 response. */
export function parseHttpResponse(bytes: Uint8Array): RawAnswer {
  const headers = new Headers();
  const text = new TextDecoder("latin1").decode(bytes);
  const end = text.indexOf("\r\n\r\n");
  if (end < 0) {
    return { headers, body: new Uint8Array(), error: bytes.length ? "incomplete head" : "no answer" };
  }
  const [statusLine, ...lines] = text.slice(0, end).split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon > 0) headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  let body = bytes.subarray(end + 4);
  if (/chunked/i.test(headers.get("transfer-encoding") ?? "")) {
    const parts: Uint8Array[] = [];
    let at = 0;
    while (at < body.length) {
      const lineEnd = indexOfCrlf(body, at);
      if (lineEnd < 0) break;
      const size = parseInt(new TextDecoder().decode(body.subarray(at, lineEnd)), 16);
      if (!(size > 0)) break;
      parts.push(body.subarray(lineEnd + 2, lineEnd + 2 + size));
      at = lineEnd + 2 + size + 2;
    }
    body = concat(parts);
  }
  return { status: m ? Number(m[1]) : undefined, headers, body };
}

function indexOfCrlf(bytes: Uint8Array, from: number): number {
  for (let i = from; i + 1 < bytes.length; i++) if (bytes[i] === 13 && bytes[i + 1] === 10) return i;
  return -1;
}

/** Splits bytes into `n` pieces of random sizes (for trickling a body). */
export function splitRandomly(r: Rng, bytes: Uint8Array, n: number): Uint8Array[] {
  const cuts = [...new Set(Array.from({ length: n - 1 }, () => 1 + r.int(Math.max(1, bytes.length - 1))))]
    .sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const cut of [...cuts, bytes.length]) {
    if (cut > prev) out.push(bytes.subarray(prev, cut));
    prev = cut;
  }
  return out;
}
