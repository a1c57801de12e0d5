// Where autotuning results live between starts: one JSON file per adapter and driver in the user's cache
// folder ($XDG_CACHE_HOME/sd-webgpu, else ~/.cache/sd-webgpu). The file name is a hash of everything that
// can change a kernel's speed or meaning: the adapter's identity, the Deno version (its wgpu), the kernel
// sources and whether f16 is in use; a new driver or a changed shader therefore starts a new file.

import type { Gpu } from "./device.ts";

export interface TuneCacheKey {
  adapter: Gpu["report"]["adapter"];
  deno: string;
  /** SHA-256 of the kernel sources and their code generators. */
  sources: string;
  f16: boolean;
  subgroupSize: number | null;
}

export interface TuneCacheFile<E> {
  version: 1;
  key: TuneCacheKey;
  entries: Record<string, E>;
}

/** The cache folder, or null where neither XDG_CACHE_HOME nor HOME is known (then nothing is cached). */
export function tuneCacheDir(): string | null {
  try {
    const xdg = Deno.env.get("XDG_CACHE_HOME");
    if (xdg) return `${xdg}/sd-webgpu`;
    const home = Deno.env.get("HOME");
    return home ? `${home}/.cache/sd-webgpu` : null;
  } catch {
    return null;
  }
}

export async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The cache file of this key (in `dir`, default tuneCacheDir()), or null when there is no cache folder. */
export async function tuneCachePath(
  key: TuneCacheKey,
  dir: string | null = tuneCacheDir(),
): Promise<string | null> {
  if (!dir) return null;
  return `${dir}/tune-${(await sha256Hex(JSON.stringify(key))).slice(0, 16)}.json`;
}

/** The entries stored under this key; {} when the file is missing, unreadable or for another key. */
export async function readTuneCache<E>(path: string | null, key: TuneCacheKey): Promise<Record<string, E>> {
  if (!path) return {};
  try {
    const file = JSON.parse(await Deno.readTextFile(path)) as TuneCacheFile<E>;
    if (file.version !== 1 || JSON.stringify(file.key) !== JSON.stringify(key)) return {};
    return file.entries ?? {};
  } catch {
    return {};
  }
}

/** Writes the entries atomically (temp file + rename); a failure only loses the cache, so it is reported. */
export async function writeTuneCache<E>(
  path: string | null,
  key: TuneCacheKey,
  entries: Record<string, E>,
): Promise<string | null> {
  if (!path) return null;
  try {
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    const file: TuneCacheFile<E> = { version: 1, key, entries };
    const tmp = `${path}.${Deno.pid}.tmp`;
    await Deno.writeTextFile(tmp, JSON.stringify(file, null, 1) + "\n");
    await Deno.rename(tmp, path);
    return null;
  } catch (e) {
    return `could not write the tuning cache ${path}: ${e instanceof Error ? e.message : e}`;
  }
}
