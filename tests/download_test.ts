// `weights` download against a local fake of the Hugging Face Hub (Deno.serve on 127.0.0.1, passed as the
// endpoint): same URL layout (`/{repo}/resolve/{rev}/{path}`) and headers as the Hub (LFS files: HEAD →
// 302 to a CDN path with X-Linked-Etag = sha256 and X-Linked-Size; git files: 200 with the git blob SHA-1
// as ETag; X-Repo-Commit; X-Error-Code on errors). Faults are injected per file: connection cut mid-body,
// stall, Range ignored, 416, corrupted bytes, 5xx, missing files, required token.

import { createHash } from "node:crypto";
import {
  DIFFUSERS_FP16_FILES,
  downloadModel,
  type DownloadOptions,
  HUB_MODELS,
  readLock,
  TAESD_FILES,
} from "../src/weights/download/index.ts";
import { progressBars, weightsCommand } from "../src/commands/weights.ts";
import { runCli } from "../src/commands/cli.ts";

const REPO = HUB_MODELS.sd15.repo;
const COMMIT = "0123456789abcdef0123456789abcdef01234567";
const UNET = "unet/diffusion_pytorch_model.fp16.safetensors";
const VAE = "vae/diffusion_pytorch_model.fp16.safetensors";

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

function assertEquals<T>(got: T, want: T, msg = ""): void {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new Error(`${msg}\n  got:  ${g}\n  want: ${w}`);
}

async function assertRejects(fn: () => Promise<unknown>, ...patterns: RegExp[]): Promise<string> {
  try {
    await fn();
  } catch (e) {
    const message = (e as Error).message;
    for (const p of patterns) assert(p.test(message), `error "${message}" does not match ${p}`);
    return message;
  }
  throw new Error("expected a rejection");
}

/** Deterministic bytes (xorshift32) so every file has its own content. */
function syntheticBytes(n: number, seed: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  let s = seed * 2654435761 >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = s & 0xff;
  }
  return out;
}

const sha256Hex = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const gitSha1Hex = (b: Uint8Array) => createHash("sha1").update(`blob ${b.length}\0`).update(b).digest("hex");

/** The files of a synthetic sd15 repo: the ones we need plus ones we must not fetch. */
function syntheticRepo(): Map<string, Uint8Array<ArrayBuffer>> {
  const sizes: Record<string, number> = {
    [UNET]: 1_500_000,
    [VAE]: 200_000,
    "text_encoder/model.fp16.safetensors": 300_000,
    "tokenizer/vocab.json": 40_000,
  };
  const files = new Map<string, Uint8Array<ArrayBuffer>>();
  const all = [
    ...DIFFUSERS_FP16_FILES,
    "unet/diffusion_pytorch_model.safetensors", // fp32 variant: must not be fetched
    "safety_checker/model.fp16.safetensors",
    "feature_extractor/preprocessor_config.json",
  ];
  all.forEach((path, i) => {
    files.set(
      path,
      path.endsWith(".json") && !sizes[path]
        ? new TextEncoder().encode(JSON.stringify({ path, n: i }))
        : syntheticBytes(sizes[path] ?? 1000, i + 1),
    );
  });
  return files;
}

interface Fault {
  /** Cut the connection after this many body bytes, `times` times. */
  cutAfter?: number;
  /** Send this many bytes, then nothing (until the client gives up), `times` times. */
  stallAfter?: number;
  times?: number;
  ignoreRange?: boolean;
  /** Answer every Range request with 416, `times` times. */
  rangeNotSatisfiable?: boolean;
  /** Serve different bytes than the advertised sha256. */
  corrupt?: boolean;
  /** Answer the CDN request with this status, `times` times. */
  status?: number;
}

interface Seen {
  method: string;
  path: string;
  range: string | null;
  authorization: string | null;
}

class FakeHub {
  readonly seen: Seen[] = [];
  readonly faults = new Map<string, Fault>();
  requireToken: string | null = null;
  private readonly bySha = new Map<string, string>();

  private constructor(
    readonly files: Map<string, Uint8Array<ArrayBuffer>>,
    private readonly server: Deno.HttpServer<Deno.NetAddr>,
    readonly endpoint: string,
    readonly repo: string,
  ) {}

  static start(files = syntheticRepo(), repo: string = REPO): FakeHub {
    let hub: FakeHub | null = null;
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (req) => hub!.handle(req),
    );
    hub = new FakeHub(files, server, `http://127.0.0.1:${server.addr.port}`, repo);
    for (const [path, data] of files) hub.bySha.set(sha256Hex(data), path);
    return hub;
  }

  async close(): Promise<void> {
    await this.server.shutdown();
  }

  /** Requests for file contents (CDN and git files), as "path" or "path range". */
  gets(): string[] {
    return this.seen.filter((s) => s.method === "GET").map((s) => s.path + (s.range ? ` ${s.range}` : ""));
  }

  private handle(req: Request): Response {
    const url = new URL(req.url);
    this.seen.push({
      method: req.method,
      path: decodeURIComponent(url.pathname),
      range: req.headers.get("range"),
      authorization: req.headers.get("authorization"),
    });
    const cdn = /^\/cdn\/([0-9a-f]{64})$/.exec(url.pathname);
    if (cdn) {
      const path = this.bySha.get(cdn[1]);
      return path ? this.serveBytes(req, path) : new Response("no such blob", { status: 404 });
    }
    const m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    if (!m) return new Response("not found", { status: 404 });
    const [repo, revision, path] = [m[1], decodeURIComponent(m[2]), decodeURIComponent(m[3])];
    if (repo !== this.repo) return hubError(401, "RepoNotFound", "Repository not found");
    if (this.requireToken && req.headers.get("authorization") !== `Bearer ${this.requireToken}`) {
      return hubError(401, "GatedRepo", "Access to model is restricted");
    }
    if (revision !== "main" && revision !== COMMIT) {
      return hubError(404, "RevisionNotFound", "Invalid rev id");
    }
    const data = this.files.get(path);
    if (!data) return hubError(404, "EntryNotFound", `${path} does not exist on "${revision}"`);
    const common = { "x-repo-commit": COMMIT, "accept-ranges": "bytes" };
    if (path.endsWith(".safetensors")) {
      const sha = sha256Hex(data);
      return new Response(null, {
        status: 302,
        headers: {
          ...common,
          location: `${this.endpoint}/cdn/${sha}`, // absolute: a HEAD must not follow it
          "x-linked-etag": `"${sha}"`,
          "x-linked-size": String(data.length),
          etag: `"${sha}"`,
        },
      });
    }
    if (req.method === "HEAD") {
      return new Response(null, {
        headers: { ...common, etag: `"${gitSha1Hex(data)}"`, "content-length": String(data.length) },
      });
    }
    return this.serveBytes(req, path, { ...common, etag: `"${gitSha1Hex(data)}"` });
  }

  private serveBytes(req: Request, path: string, extra: Record<string, string> = {}): Response {
    const fault = this.faults.get(path) ?? {};
    const active = (fault.times ?? Infinity) > 0;
    const consume = () => {
      if (fault.times !== undefined) fault.times--;
    };
    if (fault.status && active) {
      consume();
      return new Response("upstream trouble", { status: fault.status });
    }
    let data = this.files.get(path)!;
    if (fault.corrupt) {
      data = data.slice();
      data[data.length >> 1] ^= 0xff;
    }
    const range = fault.ignoreRange ? null : req.headers.get("range");
    if (range) {
      const m = /^bytes=(\d+)-$/.exec(range);
      const start = m ? Number(m[1]) : NaN;
      if (!m || start >= data.length || (fault.rangeNotSatisfiable && active)) {
        if (fault.rangeNotSatisfiable) consume();
        return new Response(null, { status: 416, headers: { "content-range": `bytes */${data.length}` } });
      }
      return this.body(206, data.subarray(start), fault, {
        ...extra,
        "content-range": `bytes ${start}-${data.length - 1}/${data.length}`,
      });
    }
    return this.body(200, data, fault, extra);
  }

  private body(
    status: number,
    bytes: Uint8Array<ArrayBuffer>,
    fault: Fault,
    headers: Record<string, string>,
  ): Response {
    headers = { ...headers, "content-length": String(bytes.length) };
    const active = (fault.times ?? Infinity) > 0;
    const stopAt = active ? fault.cutAfter ?? fault.stallAfter : undefined;
    if (stopAt === undefined) return new Response(bytes, { status, headers });
    if (fault.times !== undefined) fault.times--;
    const stall = fault.stallAfter !== undefined;
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(bytes.slice(0, stopAt));
        // Cut: error the body so the server drops the connection before Content-Length bytes.
        if (!stall) controller.close();
        // Stall: never enqueue again nor close; the client's stall timeout aborts.
      },
    });
    return new Response(stream, { status, headers });
  }
}

function hubError(status: number, code: string, message: string): Response {
  return new Response(JSON.stringify({ error: message }), {
    status,
    headers: { "x-error-code": code, "x-error-message": message, "content-type": "application/json" },
  });
}

interface Setup {
  hub: FakeHub;
  dir: string;
  lines: string[];
  opts: (extra?: Partial<DownloadOptions>) => DownloadOptions;
}

async function withHub(
  fn: (s: Setup) => Promise<void>,
  files?: Map<string, Uint8Array<ArrayBuffer>>,
  repo?: string,
): Promise<void> {
  const hub = FakeHub.start(files, repo);
  const dir = await Deno.makeTempDir({ prefix: "weights-test-" });
  const lines: string[] = [];
  const opts = (extra: Partial<DownloadOptions> = {}): DownloadOptions => ({
    model: "sd15",
    dir,
    endpoint: hub.endpoint,
    retries: 3,
    retryDelayMs: 1,
    stallTimeoutMs: 2000,
    log: (l) => lines.push(l),
    ...extra,
  });
  try {
    await fn({ hub, dir, lines, opts });
  } finally {
    await hub.close();
    await Deno.remove(dir, { recursive: true });
  }
}

async function assertFile(path: string, want: Uint8Array): Promise<void> {
  const got = await Deno.readFile(path);
  assert(got.length === want.length, `${path}: ${got.length} bytes, want ${want.length}`);
  assert(sha256Hex(got) === sha256Hex(want), `${path}: content differs`);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function listFiles(root: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${root}/${prefix}`)) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory) out.push(...await listFiles(root, rel));
    else out.push(rel);
  }
  return out.sort();
}

const cdnPath = (hub: FakeHub, path: string) => `/cdn/${sha256Hex(hub.files.get(path)!)}`;

// ---------------------------------------------------------------------------------------------------------

Deno.test("downloads exactly the fp16 diffusers files, verified, with a lock; a rerun needs no network", async () => {
  await withHub(async ({ hub, dir, opts }) => {
    const result = await downloadModel(opts());
    const modelDir = `${dir}/sd15`;
    assertEquals(result.downloaded.slice().sort(), [...DIFFUSERS_FP16_FILES].sort());
    assertEquals(
      await listFiles(modelDir),
      [...DIFFUSERS_FP16_FILES, "weights.lock.json"].sort(),
      "files on disk (no .part, no extra variants)",
    );
    for (const path of DIFFUSERS_FP16_FILES) await assertFile(`${modelDir}/${path}`, hub.files.get(path)!);

    // One HEAD per file, at main for the first (it resolves the commit), then at the commit.
    const heads = hub.seen.filter((s) => s.method === "HEAD").map((s) => s.path);
    assertEquals(heads.length, DIFFUSERS_FP16_FILES.length, "HEAD count");
    assert(heads[0] === `/${REPO}/resolve/main/model_index.json`, `first HEAD ${heads[0]}`);
    assert(heads.slice(1).every((p) => p.includes(`/resolve/${COMMIT}/`)), "later HEADs use the commit");
    // Contents: git files straight from /resolve/, LFS files through the redirect to the CDN.
    const expectedGets = DIFFUSERS_FP16_FILES.flatMap((p) =>
      p.endsWith(".safetensors")
        ? [`/${REPO}/resolve/${COMMIT}/${p}`, cdnPath(hub, p)]
        : [`/${REPO}/resolve/${COMMIT}/${p}`]
    );
    assertEquals(hub.gets().sort(), expectedGets.sort(), "GET requests");
    assert(hub.seen.every((s) => s.authorization === null), "no Authorization without a token");

    const lock = await readLock(result.lockPath);
    assert(lock, "lock written");
    assertEquals([lock.repo, lock.revision, lock.commit], [REPO, "main", COMMIT]);
    assertEquals(lock.files.map((f) => f.path).sort(), [...DIFFUSERS_FP16_FILES].sort());
    for (const f of lock.files) {
      const data = hub.files.get(f.path)!;
      assertEquals([f.size, f.sha256, f.revision], [data.length, sha256Hex(data), COMMIT], f.path);
    }

    // Rerun with the hub gone: everything matches the lock, nothing is requested.
    await hub.close();
    const again = await downloadModel(opts({ endpoint: "http://127.0.0.1:9" }));
    assertEquals(again.downloaded, []);
    assertEquals(again.skipped.length, DIFFUSERS_FP16_FILES.length);
  });
});

Deno.test("an interrupted download leaves only a .part; the next run resumes it with a Range request", async () => {
  await withHub(async ({ hub, dir, lines, opts }) => {
    hub.faults.set(UNET, { cutAfter: 600_000, times: 1 });
    const message = await assertRejects(
      () => downloadModel(opts({ retries: 0 })),
      new RegExp(UNET.replace(/[./]/g, "\\$&")),
      /giving up after 1 failed attempt/,
      /run again to resume/,
    );
    const final = `${dir}/sd15/${UNET}`;
    assert(!await exists(final), "no final file after the cut");
    const partSize = (await Deno.stat(`${final}.part`)).size;
    assert(partSize > 0 && partSize <= 600_000, `part holds ${partSize} bytes`);
    assert(message.includes(`${partSize} bytes are kept`), message);
    const lock = await readLock(`${dir}/sd15/weights.lock.json`);
    assert(lock && !lock.files.some((f) => f.path === UNET), "the unfinished file is not in the lock");

    hub.seen.length = 0;
    const result = await downloadModel(opts());
    assertEquals(result.downloaded, [UNET], "only the unfinished file is fetched again");
    assert(hub.gets().includes(`${cdnPath(hub, UNET)} bytes=${partSize}-`), `gets: ${hub.gets()}`);
    assert(lines.some((l) => l.includes(`resuming at byte ${partSize}`)), "says it resumes");
    await assertFile(final, hub.files.get(UNET)!);
    assert(!await exists(`${final}.part`), "part renamed away");
  });
});

Deno.test("a connection cut or a stall mid-file is retried within the run, resuming with Range", async () => {
  await withHub(async ({ hub, dir, opts }) => {
    hub.faults.set(UNET, { cutAfter: 500_000, times: 2 });
    hub.faults.set(VAE, { stallAfter: 50_000, times: 1 });
    await downloadModel(opts({ stallTimeoutMs: 300 }));
    const unetRanges = hub.seen.filter((s) => s.path === cdnPath(hub, UNET)).map((s) => s.range);
    assertEquals(unetRanges.length, 3, `unet requests ${unetRanges}`);
    assert(
      unetRanges[0] === null && unetRanges.slice(1).every((r) => /^bytes=\d+-$/.test(r!)),
      `${unetRanges}`,
    );
    const vaeRanges = hub.seen.filter((s) => s.path === cdnPath(hub, VAE)).map((s) => s.range);
    assert(vaeRanges.length === 2 && /^bytes=\d+-$/.test(vaeRanges[1]!), `vae requests ${vaeRanges}`);
    await assertFile(`${dir}/sd15/${UNET}`, hub.files.get(UNET)!);
    await assertFile(`${dir}/sd15/${VAE}`, hub.files.get(VAE)!);
  });
});

Deno.test("a server that ignores Range (200) restarts the part; 416 restarts it too", async () => {
  await withHub(async ({ hub, dir, lines, opts }) => {
    // A stale part with wrong bytes: only a restart from byte 0 can produce the right file.
    await Deno.mkdir(`${dir}/sd15/unet`, { recursive: true });
    await Deno.writeFile(`${dir}/sd15/${UNET}.part`, new Uint8Array(700_000).fill(7));
    hub.faults.set(UNET, { ignoreRange: true });
    await Deno.mkdir(`${dir}/sd15/vae`, { recursive: true });
    await Deno.writeFile(`${dir}/sd15/${VAE}.part`, hub.files.get(VAE)!.subarray(0, 1000));
    hub.faults.set(VAE, { rangeNotSatisfiable: true, times: 1 });
    await downloadModel(opts());
    assert(hub.gets().includes(`${cdnPath(hub, UNET)} bytes=700000-`), "asked for the rest");
    assert(lines.some((l) => l.includes("ignored the Range request")), lines.join("\n"));
    await assertFile(`${dir}/sd15/${UNET}`, hub.files.get(UNET)!);
    const vae = hub.gets().filter((g) => g.startsWith(cdnPath(hub, VAE)));
    assertEquals(vae, [`${cdnPath(hub, VAE)} bytes=1000-`, cdnPath(hub, VAE)], "416, then from the start");
    await assertFile(`${dir}/sd15/${VAE}`, hub.files.get(VAE)!);
  });
});

Deno.test("a checksum mismatch deletes the part and fails naming the file", async () => {
  await withHub(async ({ hub, dir, opts }) => {
    hub.faults.set(VAE, { corrupt: true });
    await assertRejects(
      () => downloadModel(opts()),
      /vae\/diffusion_pytorch_model\.fp16\.safetensors/,
      /sha256 mismatch/,
      new RegExp(sha256Hex(hub.files.get(VAE)!)),
      /deleted the partial file/,
    );
    assert(!await exists(`${dir}/sd15/${VAE}`), "no final file");
    assert(!await exists(`${dir}/sd15/${VAE}.part`), "no part file");
    const lock = await readLock(`${dir}/sd15/weights.lock.json`);
    assert(lock && !lock.files.some((f) => f.path === VAE), "not in the lock");

    // A git file whose bytes do not match its ETag (git blob SHA-1) fails the same way.
    hub.faults.delete(VAE);
    hub.faults.set("tokenizer/vocab.json", { corrupt: true });
    await Deno.remove(`${dir}/sd15/tokenizer/vocab.json`);
    await Deno.writeTextFile(`${dir}/sd15/weights.lock.json`, "{}"); // invalid lock: ignored
    await assertRejects(() => downloadModel(opts()), /tokenizer\/vocab\.json/, /git blob sha1 mismatch/);
    assert(!await exists(`${dir}/sd15/tokenizer/vocab.json.part`), "no part file");
  });
});

Deno.test("404, 401 and refused connections fail with messages naming the file, repo or endpoint", async () => {
  const files = syntheticRepo();
  files.delete("tokenizer/merges.txt");
  await withHub(async ({ hub, dir, opts }) => {
    await assertRejects(
      () => downloadModel(opts()),
      /tokenizer\/merges\.txt not found in stable-diffusion-v1-5\/stable-diffusion-v1-5/,
      /HTTP 404 EntryNotFound/,
    );
    assert(!await exists(`${dir}/sd15/tokenizer/merges.txt`), "no file");

    await assertRejects(() => downloadModel(opts({ revision: "v9" })), /revision "v9" not found/);

    hub.requireToken = "hf_secret";
    const denied = await assertRejects(
      () => downloadModel(opts({ dir: `${dir}/gated` })),
      /was refused \(HTTP 401 GatedRepo/,
      /HF_TOKEN/,
    );
    assert(denied.includes(REPO), denied);
    await assertRejects(
      () => downloadModel(opts({ dir: `${dir}/gated`, token: "wrong" })),
      /HF_TOKEN is set but was refused/,
    );
    hub.seen.length = 0;
    hub.files.set("tokenizer/merges.txt", new TextEncoder().encode("#version: 0.2\n"));
    await downloadModel(opts({ dir: `${dir}/gated`, token: "hf_secret" }));
    const toHub = hub.seen.filter((s) => s.path.includes("/resolve/"));
    assert(toHub.every((s) => s.authorization === "Bearer hf_secret"), "Bearer token on every hub request");
  }, files);

  // Nothing listening: a port that was free a moment ago.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const dir = await Deno.makeTempDir({ prefix: "weights-test-" });
  try {
    await assertRejects(
      () =>
        downloadModel({
          model: "sd15",
          dir,
          endpoint: `http://127.0.0.1:${port}`,
          retryDelayMs: 1,
          log: () => {},
        }),
      new RegExp(`cannot connect to the Hugging Face endpoint http://127\\.0\\.0\\.1:${port}`),
      /connection refused/,
      /HF_ENDPOINT/,
    );
    assertEquals(await listFiles(dir), [], "nothing written");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("transient 5xx are retried with a bounded count", async () => {
  await withHub(async ({ hub, dir, opts }) => {
    hub.faults.set(VAE, { status: 503, times: 2 });
    await downloadModel(opts({ retries: 2 }));
    await assertFile(`${dir}/sd15/${VAE}`, hub.files.get(VAE)!);

    hub.faults.set(UNET, { status: 500 });
    await Deno.remove(`${dir}/sd15/${UNET}`);
    await assertRejects(
      () => downloadModel(opts({ retries: 2 })),
      /giving up after 3 failed attempts/,
      /HTTP 500/,
    );
    assertEquals(
      hub.gets().filter((g) => g === cdnPath(hub, UNET)).length,
      1 + 3,
      "1 first run + 3 attempts",
    );
    assert(!await exists(`${dir}/sd15/${UNET}`), "no final file");
  });
});

Deno.test("--verify re-downloads a file changed on disk; files present without a lock are adopted by hash", async () => {
  await withHub(async ({ hub, dir, opts }) => {
    await downloadModel(opts());
    const vaePath = `${dir}/sd15/${VAE}`;
    const tampered = await Deno.readFile(vaePath);
    tampered[10] ^= 1;
    await Deno.writeFile(vaePath, tampered);
    hub.seen.length = 0;
    const trusting = await downloadModel(opts());
    assertEquals(trusting.downloaded, [], "same size: trusted without --verify");
    assertEquals(hub.seen.length, 0);
    const verified = await downloadModel(opts({ verify: true }));
    assertEquals(verified.downloaded, [VAE]);
    await assertFile(vaePath, hub.files.get(VAE)!);

    // No lock (say, files copied from elsewhere): each file is checked against the hub's hash, not refetched.
    await Deno.remove(`${dir}/sd15/weights.lock.json`);
    hub.seen.length = 0;
    const adopted = await downloadModel(opts());
    assertEquals(adopted.downloaded, []);
    assertEquals(hub.gets(), [], "no contents fetched");
    assertEquals(
      (await readLock(`${dir}/sd15/weights.lock.json`))?.files.length,
      DIFFUSERS_FP16_FILES.length,
    );
  });
});

Deno.test("the weights command: flags, HF_ENDPOINT/HF_TOKEN from the environment, usage errors, progress bar", async () => {
  await withHub(async ({ hub, dir }) => {
    hub.requireToken = "tok";
    const code = await weightsCommand(
      ["--model", "sd15", "--dir", dir, "--quiet", "--retries", "1"],
      { HF_ENDPOINT: hub.endpoint + "/", HF_TOKEN: "tok" },
    );
    assertEquals(code, 0);
    assert(await exists(`${dir}/sd15/${UNET}`), "downloaded into DIR/sd15");
    assertEquals(await weightsCommand(["--model", "sd99"], {}), 2);
    assertEquals(await weightsCommand(["--retries", "x"], {}), 2);
    assertEquals(await runCli(["weights", "--bogus"]), 2, "registered in the CLI");

    // The cli-progress bar, drawn into a fake stream.
    let drawn = "";
    const stream = {
      isTTY: false,
      write(s: string) {
        drawn += s;
        return true;
      },
    } as unknown as NodeJS.WritableStream;
    await downloadModel({
      model: "sd15",
      dir: `${dir}/bar`,
      endpoint: hub.endpoint,
      token: "tok",
      progress: progressBars(stream),
      log: () => {},
    });
    assert(drawn.includes("100%") && drawn.includes(UNET) && drawn.includes("1.43 MiB"), drawn);
  });
});

Deno.test("taesd: madebyollin/taesd's diffusers config and safetensors weights only, into DIR/taesd", async () => {
  // The repository as the Hub holds it: the diffusers pair plus the original decoder/encoder files and a
  // pickle copy, none of which we read.
  const files = new Map<string, Uint8Array<ArrayBuffer>>();
  [
    "config.json",
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "taesd_decoder.pth",
    "taesd_encoder.pth",
    "taesd_decoder.safetensors",
    "taesd_encoder.safetensors",
    "README.md",
  ].forEach((path, i) =>
    files.set(path, syntheticBytes(path.endsWith(".safetensors") ? 50_000 : 700, 50 + i))
  );
  assertEquals(HUB_MODELS.taesd.repo, "madebyollin/taesd");
  assertEquals([...HUB_MODELS.taesd.files], [...TAESD_FILES]);
  await withHub(
    async ({ hub, dir, opts }) => {
      const result = await downloadModel(opts({ model: "taesd" }));
      assertEquals(result.modelDir, `${dir}/taesd`);
      assertEquals(result.downloaded, ["config.json", "diffusion_pytorch_model.safetensors"]);
      assertEquals(await listFiles(`${dir}/taesd`), [...TAESD_FILES, "weights.lock.json"].sort());
      for (const path of TAESD_FILES) await assertFile(`${dir}/taesd/${path}`, hub.files.get(path)!);
      const lock = await readLock(`${dir}/taesd/weights.lock.json`);
      assertEquals([lock?.model, lock?.repo, lock?.commit], ["taesd", "madebyollin/taesd", COMMIT]);
      // The command says where models find it.
      const log: string[] = [];
      const original = console.log;
      console.log = (line: string) => log.push(line);
      try {
        const code = await weightsCommand(["--model", "taesd", "--dir", dir, "--quiet"], {
          HF_ENDPOINT: hub.endpoint,
        });
        assertEquals(code, 0);
      } finally {
        console.log = original;
      }
      assert(log.at(-1)?.includes(`--taesd ${dir}/taesd`), `last line: ${log.at(-1)}`);
    },
    files,
    "madebyollin/taesd",
  );
});
