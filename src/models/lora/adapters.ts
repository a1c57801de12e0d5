// The LoRA set of a loaded model: `use([{name, scale}, …])` makes the UNet and text-encoder weights equal the
// base weights plus those LoRAs (each at its own scale), whatever set was merged before. Asking for the set
// already merged costs nothing; asking for none restores the base exactly (merge.ts). Files are read once
// and kept (parsed, f32) in a small cache bounded by bytes, keyed by path, size and mtime, so switching back
// and forth between sets reads nothing. A set is loaded and checked completely before any weight changes,
// so a bad file or name fails the request and leaves the current weights as they were.

import type { Gpu } from "../../gpu/device.ts";
import type { Weights } from "../weights.ts";
import type { UNetConfig } from "../unet/config.ts";
import type { ClipTextConfig } from "../clip/config.ts";
import { type LoraContents, LoraError, readLora } from "./file.ts";
import type { LoraLibrary } from "./library.ts";
import { WeightMerger, type WeightUpdate } from "./merge.ts";
import type { LoraRequest } from "./tags.ts";
import { type LoraComponent, TargetIndex } from "./targets.ts";

export interface LoraModels {
  unet?: { config: UNetConfig; weights: Weights };
  textEncoder?: { config: ClipTextConfig; weights: Weights };
}

export interface LoraAdaptersOptions {
  /** Unknown or unmatched keys: an error (default) or a warning. */
  strict?: boolean;
  /** Where warnings go (default: console.warn). */
  warn?: (message: string) => void;
  /** Parsed files kept for reuse (default 512 MiB of f32 matrices). */
  cacheBytes?: number;
}

/** A request's LoRA, with the request field that named it (for the 400 that names the field). */
export interface LoraUse extends LoraRequest {
  field?: "loras" | "prompt";
}

export interface LoraSwitch {
  /** Whether any weight changed. */
  changed: boolean;
  /** Wall time of the switch (file reads included), ms. */
  ms: number;
  /** Weights merged now, per component. */
  merged: Record<LoraComponent, number>;
  /** The set now merged (names summed, zero scales dropped). */
  active: LoraRequest[];
}

export class LoraAdapters {
  private readonly index: TargetIndex;
  private readonly mergers = new Map<LoraComponent, WeightMerger>();
  private readonly cache = new Map<string, LoraContents>();
  private current = "[]";
  private activeSet: LoraRequest[] = [];

  constructor(
    readonly gpu: Gpu,
    models: LoraModels,
    readonly library: LoraLibrary,
    private readonly options: LoraAdaptersOptions = {},
  ) {
    this.index = TargetIndex.of({ unet: models.unet?.config, textEncoder: models.textEncoder?.config });
    if (models.unet) this.mergers.set("unet", new WeightMerger(gpu, models.unet.weights));
    if (models.textEncoder) {
      this.mergers.set("text_encoder", new WeightMerger(gpu, models.textEncoder.weights));
    }
  }

  /** The set merged now. */
  get active(): readonly LoraRequest[] {
    return this.activeSet;
  }

  /** GPU bytes of base-weight backups held while a set is merged. */
  get bytes(): number {
    let total = 0;
    for (const m of this.mergers.values()) total += m.bytes;
    return total;
  }

  /**
   * Merges exactly `requested` (the same name twice adds its scales; scale 0 is no LoRA). Throws a LoraError
   * naming the request field for an unknown name or an unusable file, before any weight changes.
   */
  async use(requested: readonly LoraUse[]): Promise<LoraSwitch> {
    const t0 = performance.now();
    const byName = new Map<string, LoraUse>();
    for (const r of requested) {
      if (!Number.isFinite(r.scale)) throw new LoraError(`LoRA ${r.name}: scale must be a number`, r.field);
      const seen = byName.get(r.name);
      byName.set(r.name, seen ? { ...seen, scale: seen.scale + r.scale } : { ...r });
    }
    const wanted = [...byName.values()].filter((r) => r.scale !== 0).sort((
      a,
      b,
    ) => (a.name < b.name ? -1 : 1));
    const files = wanted.map((r) => {
      try {
        const path = this.library.resolve(r.name);
        const st = Deno.statSync(path);
        return { ...r, path, id: `${path}\0${st.size}\0${st.mtime?.getTime() ?? 0}` };
      } catch (e) {
        if (e instanceof LoraError) e.field = r.field ?? "loras";
        throw e;
      }
    });
    const key = JSON.stringify(files.map((f) => [f.id, f.scale]));
    const active = files.map(({ name, scale }) => ({ name, scale }));
    const merged: Record<LoraComponent, number> = { unet: 0, text_encoder: 0 };
    if (key === this.current) return { changed: false, ms: performance.now() - t0, merged, active };

    const contents: LoraContents[] = [];
    for (const f of files) contents.push(await this.load(f.path, f.id, f.name, f.field));
    const updates = new Map<LoraComponent, Map<string, WeightUpdate>>();
    contents.forEach((c, i) => {
      for (const m of c.modules) {
        const byWeight = updates.get(m.target.component) ?? new Map<string, WeightUpdate>();
        updates.set(m.target.component, byWeight);
        const u = byWeight.get(m.target.weight) ?? { kind: m.target.kind, terms: [] };
        byWeight.set(m.target.weight, u);
        u.terms.push({
          rank: m.rank,
          scale: Math.fround(files[i].scale * m.alphaScale),
          up: m.up,
          down: m.down,
        });
      }
    });
    this.current = "";
    try {
      for (const [component, merger] of this.mergers) {
        const u = updates.get(component) ?? new Map();
        await merger.apply(u);
        merged[component] = u.size;
      }
    } catch (e) {
      // The weights are in an unknown state: the next use() re-merges from the backups whatever it asks for.
      this.activeSet = [];
      throw e;
    }
    this.current = key;
    this.activeSet = active;
    return { changed: true, ms: performance.now() - t0, merged, active };
  }

  private async load(
    path: string,
    id: string,
    name: string,
    field?: "loras" | "prompt",
  ): Promise<LoraContents> {
    const hit = this.cache.get(id);
    if (hit) {
      this.cache.delete(id); // most recently used last
      this.cache.set(id, hit);
      return hit;
    }
    let c: LoraContents;
    try {
      c = await readLora(path, this.index, {
        strict: this.options.strict,
        warn: this.options.warn ?? ((m) => console.warn(m)),
        label: name,
      });
    } catch (e) {
      if (e instanceof LoraError) e.field = field ?? "loras";
      throw e;
    }
    this.cache.set(id, c);
    let total = 0;
    for (const v of this.cache.values()) total += v.bytes;
    const limit = this.options.cacheBytes ?? 512 * 2 ** 20;
    for (const [k, v] of this.cache) {
      if (total <= limit || k === id) break;
      this.cache.delete(k);
      total -= v.bytes;
    }
    return c;
  }

  /** Restores the base weights. */
  async clear(): Promise<void> {
    await this.use([]);
  }

  destroy(): void {
    for (const m of this.mergers.values()) m.destroy();
    this.mergers.clear();
    this.cache.clear();
  }
}
