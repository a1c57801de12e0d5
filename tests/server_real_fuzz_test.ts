// Fuzzing the real server: `main.ts serve` on the tiny model (tests/fixtures/tiny_sd) in its own process,
// 10,000 requests from a seeded plan, 16 in flight. Hostile ones (wrong types, huge and NaN-like numbers,
// odd unicode, truncated JSON, giant base64 over and under the body limit, PNG decompression bombs, bodies
// that stop short and hang up, bodies trickled slowly, junk paths, methods, queries and headers, SSE clients
// that hang up, DELETE of unknown jobs) mixed with a few hundred valid small generations (native JSON, SSE
// and GET, OpenAI plain and streamed, img2img, trickled). Then: no answer was a 5xx (nor did the server count
// one), every valid job finished with a PNG of the requested size (after its Retry-After when the queue was
// full), the process is alive and ready, a last generation works, and its resident memory stayed bounded.
// FUZZ_SEED reproduces a run.

import { decode as decodePng, encode as encodePng } from "fast-png";
import { SAMPLER_NAMES } from "../src/pipeline/types.ts";
import {
  type FuzzShape,
  HOSTILE_KINDS,
  type HostileKind,
  hostileRequest,
  hugeNumberBody,
  invalidUtf8Body,
  ODD_STRINGS,
  rawExchange,
  rawProbe,
  requestHead,
  type Rng,
  rng,
  sendHostile,
  splitRandomly,
  streamedBody,
} from "./fuzz_cases.ts";
import { readSse, spawnTinyModelServer, waitReady } from "./server_harness.ts";

const SEED = Number(Deno.env.get("FUZZ_SEED") ?? 20261127);
const TOTAL = 10_000;
const CONCURRENCY = 16;
const BODY_LIMIT = 2 ** 20;
const SERVER_ARGS = [
  ["--default-size", "64"],
  ["--max-size", "128"],
  ["--max-steps", "4"],
  ["--default-steps", "2"],
  ["--max-images", "2"],
  ["--max-body-mb", String(BODY_LIMIT / 2 ** 20)],
  ["--queue-length", "8"],
].flat();
/** Resident memory may grow this much over the run (see the RSS check at the end). */
const RSS_GROWTH_LIMIT = 256 * 2 ** 20;

/**
 * The hostile requests start from 32×32 bodies: the schema accepts that size and the tiny UNet refuses it
 * (it needs multiples of 64) when the engine checks the request, so a body that a mutation happens to leave
 * valid still goes through the queue and the engine but costs no GPU time. The SSE clients that hang up
 * start real 3-step generations.
 */
const SHAPE: FuzzShape = {
  overLimit: BODY_LIMIT + 1,
  native: { prompt: "a cat", width: 32, height: 32, steps: 1 },
  openai: { prompt: "a cat", size: "32x32", steps: 1, n: 1 },
  sseHangup: { prompt: "hang up", width: 64, height: 64, steps: 3, preview_every: 1 },
};

/** Requests per kind; the generic hostile kinds of fuzz_cases.ts share what is left of TOTAL. */
const PLAN = {
  "valid-native-json": 55,
  "valid-native-sse": 45,
  "valid-native-get": 20,
  "valid-openai-json": 35,
  "valid-openai-stream": 30,
  "valid-slow-body": 15,
  "unicode-prompt": 32,
  "slow-body": 21,
  "sse-hangup": 40,
  "abandoned-body": 400,
  "giant-base64-over": 120,
  "giant-base64-under": 150,
  "image-bomb": 10,
  "img2img-no-step": 30,
  "delete-unknown": 300,
  "huge-numbers": 800,
  "unicode": 600,
  "raw-malformed": 200,
} as const;

type PlannedKind = keyof typeof PLAN;
type Kind = PlannedKind | Exclude<HostileKind, "sse-hangup" | "oversized">;
const GENERIC_KINDS = HOSTILE_KINDS.filter((k) => k !== "sse-hangup" && k !== "oversized") as Kind[];
const VALID_KINDS: ReadonlySet<Kind> = new Set([
  "valid-native-json",
  "valid-native-sse",
  "valid-native-get",
  "valid-openai-json",
  "valid-openai-stream",
  "valid-slow-body",
]);

interface Result {
  kind: Kind;
  /** HTTP status of the final attempt; "closed": the exchange ended without an answer, by design. */
  status: number | "closed" | "network-error" | "aborted";
  /** For generations: the image checked out (decodable PNG of the requested size). */
  ok?: boolean;
  retries?: number;
  detail?: string;
}

// ---- fixtures built once ----------------------------------------------------------------------------

const encoder = new TextEncoder();

/** Random base64, sliced for the giant bodies (random bytes: not an image, whatever the slice). */
const RANDOM_B64 = (() => {
  const r = rng(SEED ^ 0x5eed);
  return Uint8Array.from({ length: 900_000 }, () => r.int(256)).toBase64();
})();

/** A small real PNG for img2img. */
const INIT_PNG_B64 = encodePng({
  width: 16,
  height: 16,
  channels: 3,
  depth: 8,
  data: Uint8Array.from({ length: 16 * 16 * 3 }, (_, i) => (i * 37) % 256),
}).toBase64();

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function pngChunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  out.set(encoder.encode(type), 4);
  out.set(data, 8);
  let c = 0xffffffff;
  for (const b of out.subarray(4, 8 + data.length)) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  view.setUint32(8 + data.length, (c ^ 0xffffffff) >>> 0);
  return out;
}

/** A grayscale PNG of the stated size whose pixel data inflates to `inflated` bytes of zeros. */
async function pngBomb(width: number, height: number, inflated: number): Promise<string> {
  const ihdr = new Uint8Array(13);
  new DataView(ihdr.buffer).setUint32(0, width);
  new DataView(ihdr.buffer).setUint32(4, height);
  ihdr[8] = 8;
  const deflate = new CompressionStream("deflate");
  const compressed = new Response(deflate.readable).bytes();
  const writer = deflate.writable.getWriter();
  const zeros = new Uint8Array(16 * 2 ** 20);
  for (let left = inflated; left > 0; left -= zeros.length) {
    await writer.write(zeros.subarray(0, Math.min(left, zeros.length)));
  }
  await writer.close();
  const parts = [
    Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk("IHDR", ihdr),
    pngChunk("IDAT", await compressed),
    pngChunk("IEND", new Uint8Array()),
  ];
  const png = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((off, p) => (png.set(p, off), off + p.length), 0);
  return png.toBase64();
}

// ---- checks -----------------------------------------------------------------------------------------

/** Undefined when `b64` is a PNG of width×height (of any size without them), else what is wrong with it. */
function pngProblem(b64: unknown, width?: number, height?: number): string | undefined {
  if (typeof b64 !== "string") return `no image (${typeof b64})`;
  try {
    const bytes = Uint8Array.fromBase64(b64);
    if (bytes[0] !== 0x89 || bytes[1] !== 0x50) return "not a PNG";
    const png = decodePng(bytes);
    if (width !== undefined && (png.width !== width || png.height !== height)) {
      return `size ${png.width}x${png.height}, asked ${width}x${height}`;
    }
  } catch (e) {
    return `undecodable: ${e}`;
  }
}

/** What the native schema (src/server/native_schema.ts) accepts as a prompt. */
function promptIsValid(p: string): boolean {
  return p.trim().length > 0 && !p.includes("\u0000") && p.length <= 10_000;
}

const UNICODE_PROMPTS = [
  ...ODD_STRINGS,
  "\ud83d", // a lone high surrogate
  "a\udc00b",
  "Ａ ｃａｔ ｉｎ ｆｕｌｌｗｉｄｔｈ",
  "猫が月を見ている",
  "قطة على القمر",
  "क़ाबिल बिल्ली",
  "Z̷̢̛̛a̸̡l̵g̴o̷",
  "\u3000\u2003\u00a0",
  "\u200b",
  "\u0085\u2028\u2029",
  "🐈".repeat(300),
  "x".repeat(10_001),
  "\ufffd\ufffe\uffff",
  "\u{10ffff}\u{e0001}",
  "tab\tnew\nline\rcr",
];

// ---- one request of each kind -----------------------------------------------------------------------

interface Generation {
  width: number;
  height: number;
  steps: number;
  seed: number;
  sampler: string;
}

function generation(r: Rng): Generation {
  // The tiny UNet takes multiples of 64.
  const [width, height] = r.next() < 0.92 ? [64, 64] : r.pick([[128, 64], [64, 128]]);
  // 1 to 3 steps, mostly fewer: the GPU is the bottleneck of the whole run (busy about 99% of it).
  const steps = r.pick([1, 1, 1, 2, 2, 3]);
  return { width, height, steps, seed: r.int(2 ** 31), sampler: r.pick(SAMPLER_NAMES) };
}

function nativeBody(g: Generation, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    prompt: "a small red boat",
    width: g.width,
    height: g.height,
    steps: g.steps,
    seed: g.seed,
    sampler: g.sampler,
    ...extra,
  };
}

const SSE = { accept: "text/event-stream" };
const JSON_TYPE = { "content-type": "application/json" };

interface Attempt {
  status: number | "network-error" | "aborted";
  retryAfter?: number;
  ok?: boolean;
  detail?: string;
}

/**
 * Runs an attempt until it is not refused with 429, for up to 3 minutes: a valid job must finally run. The
 * wait is the Retry-After capped at 2 s, with jitter: the hostile requests keep the queue full, and a
 * client that waited the whole estimate every time could starve on a loaded machine.
 */
async function withRetries(kind: Kind, attempt: () => Promise<Attempt>): Promise<Result> {
  const deadline = Date.now() + 180_000;
  for (let retries = 0;; retries++) {
    const a = await attempt();
    if (a.status !== 429 || Date.now() > deadline) return { kind, ...a, retries };
    const waitS = Math.min(2, a.retryAfter ?? 1) * (0.5 + Math.random() / 2);
    await new Promise((r) => setTimeout(r, 1000 * waitS));
  }
}

async function fetchAttempt(
  url: string,
  init: RequestInit,
  check: (res: Response) => Promise<string | undefined>,
): Promise<Attempt> {
  try {
    const res = await fetch(url, { ...init, signal: AbortSignal.timeout(120_000) });
    if (res.status !== 200) {
      const text = await res.text();
      return { status: res.status, retryAfter: Number(res.headers.get("retry-after") ?? 1), detail: text };
    }
    const problem = await check(res);
    return { status: 200, ok: problem === undefined, detail: problem };
  } catch (e) {
    return { status: e instanceof TypeError ? "network-error" : "aborted", detail: String(e) };
  }
}

/** A native SSE stream: ids in order, previews decodable, ends with `done` and the right image. */
async function checkNativeStream(res: Response, g: Generation): Promise<string | undefined> {
  let last: { event: string; data: string } | undefined;
  let n = 0;
  for await (const ev of readSse(res.body!)) {
    if (ev.id !== String(++n)) return `event ${n} has id ${ev.id}`;
    if (ev.event === "preview") {
      // Cheap previews are smaller than the image.
      const problem = pngProblem(JSON.parse(ev.data).data);
      if (problem) return `preview: ${problem}`;
    }
    last = ev;
  }
  if (last?.event !== "done") return `stream ended with ${last?.event}: ${last?.data.slice(0, 200)}`;
  return pngProblem(JSON.parse(last.data).image, g.width, g.height);
}

async function validRequest(url: string, kind: Kind, r: Rng, forceImg2img = false): Promise<Result> {
  const g = generation(r);
  const post =
    (path: string, body: unknown, headers: Record<string, string> = {}) =>
    (check: (res: Response) => Promise<string | undefined>) =>
      fetchAttempt(
        `${url}${path}`,
        { method: "POST", headers: { ...JSON_TYPE, ...headers }, body: JSON.stringify(body) },
        check,
      );
  switch (kind) {
    case "valid-native-json": {
      // img2img runs floor(steps × strength) steps: 2 steps and a strength of at least 0.5 leave one.
      const img2img = r.next() < 0.2 || forceImg2img;
      const body = img2img
        ? nativeBody({ ...g, steps: Math.max(2, g.steps) }, {
          image: INIT_PNG_B64,
          strength: 0.5 + r.next() / 2,
        })
        : nativeBody(g);
      const send = post("/v1/generate", body);
      return withRetries(kind, () =>
        send(async (res) => {
          const json = await res.json();
          const size = `${json.width}x${json.height}`;
          return size === `${g.width}x${g.height}`
            ? pngProblem(json.image, g.width, g.height)
            : `says ${size}`;
        }));
    }
    case "valid-native-sse": {
      const send = post("/v1/generate", nativeBody(g, { preview_every: r.int(2) }), SSE);
      return withRetries(kind, () => send((res) => checkNativeStream(res, g)));
    }
    case "valid-native-get": {
      const query = new URLSearchParams(
        Object.entries(nativeBody(g, { preview_every: 1 })).map(([k, v]) => [k, String(v)]),
      );
      return withRetries(
        kind,
        () =>
          fetchAttempt(`${url}/v1/generate?${query}`, { headers: SSE }, (res) => checkNativeStream(res, g)),
      );
    }
    case "valid-openai-json": {
      const n = r.next() < 0.2 ? 2 : 1;
      const body = { prompt: "a red fox", size: `${g.width}x${g.height}`, steps: g.steps, n, seed: g.seed };
      const send = post("/v1/images/generations", body);
      return withRetries(kind, () =>
        send(async (res) => {
          const json = await res.json();
          if (json.data?.length !== n) return `${json.data?.length} images, asked ${n}`;
          for (const d of json.data) {
            const problem = pngProblem(d.b64_json, g.width, g.height);
            if (problem) return problem;
          }
        }));
    }
    case "valid-openai-stream": {
      const partials = r.int(3);
      const body = {
        prompt: "a red fox",
        size: `${g.width}x${g.height}`,
        steps: g.steps,
        stream: true,
        partial_images: partials,
      };
      const send = post("/v1/images/generations", body);
      return withRetries(kind, () =>
        send(async (res) => {
          let completed: string | undefined;
          for await (const ev of readSse(res.body!)) {
            const json = JSON.parse(ev.data);
            if (ev.event === "error") return `error event: ${ev.data.slice(0, 200)}`;
            const final = ev.event === "image_generation.completed";
            const problem = final ? pngProblem(json.b64_json, g.width, g.height) : pngProblem(json.b64_json);
            if (problem) return `${ev.event}: ${problem}`;
            if (final) completed = json.b64_json;
          }
          return completed ? undefined : "no image_generation.completed event";
        }));
    }
    case "valid-slow-body": {
      const body = encoder.encode(JSON.stringify(nativeBody(g)));
      return withRetries(kind, () =>
        slowExchange(url, r, body, (text) => {
          const json = JSON.parse(text);
          return pngProblem(json.image, g.width, g.height);
        }));
    }
    case "unicode-prompt": {
      const prompt = r.pick(UNICODE_PROMPTS);
      const negative = r.next() < 0.3 ? { negative_prompt: r.pick(UNICODE_PROMPTS).slice(0, 200) } : {};
      const valid = promptIsValid(prompt) &&
        !(negative.negative_prompt ?? "").includes("\u0000");
      const send = post("/v1/generate", nativeBody({ ...g, steps: 1 }, { prompt, ...negative }));
      const result = await withRetries(kind, () =>
        send(async (res) => {
          const json = await res.json();
          return pngProblem(json.image, g.width, g.height);
        }));
      const expected = valid ? 200 : 400;
      if (result.status !== expected) {
        return { ...result, ok: false, detail: `expected ${expected}: ${result.detail?.slice(0, 200)}` };
      }
      return { ...result, ok: valid ? result.ok : true };
    }
  }
  throw new Error(`not a generation kind: ${kind}`);
}

/** Sends `body` as POST /v1/generate in small pieces with short pauses (Content-Length or chunked). */
async function slowExchange(
  url: string,
  r: Rng,
  body: Uint8Array,
  check: (text: string) => string | undefined,
): Promise<Attempt> {
  const pieces = splitRandomly(r, body, 6 + r.int(7));
  const chunked = r.next() < 0.5;
  const head = requestHead("POST", "/v1/generate", {
    "content-type": "application/json",
    ...(chunked ? { "transfer-encoding": "chunked" } : { "content-length": body.length }),
  });
  const framed = chunked
    ? [
      ...pieces.map((p) =>
        Uint8Array.from([...encoder.encode(`${p.length.toString(16)}\r\n`), ...p, 13, 10])
      ),
      encoder.encode("0\r\n\r\n"),
    ]
    : pieces;
  const answer = await rawExchange(url, [encoder.encode(head), ...framed], {
    delayMs: () => 10 + r.int(30),
    timeoutMs: 120_000,
  });
  if (answer.status === undefined) return { status: "network-error", detail: answer.error };
  const text = new TextDecoder().decode(answer.body);
  if (answer.status !== 200) {
    return {
      status: answer.status,
      retryAfter: Number(answer.headers.get("retry-after") ?? 1),
      detail: text.slice(0, 300),
    };
  }
  const problem = check(text);
  return { status: 200, ok: problem === undefined, detail: problem };
}

/** A request that must not generate anything; statuses are checked against EXPECTED afterwards. */
async function hostile(url: string, kind: Kind, r: Rng, bombs: string[]): Promise<Omit<Result, "kind">> {
  const base = r.next() < 0.5 ? SHAPE.native : SHAPE.openai;
  const path = base === SHAPE.native ? "/v1/generate" : "/v1/images/generations";
  const post = (to: string, body: BodyInit) =>
    sendHostile(url, { kind, path: to, init: { method: "POST", headers: JSON_TYPE, body } }, 60_000);
  switch (kind) {
    case "sse-hangup": {
      if (base === SHAPE.native) {
        return await sendHostile(url, hostileRequest("sse-hangup", r, SHAPE), 60_000);
      }
      const body = { ...SHAPE.openai, size: "64x64", steps: 3, stream: true, partial_images: 2 };
      return await sendHostile(url, {
        kind,
        path,
        init: { method: "POST", headers: JSON_TYPE, body: JSON.stringify(body) },
        hangUpAfterEvents: 1 + r.int(2),
      }, 60_000);
    }
    case "huge-numbers":
      return await post(path, hugeNumberBody(r, base));
    case "unicode": {
      switch (r.int(4)) {
        case 0:
          return await post(path, invalidUtf8Body(r, base));
        case 1:
          return await post(
            "/v1/generate",
            JSON.stringify({
              ...SHAPE.native,
              [r.pick(["sampler", "output_format", "preview", "long_prompt"])]: r.pick([
                "ｄｄｉｍ",
                "ddim\u0000",
                "PNG",
                "pn\u0261",
                "cheap\u200b",
                "\ud800",
                "🙂",
              ]),
            }),
          );
        case 2:
          return await sendHostile(url, {
            kind,
            path: "/v1/images/generations",
            init: {
              method: "POST",
              headers: JSON_TYPE,
              body: JSON.stringify({
                ...SHAPE.openai,
                size: r.pick(["６４x６４", "64×64", "64x64\u0000", "٦٤x٦٤", "64x64 ", "𝟲𝟰x𝟲𝟰"]),
              }),
            },
          }, 60_000);
        default:
          // Unknown field names: the native schema is strict.
          return await sendHostile(url, {
            kind,
            path: "/v1/generate",
            init: {
              method: "POST",
              headers: JSON_TYPE,
              body: JSON.stringify({
                ...SHAPE.native,
                [r.pick(["wídth", "ｓｔｅｐｓ", "steps\u0000", "\ud800", "prompt\u200b", "🙂"])]: 1,
              }),
            },
          }, 60_000);
      }
    }
    case "giant-base64-over": {
      const image = "A".repeat(BODY_LIMIT + r.int(64 * 1024));
      const body = JSON.stringify({
        ...base,
        image: r.next() < 0.5 ? image : `data:image/png;base64,${image}`,
      });
      return await post(path, r.next() < 0.5 ? body : streamedBody(body));
    }
    case "giant-base64-under": {
      const size = 4 * (25_000 + r.int(200_000));
      let image = RANDOM_B64.slice(0, size);
      const variant = r.int(5);
      if (variant === 1) image = `data:image/jpeg;base64,${image}`;
      if (variant === 2) image = image.slice(0, size / 2) + "!*" + image.slice(size / 2);
      // Magic bytes of a PNG or a JPEG and junk after: past the schema, refused by the decoder.
      if (variant === 3) image = `iVBORw0KGgo${image.slice(11)}`;
      if (variant === 4) image = `/9j/${image.slice(4)}`;
      return await post(path, JSON.stringify({ ...decodable(base), image }));
    }
    case "image-bomb":
      return await post(path, JSON.stringify({ ...decodable(base), image: r.pick(bombs) }));
    case "img2img-no-step": {
      // A real init image at 64×64, with too few steps for its strength: refused before any GPU work.
      const steps = 1 + r.int(2);
      const strength = (0.05 + 0.9 * r.next()) / steps;
      const body = base === SHAPE.native
        ? { ...base, width: 64, height: 64, steps, image: INIT_PNG_B64, strength }
        : { ...base, size: "64x64", steps, image: INIT_PNG_B64, strength };
      return await post(path, JSON.stringify(body));
    }
    case "delete-unknown": {
      const id = r.pick([
        `job-${crypto.randomUUID()}`,
        crypto.randomUUID(),
        "job-",
        "%00",
        "job-%F0%9F%98%80",
        "..%2F..%2Fhealthz",
        "x".repeat(2000),
        "job-1 OR 1=1",
        "%E2%82",
      ]);
      return await sendHostile(url, {
        kind,
        path: `/v1/jobs/${id.replaceAll(" ", "%20")}`,
        init: { method: "DELETE" },
      });
    }
    case "slow-body": {
      const body = r.next() < 0.5
        ? JSON.stringify({ ...SHAPE.native, steps: r.pick(["1", -3, 1e999, null, [1]]) })
        : JSON.stringify(SHAPE.native).slice(0, 10 + r.int(20));
      const a = await slowExchange(url, r, encoder.encode(body), () => "not refused");
      return a;
    }
    case "abandoned-body":
      return await abandoned(url, r);
    case "raw-malformed":
      await rawProbe(url, r);
      return { status: "closed" };
    default:
      return await sendHostile(url, hostileRequest(kind as HostileKind, r, SHAPE), 60_000);
  }
}

/** A body the engine accepts up to decoding its init image (64×64, and steps × strength ≥ 1). */
function decodable(base: Record<string, unknown>): Record<string, unknown> {
  const size = base === SHAPE.native ? { width: 64, height: 64 } : { size: "64x64" };
  return { ...base, ...size, steps: 2, strength: 0.75 };
}

/** A request whose body stops short of what it claims, then the client hangs up (or half-closes and
 * reads the answer). */
async function abandoned(url: string, r: Rng): Promise<Omit<Result, "kind">> {
  const path = r.pick(["/v1/generate", "/v1/images/generations"]);
  const body = encoder.encode(JSON.stringify({ ...SHAPE.native, image: RANDOM_B64.slice(0, r.int(4000)) }));
  const sent = body.subarray(0, r.int(body.length));
  const variant = r.int(5);
  let pieces: Uint8Array[];
  if (variant === 0) {
    // Cut inside the head.
    const head = requestHead("POST", path, { "content-type": "application/json", "content-length": 100 });
    pieces = [encoder.encode(head.slice(0, r.int(head.length - 4)))];
  } else if (variant === 1) {
    // Chunked, with no last chunk.
    const head = requestHead("POST", path, {
      "content-type": "application/json",
      "transfer-encoding": "chunked",
    });
    pieces = [encoder.encode(head), encoder.encode(`${(sent.length + 10).toString(16)}\r\n`), sent];
  } else {
    // Claims more than it sends (sometimes more than the limit).
    const claimed = variant === 2 ? BODY_LIMIT * 2 : body.length + 1 + r.int(BODY_LIMIT - body.length);
    const head = requestHead("POST", path, { "content-type": "application/json", "content-length": claimed });
    pieces = [encoder.encode(head), sent];
  }
  const halfClose = r.next() < 0.3;
  const answer = await rawExchange(url, pieces, {
    delayMs: () => r.int(20),
    abandon: halfClose ? "half-close" : "close",
    timeoutMs: 30_000,
  }).catch((e) => ({ status: undefined, error: String(e) }));
  if (answer.status === undefined) return { status: "closed", detail: answer.error };
  return { status: answer.status };
}

/** The answers each kind may get (every kind: never a 5xx, which is checked separately). */
const EXPECTED: Partial<Record<Kind, (r: Result) => boolean>> = {
  "unicode-prompt": (r) => r.ok === true,
  "sse-hangup": (r) => r.status === 200 || r.status === 429,
  "slow-body": (r) => r.status === 400,
  "abandoned-body": (r) => r.status === "closed" || r.status === 400,
  // Over the limit: 400 payload_too_large (the API's contract), or the socket closes while still sending.
  "giant-base64-over": (r) =>
    (r.status === 400 && r.detail?.includes('"payload_too_large"')) || r.status === 413 ||
    r.status === "network-error",
  "giant-base64-under": (r) => r.status === 400 || r.status === 429,
  "image-bomb": (r) => r.status === 400 || r.status === 429,
  "img2img-no-step": (r) => r.status === 400 || r.status === 429,
  "delete-unknown": (r) => r.status === 404,
  "unicode": (r) => r.status === 400,
  "raw-malformed": (r) => r.status === "closed",
};

function expectedFor(kind: Kind): (r: Result) => boolean {
  if (VALID_KINDS.has(kind)) return (r) => r.status === 200 && r.ok === true;
  return EXPECTED[kind] ?? ((r) => typeof r.status === "number");
}

// ---- the run ----------------------------------------------------------------------------------------

/** The kinds in a seeded random order, exactly TOTAL of them. */
function schedule(r: Rng): Kind[] {
  const kinds: Kind[] = [];
  for (const [kind, n] of Object.entries(PLAN)) for (let i = 0; i < n; i++) kinds.push(kind as Kind);
  const rest = TOTAL - kinds.length;
  GENERIC_KINDS.forEach((kind, i) => {
    const n = Math.floor(rest / GENERIC_KINDS.length) + (i < rest % GENERIC_KINDS.length ? 1 : 0);
    for (let j = 0; j < n; j++) kinds.push(kind);
  });
  for (let i = kinds.length - 1; i > 0; i--) {
    const j = r.int(i + 1);
    [kinds[i], kinds[j]] = [kinds[j], kinds[i]];
  }
  return kinds;
}

async function metricsOf(url: string): Promise<string> {
  return await (await fetch(`${url}/metrics`)).text();
}

function metric(text: string, name: string): number {
  const m = new RegExp(`^${name.replace(/[{}"]/g, "\\$&")} (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : NaN;
}

/** Responses ≥ 500 in the server's own count. */
function serverErrorsCounted(metrics: string): number {
  return [...metrics.matchAll(/^sd_http_responses_total\{code="5\d\d"\} (\d+)$/gm)]
    .reduce((n, m) => n + Number(m[1]), 0);
}

async function vmRss(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`).catch(() => "");
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN) * 1024;
}

async function rss(url: string, pid: number): Promise<{ metrics: number; proc: number }> {
  return { metrics: metric(await metricsOf(url), "process_resident_memory_bytes"), proc: await vmRss(pid) };
}

const mib = (b: number) => (b / 2 ** 20).toFixed(0);

Deno.test("real-server fuzz: 10,000 hostile and valid requests on the tiny model", async () => {
  const started = performance.now();
  const bombs = [
    await pngBomb(16_000, 16_000, 64), // the header alone is too large
    await pngBomb(8, 8, 320 * 2 ** 20), // 8x8 whose pixel data inflates to 320 MiB
  ];
  const server = await spawnTinyModelServer(SERVER_ARGS);
  try {
    await waitReady(server.url, 300_000);
    const r = rng(SEED);
    const kinds = schedule(r);
    const seeds = kinds.map(() => r.int(2 ** 32));
    if (kinds.length !== TOTAL) throw new Error(`planned ${kinds.length} requests`);

    // Warm-up: each generation path once (shaders, pipelines, init-image encoder), then the baseline.
    const warm = rng(SEED + 1);
    for (const kind of VALID_KINDS) {
      const w = await validRequest(server.url, kind, warm);
      if (w.status !== 200 || !w.ok) throw new Error(`warm-up ${kind}: ${w.status} ${w.detail}`);
    }
    const img2img = await validRequest(server.url, "valid-native-json", warm, true);
    if (img2img.status !== 200 || !img2img.ok) throw new Error(`warm-up img2img: ${img2img.detail}`);
    const rssStart = await rss(server.url, server.child.pid);
    const metricsStart = await metricsOf(server.url);

    const results: Result[] = new Array(TOTAL);
    let next = 0;
    const t0 = performance.now();
    const worker = async () => {
      while (next < TOTAL) {
        const i = next++;
        const ri = rng(seeds[i]);
        const kind = kinds[i];
        results[i] = VALID_KINDS.has(kind) || kind === "unicode-prompt"
          ? await validRequest(server.url, kind, ri)
          : { ...await hostile(server.url, kind, ri, bombs), kind };
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    const seconds = (performance.now() - t0) / 1000;

    // Counts by kind, and by status within each kind.
    const byKind = new Map<Kind, Map<string, number>>();
    for (const res of results) {
      const m = byKind.get(res.kind) ?? new Map<string, number>();
      m.set(String(res.status), (m.get(String(res.status)) ?? 0) + 1);
      byKind.set(res.kind, m);
    }
    const lines = [...byKind.entries()].sort((a, b) => a[0].localeCompare(b[0])).map(([kind, m]) => {
      const n = [...m.values()].reduce((a, b) => a + b, 0);
      const statuses = [...m.entries()].sort().map(([s, c]) => `${s}: ${c}`).join(", ");
      return `  ${kind.padEnd(20)} ${String(n).padStart(5)}  (${statuses})`;
    });
    const retries = results.reduce((n, res) => n + (res.retries ?? 0), 0);
    const valid = results.filter((res) => VALID_KINDS.has(res.kind));
    const completed = valid.filter((res) => res.status === 200 && res.ok);
    console.log(
      `${results.length} requests in ${seconds.toFixed(1)} s (seed ${SEED}, ${CONCURRENCY} in flight), ` +
        `plus ${retries} retries after 429:\n${lines.join("\n")}`,
    );
    const unicode = results.filter((res) => res.kind === "unicode-prompt");
    console.log(
      `valid generations: ${completed.length} of ${valid.length} completed with the right PNG; ` +
        `odd unicode prompts: ${unicode.filter((res) => res.status === 200 && res.ok).length} generated, ` +
        `${unicode.filter((res) => res.status === 400).length} refused as the schema says`,
    );

    const serverErrors = results.filter((res) => typeof res.status === "number" && res.status >= 500);
    if (serverErrors.length) {
      throw new Error(
        `${serverErrors.length} answers ≥ 500, the first: ${JSON.stringify(serverErrors.slice(0, 5))}`,
      );
    }
    if (results.length !== TOTAL || results.some((res) => !res)) throw new Error("not every request ran");
    const wrong = results.filter((res) => !expectedFor(res.kind)(res));
    if (wrong.length) {
      throw new Error(`${wrong.length} unexpected answers, the first: ${JSON.stringify(wrong.slice(0, 8))}`);
    }
    const plannedValid = [...VALID_KINDS].reduce((n, k) => n + PLAN[k as PlannedKind], 0);
    if (valid.length !== plannedValid || completed.length !== plannedValid) {
      throw new Error(`${completed.length} of ${plannedValid} valid generations completed`);
    }

    // Alive, ready, queue drained; the server itself counted no 5xx.
    const status = await Promise.race([
      server.child.status,
      new Promise((res) => setTimeout(() => res("alive"), 50)),
    ]);
    if (status !== "alive") throw new Error(`server exited: ${JSON.stringify(status)}`);
    await waitReady(server.url);
    let metrics = await metricsOf(server.url);
    for (let i = 0; i < 300 && metric(metrics, "sd_queue_length") + metric(metrics, "sd_jobs_running"); i++) {
      await new Promise((res) => setTimeout(res, 100));
      metrics = await metricsOf(server.url);
    }
    if (metric(metrics, "sd_queue_length") || metric(metrics, "sd_jobs_running")) {
      throw new Error(`the queue did not drain:\n${metrics}`);
    }
    // (/healthz answers 503 while the model loads: only what came after the warm-up counts.)
    const new5xx = serverErrorsCounted(metrics) - serverErrorsCounted(metricsStart);
    if (new5xx) throw new Error(`the server counted ${new5xx} answers ≥ 500:\n${metrics}`);
    const jobsCompleted = metric(metrics, 'sd_jobs_total{outcome="completed"}');
    if (!(jobsCompleted >= plannedValid)) throw new Error(`server counts ${jobsCompleted} completed jobs`);

    // Resident memory after the storm, against the baseline after warm-up. The bound: the model is a
    // few megabytes and a job at 64×64 needs little, so what can legitimately grow is V8's heap and the
    // allocator's arenas after 16 concurrent 1 MiB bodies (and their copies as text and as a Request),
    // base64 images in flight, and GPU staging buffers — tens of MiB. 256 MiB catches a leak of a body
    // per request (10,000 × ≥ 26 kB) or of any decoded image per job, or a decompression bomb that
    // sticks, without flaking on the allocator's high-water marks.
    const rssEnd = await rss(server.url, server.child.pid);
    console.log(
      `RSS start ${mib(rssStart.metrics)} MiB, end ${mib(rssEnd.metrics)} MiB (/metrics); ` +
        `VmRSS start ${mib(rssStart.proc)} MiB, end ${mib(rssEnd.proc)} MiB (/proc/${server.child.pid})`,
    );
    if (!(rssEnd.metrics <= rssStart.metrics + RSS_GROWTH_LIMIT)) {
      throw new Error(`resident memory grew by ${mib(rssEnd.metrics - rssStart.metrics)} MiB`);
    }

    // A last generation, start to finish.
    const last = await validRequest(server.url, "valid-native-sse", rng(SEED + 2));
    if (last.status !== 200 || !last.ok) throw new Error(`generation after fuzzing: ${last.detail}`);
    console.log(
      `whole test (start-up, warm-up, fuzzing, checks): ${
        ((performance.now() - started) / 1000).toFixed(1)
      } s`,
    );
  } finally {
    await server.stop();
  }
  const stderr = await server.stderr();
  if (/Uncaught|panicked|unhandled|request failed|failed:/i.test(stderr)) {
    throw new Error(`server stderr:\n${stderr.slice(0, 4000)}`);
  }
});
