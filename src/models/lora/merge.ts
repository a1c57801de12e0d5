// The merged state of one component's weights (UNet or text encoder) on the GPU.
//
// How the base weights come back exactly: the first time a set touches a weight, its packed operand (the
// only GPU copy: models/weights.ts frees the f16 original after packing) is copied once into a backup of
// the same kind and size. Every merge then writes live = f16(backup + Σ deltas) (ops/lora_merge.ts), so
// sets never compound, and a weight the next set leaves alone gets the backup copied back and the backup
// freed. Both directions are GPU copies of the same bytes, so the restored weight is bit-identical to a
// fresh load, and nothing is read from the checkpoint again.
//
// Why backups on the GPU rather than deltas subtracted back or copies on the host: f16(f16(W + Δ) − Δ) ≠ W in
// general, so reversible merging is not exact; a host copy would be as large and need an upload per switch
// (over PCIe on a real GPU), while a GPU copy costs a copy command. The price is GPU memory for the weights
// the active set touches, and only while a set is active: an SD 1.5 LoRA on the attention and
// feed-forward projections touches ~270 M UNet weights, 0.5 GiB of f16 backups (bench/models.ts prints it).

import type { Gpu } from "../../gpu/device.ts";
import type { GemmKind } from "../builder.ts";
import type { Weights } from "../weights.ts";
import {
  backupOf,
  copyOperand,
  destroyStore,
  loraMerge,
  type OperandStore,
  packDown,
  packedGeometry,
  type PackedWeight,
  storeBytes,
  storeOf,
  transposeUp,
} from "../../ops/lora_merge.ts";

/** One LoRA's low-rank pair for a weight, with the scale to merge it at (user scale · alpha / rank). */
export interface MergeTerm {
  rank: number;
  scale: number;
  /** [N, rank] */
  up: Float32Array;
  /** [rank, K], checkpoint K order */
  down: Float32Array;
}

/** What one weight should become: base + Σ terms. */
export interface WeightUpdate {
  kind: GemmKind;
  terms: MergeTerm[];
}

/** Host bytes of merge inputs uploaded per submission (bounds the temporary GPU buffers). */
const CHUNK_BYTES = 64 * 2 ** 20;

export class WeightMerger {
  private readonly backups = new Map<string, { packed: PackedWeight; base: OperandStore }>();

  constructor(readonly gpu: Gpu, readonly weights: Weights) {}

  /** GPU bytes of the backups held (the weights the active set touches). */
  get bytes(): number {
    let total = 0;
    for (const b of this.backups.values()) total += storeBytes(b.base);
    return total;
  }

  /** Names of the weights currently merged. */
  get touched(): string[] {
    return [...this.backups.keys()];
  }

  /**
   * Makes every weight in `updates` base + its terms and every other weight its base. Work is queued in
   * order (restores and backups, then merges) and awaited, so the next model call reads the new weights.
   */
  async apply(updates: ReadonlyMap<string, WeightUpdate>): Promise<void> {
    const { gpu } = this;
    const encoder = gpu.device.createCommandEncoder({ label: "lora restore/backup" });
    const dropped: OperandStore[] = [];
    for (const [name, b] of this.backups) {
      if (updates.has(name)) continue;
      copyOperand(encoder, b.base, storeOf(b.packed));
      dropped.push(b.base);
      this.backups.delete(name);
    }
    const jobs: { name: string; packed: PackedWeight; base: OperandStore; u: WeightUpdate }[] = [];
    for (const [name, u] of updates) {
      let b = this.backups.get(name);
      if (!b) {
        // Packing on first use (a plan may not have been built yet) submits its own dispatch first.
        const packed = u.kind === "conv" ? this.weights.conv(name) : this.weights.linear(name);
        b = { packed, base: backupOf(gpu, packed, `${name} base`) };
        copyOperand(encoder, storeOf(packed), b.base);
        this.backups.set(name, b);
      }
      jobs.push({ name, ...b, u });
    }
    gpu.device.queue.submit([encoder.finish()]);
    for (const s of dropped) destroyStore(s);

    let batch: ReturnType<typeof loraMerge>[] = [];
    let batchBytes = 0;
    const flush = () => {
      if (!batch.length) return;
      gpu.run(batch.map((m) => m.dispatch), "lora merge");
      for (const m of batch) for (const buf of m.buffers) buf.destroy(); // freed once the queue is done
      batch = [];
      batchBytes = 0;
    };
    for (const { name, packed, base, u } of jobs) {
      const { rows } = packedGeometry(packed);
      const ranks = u.terms.reduce((a, t) => a + t.rank, 0);
      const downs = u.terms.map((t) => packDown(packed, t.down, t.rank));
      const down = new Float32Array(downs.reduce((a, d) => a + d.length, 0));
      downs.reduce((at, d) => (down.set(d, at), at + d.length), 0);
      const scales = new Float32Array(ranks);
      u.terms.reduce((at, t) => (scales.fill(t.scale, at, at + t.rank), at + t.rank), 0);
      const m = loraMerge(gpu, {
        weight: packed,
        base,
        upT: transposeUp(rows, u.terms),
        down,
        scales,
        label: name,
      });
      batch.push(m);
      batchBytes += down.byteLength + ranks * rows * 4;
      if (batchBytes > CHUNK_BYTES) flush();
    }
    flush();
    await gpu.sync("lora merge");
  }

  /** Restores every weight and frees the backups. */
  async restore(): Promise<void> {
    await this.apply(new Map());
  }

  /** Frees the backups without restoring (the weights are being destroyed too). */
  destroy(): void {
    for (const b of this.backups.values()) destroyStore(b.base);
    this.backups.clear();
  }
}
