// Reading one LoRA safetensors file against a model's targets: every key is accounted for (keys.ts), every
// pair's shapes are checked against the declared weight, and the matrices are read as f32 (F16, BF16 and F32
// files alike) for the merge. Shapes (W the target weight, r the rank):
//   Linear W [N, K]          down [r, K] (or [r, K, 1, 1]),   up [N, r] (or [N, r, 1, 1])
//   conv W [N, Cin, kh, kw]  down [r, Cin, kh, kw] (LoCon),   up [N, r, 1, 1]
// The merge adds scale · (alpha / r) · up @ down; alpha defaults to r (kohya's convention; diffusers/PEFT files
// fold alpha / r into lora_B and carry no alpha).

import { SafetensorsFile } from "../../weights/safetensors.ts";
import { type KeyGroup, type LoraFormat, matchKeys } from "./keys.ts";
import type { LoraTarget, TargetIndex } from "./targets.ts";

/** A LoRA problem a request caused: `field` is the request field that named the LoRA. */
export class LoraError extends Error {
  constructor(message: string, public field: "loras" | "prompt" = "loras") {
    super(message);
    this.name = "LoraError";
  }
}

/** One target's low-rank pair. */
export interface LoraModule {
  target: LoraTarget;
  rank: number;
  /** alpha / rank. */
  alphaScale: number;
  /** [N, rank] row-major. */
  up: Float32Array;
  /** [rank, K] row-major, K in checkpoint order (Cin-major for convs). */
  down: Float32Array;
}

export interface LoraContents {
  path: string;
  format: LoraFormat | "mixed";
  modules: LoraModule[];
  /** Keys not applied, already reported through `warn` (lenient mode, or components not loaded). */
  ignored: string[];
  /** Host bytes of the matrices (for the cache bound). */
  bytes: number;
}

export interface ReadLoraOptions {
  /** Unknown or unmatched keys are an error (default) or, when false, a warning. */
  strict?: boolean;
  warn?: (message: string) => void;
  /** How the LoRA is called in messages (its name in the LoRA folder). */
  label?: string;
}

/** `a, b, c and 12 more` */
function listKeys(keys: readonly string[], most = 8): string {
  const shown = keys.slice(0, most).join(", ");
  return keys.length > most ? `${shown} and ${keys.length - most} more` : shown;
}

/** Dims without trailing ones: [K, 1, 1] and [K] describe the same Linear input. */
function squeeze(dims: readonly number[]): string {
  const d = [...dims];
  while (d.length > 1 && d[d.length - 1] === 1) d.pop();
  return d.join(",");
}

export async function readLora(
  path: string,
  index: TargetIndex,
  o: ReadLoraOptions = {},
): Promise<LoraContents> {
  const label = o.label ?? path;
  let file: SafetensorsFile;
  try {
    file = await SafetensorsFile.open(path);
  } catch (e) {
    throw new LoraError(`LoRA ${label}: ${(e as Error).message}`);
  }
  try {
    const match = matchKeys(file.names(), index);
    const errors = [...match.errors];
    const modules: LoraModule[] = [];
    let bytes = 0;
    for (const g of match.groups) {
      const problem = shapeProblem(file, g);
      if (problem) {
        errors.push(problem);
        continue;
      }
      const [rank] = file.info(g.down!).shape;
      const alpha = g.alpha ? (await file.readF32(g.alpha))[0] : rank;
      if (!Number.isFinite(alpha)) errors.push(`${g.alpha}: alpha is ${alpha}`);
      const up = await file.readF32(g.up!);
      const down = await file.readF32(g.down!);
      bytes += up.byteLength + down.byteLength;
      modules.push({ target: g.target, rank, alphaScale: alpha / rank, up, down });
    }
    if (errors.length) throw new LoraError(`LoRA ${label}: ${listKeys(errors, 4)}`);
    const lenient = o.strict === false;
    const bad = [
      match.unmatched.length
        ? `${match.unmatched.length} keys match nothing in this model: ${listKeys(match.unmatched)}`
        : "",
      match.unknown.length
        ? `${match.unknown.length} keys are no LoRA form this engine reads: ${listKeys(match.unknown)}`
        : "",
    ].filter(Boolean).join("; ");
    if (bad && !lenient) {
      throw new LoraError(`LoRA ${label}: ${bad} (--lora-strict=false skips them with a warning)`);
    }
    if (bad) o.warn?.(`LoRA ${label}: skipped ${bad}`);
    if (match.skipped.length) {
      o.warn?.(
        `LoRA ${label}: ${match.skipped.length} keys are for a component not loaded here, not applied: ` +
          listKeys(match.skipped),
      );
    }
    if (!modules.length) throw new LoraError(`LoRA ${label}: no key applies to this model`);
    const formats = new Set(match.groups.map((g) => g.format));
    return {
      path,
      format: formats.size === 1 ? [...formats][0] : "mixed",
      modules,
      ignored: [...match.unmatched, ...match.unknown, ...match.skipped],
      bytes,
    };
  } finally {
    file.close();
  }
}

/** Why a pair's shapes cannot update its target, or null. */
function shapeProblem(file: SafetensorsFile, g: KeyGroup): string | null {
  const down = file.info(g.down!);
  const up = file.info(g.up!);
  const w = g.target.shape;
  const rank = down.shape[0];
  const what = `${g.down} ${JSON.stringify(down.shape)} / ${g.up} ${
    JSON.stringify(up.shape)
  } for ${g.target.weight} ${JSON.stringify(w)}`;
  for (const t of [down, up]) {
    if (t.dtype !== "F16" && t.dtype !== "BF16" && t.dtype !== "F32") return `${what}: dtype ${t.dtype}`;
  }
  if (!(rank >= 1) || down.shape.length < 2) return `${what}: down must be [rank, …]`;
  if (squeeze(down.shape.slice(1)) !== squeeze(w.slice(1))) {
    return `${what}: down does not fit the weight's input`;
  }
  if (up.shape[0] !== w[0] || up.shape[1] !== rank || up.shape.slice(2).some((d) => d !== 1)) {
    return `${what}: up must be [${w[0]}, ${rank}${w.length === 4 ? ", 1, 1" : ""}]`;
  }
  if (g.alpha) {
    const a = file.info(g.alpha);
    if (a.shape.reduce((x, y) => x * y, 1) !== 1) return `${g.alpha}: alpha must be a scalar`;
  }
  return null;
}
