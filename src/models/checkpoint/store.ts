// Tensor storage of a checkpoint: one safetensors file or a sharded set (*.safetensors.index.json),
// addressed by the file's own keys.

import { readJsonFile } from "../../util/json.ts";
import { SafetensorsFile, type TensorInfo } from "../../weights/safetensors.ts";

export class TensorStore {
  private constructor(
    readonly description: string,
    private readonly files: SafetensorsFile[],
    private readonly byKey: Map<string, SafetensorsFile>,
  ) {}

  static async openFile(path: string): Promise<TensorStore> {
    const f = await SafetensorsFile.open(path);
    return new TensorStore(path, [f], new Map(f.names().map((n) => [n, f])));
  }

  /** A sharded checkpoint: `{"weight_map": {name: "shard file"}}` next to the shards. */
  static async openIndex(indexPath: string): Promise<TensorStore> {
    const index = await readJsonFile(indexPath) as { weight_map?: Record<string, string> };
    if (!index || typeof index.weight_map !== "object") throw new Error(`${indexPath}: no weight_map`);
    const dir = dirname(indexPath);
    const files = new Map<string, SafetensorsFile>();
    const byKey = new Map<string, SafetensorsFile>();
    try {
      for (const shard of new Set(Object.values(index.weight_map))) {
        const f = await SafetensorsFile.open(`${dir}/${shard}`);
        files.set(shard, f);
        for (const n of f.names()) byKey.set(n, f);
      }
    } catch (e) {
      for (const f of files.values()) f.close();
      throw e;
    }
    for (const name of Object.keys(index.weight_map)) {
      if (!byKey.has(name)) throw new Error(`${indexPath}: "${name}" is listed but absent from its shard`);
    }
    return new TensorStore(indexPath, [...files.values()], byKey);
  }

  keys(): string[] {
    return [...this.byKey.keys()];
  }

  has(key: string): boolean {
    return this.byKey.has(key);
  }

  info(key: string): TensorInfo {
    const f = this.byKey.get(key);
    if (!f) throw new Error(`${this.description}: no tensor "${key}"`);
    return f.info(key);
  }

  file(key: string): SafetensorsFile {
    const f = this.byKey.get(key);
    if (!f) throw new Error(`${this.description}: no tensor "${key}"`);
    return f;
  }

  get metadata(): Record<string, string> {
    return this.files[0]?.metadata ?? {};
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : path.slice(0, i);
}
