// The LoRAs a run may name: the `.safetensors` files of one folder (`--lora-dir`, LORA_DIR), each named by
// its file stem, plus files given one by one (`--lora FILE`, also named by stem; they shadow the folder).
// A name resolves only inside the folder: one with a path separator, `..` or a leading dot is refused, so a
// request can never reach another file. The HTTP side checks names with `has` (synchronous: request
// validation) and lists them with `list`; the engine worker resolves them to paths with `resolve`.

import { basename, join } from "node:path";
import { SafetensorsFile } from "../../weights/safetensors.ts";
import { LoraError } from "./file.ts";
import { parseKey } from "./keys.ts";

export interface LoraInfo {
  name: string;
  /** File size in bytes. */
  size: number;
  /** Tensors in the file. */
  keys: number;
  /** Key family: kohya, diffusers, mixed, or unknown (no LoRA key this engine reads). */
  format: "kohya" | "diffusers" | "mixed" | "unknown";
}

/** What request validation needs: whether a name is there, and the listing for GET /v1/loras. */
export interface LoraCatalog {
  readonly dir?: string;
  has(name: string): boolean;
  list(): Promise<LoraInfo[]>;
}

const EXTENSION = ".safetensors";

/** Why `name` cannot name a LoRA, or null. */
export function loraNameProblem(name: string): string | null {
  if (!name) return "a LoRA name must not be empty";
  if (/[/\\]/.test(name) || name.includes("..") || name.startsWith(".") || name.includes("\0")) {
    return `LoRA name ${JSON.stringify(name)} must be a file stem, without path separators or ".."`;
  }
  return null;
}

export class LoraLibrary implements LoraCatalog {
  private readonly files = new Map<string, string>();

  constructor(readonly dir?: string, files: readonly string[] = []) {
    for (const path of files) {
      if (!path.endsWith(EXTENSION)) throw new LoraError(`LoRA file ${path}: not a ${EXTENSION} file`);
      this.files.set(basename(path, EXTENSION), path);
    }
  }

  /** The path of a named LoRA; throws a LoraError naming it when the name is malformed or not there. */
  resolve(name: string): string {
    const problem = loraNameProblem(name);
    if (problem) throw new LoraError(problem);
    const given = this.files.get(name);
    if (given) return given;
    if (!this.dir) {
      throw new LoraError(`unknown LoRA ${JSON.stringify(name)}: no LoRA folder is configured (--lora-dir)`);
    }
    const path = join(this.dir, name + EXTENSION);
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch { /* reported below */ }
    throw new LoraError(`unknown LoRA ${JSON.stringify(name)}: no ${name}${EXTENSION} in the LoRA folder`);
  }

  has(name: string): boolean {
    try {
      this.resolve(name);
      return true;
    } catch {
      return false;
    }
  }

  /** Every LoRA by name, sorted; files that are not valid safetensors are left out. */
  async list(): Promise<LoraInfo[]> {
    const paths = new Map<string, string>();
    if (this.dir) {
      for await (const e of Deno.readDir(this.dir)) {
        const stem = basename(e.name, EXTENSION);
        if (e.isFile && e.name.endsWith(EXTENSION) && !loraNameProblem(stem)) {
          paths.set(stem, join(this.dir, e.name));
        }
      }
    }
    for (const [name, path] of this.files) paths.set(name, path);
    const out: LoraInfo[] = [];
    for (const [name, path] of [...paths].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      try {
        using f = await SafetensorsFile.open(path);
        const names = f.names();
        const formats = new Set(names.map((n) => parseKey(n)?.format).filter((x) => x !== undefined));
        const format = formats.size === 0 ? "unknown" : formats.size > 1 ? "mixed" : [...formats][0]!;
        out.push({ name, size: (await Deno.stat(path)).size, keys: names.length, format });
      } catch {
        // Not a readable safetensors file: not a LoRA this server can use.
      }
    }
    return out;
  }
}
