// Forced GPU choices: one switch for every path the adapter would otherwise pick, so that each path can be
// run (and tested) on any adapter, and no untested path meets a new GPU first.
//
//   SD_GPU_FORCE="tiling=workgroup,tile=4x4,f16=off"          (environment; read by Gpu.create)
//   --gpu-choices "tiling=workgroup,tile=4x4,f16=off"         (serve, generate, bench, gpu-check, gpu:report;
//                                                              overrides the environment key by key)
//
// Keys (all optional; an absent key leaves the adapter's own choice, or the autotuner's):
//   tiling=texture|workgroup|registers   GEMM/conv kernels: operands in textures with register tiles (what
//                                        llvmpipe gets), workgroup-memory tiles (what every other adapter
//                                        gets), or register tiles on storage buffers (the fallback where
//                                        workgroup memory is too small)
//   tile=TMxTN[/WG]                      the GEMM/conv tile: rows × columns per invocation (workgroup tiling:
//                                        TM rows × 4 columns per thread, 256 threads), WG invocations
//   splitk=on|off                        linear/GEGLU as subgroup split-K (needs the subgroups feature)
//   accumulate=f32|f16                   GEMM/conv sums: f16 runs of 8 products added into f32 (f16
//                                        activations and shader-f16 only; forces the tiling like tile=), or
//                                        f32 only (keeps tuning, without the f16-accumulating candidates)
//   attention=QPIxKB/WG                  attention: queries per invocation, keys per softmax block, lanes
//   f16=on|off                           shader-f16 (off: f32 + unpack2x16float, the path of adapters without
//                                        it; on: fail unless shader-f16 works)
//   subgroups=on|off                     request the subgroups feature (off: as on an adapter without it)
//   tune=auto|off|retune                 the autotuner at load (off: table defaults; retune: ignore the cache)
// A forced tiling, tile, split-K or accumulate=f16 also disables tuning of GEMMs and convs; a forced
// attention tiling disables tuning of attention.
//
// Parsing lives here (layer 2); the ops turn the values into kernel tilings (src/ops/gemm.ts,
// src/ops/attention_tiling.ts) and the Gpu applies f16 and subgroups at device creation (device.ts).

export type TilingName = "texture" | "workgroup" | "registers";
export type TuneMode = "auto" | "off" | "retune";

export interface GpuChoices {
  tiling?: TilingName;
  tile?: { tm: number; tn: number; wg?: number };
  splitK?: boolean;
  accumulate?: "f32" | "f16";
  attention?: { qpi: number; kb: number; wg: number };
  f16?: boolean;
  subgroups?: boolean;
  tune?: TuneMode;
}

export const GPU_FORCE_ENV = "SD_GPU_FORCE";

export const GPU_CHOICES_HELP =
  `GPU choices (--gpu-choices SPEC, or the environment variable ${GPU_FORCE_ENV}=SPEC; the flag
  overrides the variable key by key). SPEC is comma-separated key=value:
    tiling=texture|workgroup|registers   GEMM/conv operands in textures (llvmpipe's path), workgroup-memory
                                         tiles (every other GPU's path), or register tiles on storage buffers
    tile=TMxTN[/WG]                      GEMM/conv tile, e.g. 16x16/8 (texture), 4x4 (workgroup: TM 1-8, TN 4)
    splitk=on|off                        linear layers as subgroup split-K reductions (needs subgroups)
    accumulate=f32|f16                   GEMM/conv sums in f32, or f16 runs of 8 added into f32 (f16 only)
    attention=QPIxKB/WG                  attention tile, e.g. 4x2/8
    f16=on|off                           shader-f16 (off: the f32 + unpack2x16float path)
    subgroups=on|off                     use the subgroups feature where the adapter has it
    tune=auto|off|retune                 tile autotuning at load (results cached per adapter and driver)
  e.g. ${GPU_FORCE_ENV}=tiling=workgroup,f16=off`;

const KEYS = ["tiling", "tile", "splitk", "accumulate", "attention", "f16", "subgroups", "tune"] as const;

function onOff(v: string, key: string, where: string): boolean {
  if (v === "on" || v === "true" || v === "1") return true;
  if (v === "off" || v === "false" || v === "0") return false;
  throw new Error(`${where}: ${key} must be on or off, got "${v}"`);
}

function positive(v: string, what: string, where: string, max: number): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > max) throw new Error(`${where}: ${what} must be 1-${max}, got "${v}"`);
  return n;
}

/** Parses a choices spec; `where` names its source in errors (the flag or the variable). */
export function parseGpuChoices(spec: string, where = GPU_FORCE_ENV): GpuChoices {
  const out: GpuChoices = {};
  for (const part of spec.split(",").map((s) => s.trim()).filter(Boolean)) {
    const eq = part.indexOf("=");
    if (eq < 1) throw new Error(`${where}: "${part}" is not key=value (keys: ${KEYS.join(", ")})`);
    const key = part.slice(0, eq).trim().toLowerCase();
    const v = part.slice(eq + 1).trim().toLowerCase();
    switch (key) {
      case "tiling": {
        // The ops' internal names (shared, buffer) are accepted too.
        const alias: Record<string, TilingName> = {
          texture: "texture",
          workgroup: "workgroup",
          shared: "workgroup",
          registers: "registers",
          buffer: "registers",
        };
        if (!alias[v]) {
          throw new Error(`${where}: tiling must be texture, workgroup or registers, got "${v}"`);
        }
        out.tiling = alias[v];
        break;
      }
      case "tile": {
        const m = v.match(/^(\d+)x(\d+)(?:\/(\d+))?$/);
        if (!m) throw new Error(`${where}: tile must be TMxTN or TMxTN/WG (e.g. 16x16/8), got "${v}"`);
        const tile: GpuChoices["tile"] = {
          tm: positive(m[1], "tile rows", where, 64),
          tn: positive(m[2], "tile columns", where, 64),
        };
        if (m[3] !== undefined) tile.wg = positive(m[3], "tile workgroup size", where, 256);
        out.tile = tile;
        break;
      }
      case "splitk":
        out.splitK = onOff(v, key, where);
        break;
      case "accumulate":
        if (v !== "f32" && v !== "f16") {
          throw new Error(`${where}: accumulate must be f32 or f16, got "${v}"`);
        }
        out.accumulate = v;
        break;
      case "attention": {
        const m = v.match(/^(\d+)x(\d+)\/(\d+)$/);
        if (!m) throw new Error(`${where}: attention must be QPIxKB/WG (e.g. 4x2/8), got "${v}"`);
        out.attention = {
          qpi: positive(m[1], "attention queries per invocation", where, 32),
          kb: positive(m[2], "attention key block", where, 8),
          wg: positive(m[3], "attention workgroup size", where, 256),
        };
        break;
      }
      case "f16":
        out.f16 = onOff(v, key, where);
        break;
      case "subgroups":
        out.subgroups = onOff(v, key, where);
        break;
      case "tune":
        if (v !== "auto" && v !== "off" && v !== "retune") {
          throw new Error(`${where}: tune must be auto, off or retune, got "${v}"`);
        }
        out.tune = v;
        break;
      default:
        throw new Error(`${where}: unknown key "${key}" (keys: ${KEYS.join(", ")})`);
    }
  }
  return out;
}

/** The choices of the environment variable ({} when unset or unreadable). */
export function gpuChoicesFromEnv(): GpuChoices {
  let spec: string | undefined;
  try {
    spec = Deno.env.get(GPU_FORCE_ENV);
  } catch {
    return {}; // no env permission: nothing forced
  }
  return spec ? parseGpuChoices(spec, GPU_FORCE_ENV) : {};
}

/** The environment's choices with a flag's spec on top (the flag wins key by key). */
export function resolveGpuChoices(flag: string | undefined, flagName = "--gpu-choices"): GpuChoices {
  const env = gpuChoicesFromEnv();
  return flag === undefined ? env : { ...env, ...parseGpuChoices(flag, flagName) };
}

/** The canonical spec of a choices object ("" when nothing is forced): reports, cache keys, logs. */
export function formatGpuChoices(c: GpuChoices): string {
  const parts: string[] = [];
  if (c.tiling) parts.push(`tiling=${c.tiling}`);
  if (c.tile) parts.push(`tile=${c.tile.tm}x${c.tile.tn}${c.tile.wg ? `/${c.tile.wg}` : ""}`);
  if (c.splitK !== undefined) parts.push(`splitk=${c.splitK ? "on" : "off"}`);
  if (c.accumulate) parts.push(`accumulate=${c.accumulate}`);
  if (c.attention) parts.push(`attention=${c.attention.qpi}x${c.attention.kb}/${c.attention.wg}`);
  if (c.f16 !== undefined) parts.push(`f16=${c.f16 ? "on" : "off"}`);
  if (c.subgroups !== undefined) parts.push(`subgroups=${c.subgroups ? "on" : "off"}`);
  if (c.tune) parts.push(`tune=${c.tune}`);
  return parts.join(",");
}
