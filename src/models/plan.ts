// A recorded model call: the dispatches of one forward at one shape, replayed in one command buffer, and
// the activation buffers it owns. Plans are built once per shape and cached by the model.

import type { Dispatch, Gpu } from "../gpu/device.ts";
import type { ActDType } from "../gpu/pipelines.ts";

export class Plan {
  readonly dispatches: Dispatch[] = [];
  private readonly free = new Map<number, GPUBuffer[]>();
  private readonly owned: GPUBuffer[] = [];
  /** Bytes of activation buffers this plan holds. */
  bytes = 0;

  constructor(readonly gpu: Gpu, readonly act: ActDType) {}

  /** The size a buffer of `bytes` gets (a 16-byte multiple, at least 16). */
  static roundSize(bytes: number): number {
    return Math.max(16, Math.ceil(bytes / 16) * 16);
  }

  /** A storage buffer of at least `bytes` (16-byte multiple), reusing a released one of that size. */
  allocate(bytes: number, label = ""): GPUBuffer {
    const size = Plan.roundSize(bytes);
    const reused = this.free.get(size)?.pop();
    if (reused) return reused;
    const buffer = this.gpu.storage(size, label);
    this.owned.push(buffer);
    this.bytes += size;
    return buffer;
  }

  /**
   * Later allocations may reuse the buffer. Safe inside one compute pass: dispatches run in recording
   * order, so a later op that writes the buffer runs after every earlier op that read it.
   */
  release(buffer: GPUBuffer): void {
    const list = this.free.get(buffer.size) ?? [];
    if (!list.includes(buffer)) list.push(buffer);
    this.free.set(buffer.size, list);
  }

  add(dispatches: readonly Dispatch[]): void {
    for (const d of dispatches) this.dispatches.push(d);
  }

  run(label: string): void {
    this.gpu.run(this.dispatches, label);
  }

  /** `run`, stopping soon after `signal` aborts (see Gpu.runCancellable); without a signal, `run`. */
  async runCancellable(label: string, signal?: AbortSignal): Promise<void> {
    if (signal) await this.gpu.runCancellable(this.dispatches, label, signal);
    else this.run(label);
  }

  destroy(): void {
    for (const b of this.owned) b.destroy();
    this.owned.length = 0;
    this.free.clear();
    this.bytes = 0;
  }
}

/** A PlanCache key: the shape's dims joined by "x", then "p" for a plan with probes ("64x64p"). */
export function planKey(dims: readonly number[], probes = false): string {
  return `${dims.join("x")}${probes ? "p" : ""}`;
}

/** Built plans by shape key; every model keeps one per entry point. */
export class PlanCache<P extends { plan: Plan }> {
  private readonly plans = new Map<string, P>();

  get(key: string, build: () => P): P {
    let p = this.plans.get(key);
    if (!p) {
      p = build();
      this.plans.set(key, p);
    }
    return p;
  }

  /** Activation bytes held by every cached plan. */
  get bytes(): number {
    let total = 0;
    for (const p of this.plans.values()) total += p.plan.bytes;
    return total;
  }

  /** Releases one plan's activation buffers, if it was built. */
  delete(key: string): void {
    this.plans.get(key)?.plan.destroy();
    this.plans.delete(key);
  }

  /** Releases every plan's activation buffers (weights stay). */
  clear(): void {
    for (const p of this.plans.values()) p.plan.destroy();
    this.plans.clear();
  }
}
