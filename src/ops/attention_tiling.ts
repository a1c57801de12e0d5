// Attention tiling: the default per head dim, validation of a forced or given one, and the order in which
// an attention call picks it (override, forced choice, tuned, default).

import type { Gpu } from "../gpu/device.ts";
import { tunedChoice } from "./tuning.ts";

/** Queries per invocation, keys per softmax block, invocations per workgroup. */
export interface AttentionTiling {
  qpi: number;
  kb: number;
  wg: number;
}

/**
 * Default tiling per head dim: QPI queries per invocation (a register budget of ~80 vec4 of queries; more
 * makes lavapipe's compile time explode), KB keys per softmax block, WG invocations per workgroup (one SIMD
 * row). The autotuner may pick another per shape (autotune.ts), a forced `attention=` choice replaces it.
 */
export function attentionTiling(headDim: number): AttentionTiling {
  const dv = Math.ceil(headDim / 4);
  const qpi = Math.max(1, Math.min(16, Math.floor(80 / dv)));
  const kb = qpi * dv <= 40 ? 2 : 1;
  return { qpi, kb, wg: 8 };
}

function checkAttentionTiling(t: AttentionTiling): AttentionTiling {
  const ok = (v: number, max: number) => Number.isInteger(v) && v >= 1 && v <= max;
  if (!ok(t.qpi, 32) || !ok(t.kb, 8) || !ok(t.wg, 256)) {
    throw new Error(`attention tiling: qpi 1-32, kb 1-8, wg 1-256, got ${JSON.stringify(t)}`);
  }
  return { qpi: t.qpi, kb: t.kb, wg: t.wg };
}

/** The tiling one attention call uses: the override, else the forced choice, else tuned, else default. */
export function resolveAttentionTiling(
  gpu: Gpu,
  headDim: number,
  key: string,
  override?: AttentionTiling,
): AttentionTiling {
  if (override) return checkAttentionTiling(override);
  if (gpu.choices.attention) return checkAttentionTiling(gpu.choices.attention);
  return tunedChoice<AttentionTiling>(gpu, key) ?? attentionTiling(headDim);
}
