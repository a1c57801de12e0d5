// The models the `weights` command knows, and where each of their files lives on the Hugging Face Hub:
// `${HF_ENDPOINT:-https://huggingface.co}/{repo}/resolve/{revision}/{path}`, with
// `Authorization: Bearer $HF_TOKEN` when set. A HEAD request (redirects not followed, as huggingface_hub
// does) gives the file's size and checksum: LFS files answer with a redirect to the CDN carrying
// X-Linked-Size and X-Linked-Etag (the file's sha256); small git files answer 200 with their git blob
// SHA-1 as ETag. X-Repo-Commit pins the revision: every file of a run (and of later runs resuming it)
// comes from that one commit.

import { type Context, httpError, timedRequest } from "./http.ts";

/** Every file a diffusers SD model needs for fp16 inference (configs and small files first). */
export const DIFFUSERS_FP16_FILES: readonly string[] = [
  "model_index.json",
  "scheduler/scheduler_config.json",
  "text_encoder/config.json",
  "tokenizer/merges.txt",
  "tokenizer/special_tokens_map.json",
  "tokenizer/tokenizer_config.json",
  "tokenizer/vocab.json",
  "unet/config.json",
  "vae/config.json",
  "text_encoder/model.fp16.safetensors",
  "vae/diffusion_pytorch_model.fp16.safetensors",
  "unet/diffusion_pytorch_model.fp16.safetensors",
];

/** TAESD in diffusers' layout (AutoencoderTiny; its safetensors file is fp16). The repository also holds
 * the original .pth / .safetensors decoder and encoder files and a .bin copy, which are not needed. */
export const TAESD_FILES: readonly string[] = ["config.json", "diffusion_pytorch_model.safetensors"];

export interface HubModel {
  repo: string;
  files: readonly string[];
  /** What the folder is for: a whole model (--model) or TAESD previews and drafts (--taesd). */
  kind: "model" | "taesd";
}

export const HUB_MODELS = {
  sd15: { repo: "stable-diffusion-v1-5/stable-diffusion-v1-5", files: DIFFUSERS_FP16_FILES, kind: "model" },
  sd21: { repo: "stabilityai/stable-diffusion-2-1", files: DIFFUSERS_FP16_FILES, kind: "model" },
  "sd-turbo": { repo: "stabilityai/sd-turbo", files: DIFFUSERS_FP16_FILES, kind: "model" },
  taesd: { repo: "madebyollin/taesd", files: TAESD_FILES, kind: "taesd" },
} as const satisfies Record<string, HubModel>;

export type HubModelName = keyof typeof HUB_MODELS;

export const DEFAULT_ENDPOINT = "https://huggingface.co";

export interface RemoteFile {
  path: string;
  size: number | null;
  /** X-Linked-Etag of an LFS file. */
  sha256: string | null;
  /** ETag of a regular git file: sha1("blob {size}\0" + content). */
  gitSha1: string | null;
  /** X-Repo-Commit. */
  commit: string | null;
}

export function resolveUrl(ctx: Context, revision: string, path: string): string {
  const repo = ctx.repo.split("/").map(encodeURIComponent).join("/");
  const file = path.split("/").map(encodeURIComponent).join("/");
  return `${ctx.endpoint}/${repo}/resolve/${encodeURIComponent(revision)}/${file}`;
}

/** Size, checksum and commit of one file from a HEAD request (relative redirects followed, CDN ones not). */
export async function headFile(ctx: Context, revision: string, path: string): Promise<RemoteFile> {
  let url = resolveUrl(ctx, revision, path);
  for (let hops = 0;; hops++) {
    const res = await timedRequest(ctx, url, { method: "HEAD", redirect: "manual" });
    await res.body?.cancel();
    const location = res.headers.get("location");
    if (res.status >= 300 && res.status < 400 && location && isRelative(location) && hops < 5) {
      url = new URL(location, url).href; // renamed repository
      continue;
    }
    if (res.status >= 400) throw httpError(ctx, res, path, revision, url);
    const linkedEtag = res.headers.get("x-linked-etag");
    const etag = normalizeEtag(linkedEtag ?? res.headers.get("etag"));
    const linkedSize = res.headers.get("x-linked-size");
    const length = res.status === 200 ? res.headers.get("content-length") : null;
    const size = parseSize(linkedSize ?? length);
    return {
      path,
      size,
      sha256: etag && /^[0-9a-f]{64}$/.test(etag) ? etag : null,
      gitSha1: !linkedEtag && etag && /^[0-9a-f]{40}$/.test(etag) ? etag : null,
      commit: res.headers.get("x-repo-commit"),
    };
  }
}

function isRelative(location: string): boolean {
  return !/^[a-z][a-z0-9+.-]*:/i.test(location) && !location.startsWith("//");
}

function normalizeEtag(etag: string | null): string | null {
  if (!etag) return null;
  return etag.replace(/^W\//, "").replace(/"/g, "").trim().toLowerCase();
}

function parseSize(v: string | null): number | null {
  if (v === null || !/^\d+$/.test(v.trim())) return null;
  return Number(v);
}
