// Autotuning at load: for the GEMM, conv and attention shapes of the loaded model, time a few candidate
// tilings (tune_candidates.ts) on the adapter in use and keep the fastest per shape (tuning.ts), within a
// time budget. Results are cached per adapter and driver (gpu/tune_cache.ts) and reused at the next start;
// `retune` measures again.
//
// Bounded time: shapes are tuned heaviest first (FLOPs × occurrences) until the budget is spent; the rest
// keep the adapter's default and are tuned at a later start (the cache grows). A candidate starts only while
// the budget has room for another of the default's cost, so a pass overruns it little. Each candidate runs once after a warm-up
// run on a software adapter and best-of-3 elsewhere, on the real shape with its rows capped (256 rows on
// software adapters, where one run of a 512-channel 3×3 conv over 1024 rows measured 0.6 s; 32768
// elsewhere); the key stays the real shape's. Timing is wall time of submit + onSubmittedWorkDone (see
// timeRun).
//
// Correctness first: a candidate that fails to compile or run is skipped, and one whose output differs
// from the default candidate's (beyond summation-order rounding) is rejected; every listed candidate also
// passes tests/ops_tuning_test.ts against the CPU reference.

import type { Dispatch, Gpu } from "../gpu/device.ts";
import { readTensor } from "../gpu/tensor.ts";
import { SHADERS } from "../gpu/shaders.ts";
import { relError } from "../util/rel_error.ts";
import {
  readTuneCache,
  sha256Hex,
  tuneCacheDir,
  type TuneCacheKey,
  tuneCachePath,
  writeTuneCache,
} from "../gpu/tune_cache.ts";
import gemmTileSource from "./gemm_tile.ts" with { type: "text" };
import attentionSource from "./attention.ts" with { type: "text" };
import attentionPackSource from "./attention_pack.ts" with { type: "text" };
import attentionTilingSource from "./attention_tiling.ts" with { type: "text" };
import candidatesSource from "./tune_candidates.ts" with { type: "text" };
import tuningSource from "./tuning.ts" with { type: "text" };
import { gemmTiling, storageOf } from "./gemm.ts";
import { type Candidate, candidatesFor, opInputs } from "./tune_candidates.ts";
import { opFlops, opKey, type OpShape, setTunedChoice } from "./tuning.ts";

export interface TuneOptions {
  /** Wall-clock budget for measuring (default: 3 s on software adapters, 30 s elsewhere). */
  budgetMs?: number;
  /** Ignore cached results and measure again. */
  retune?: boolean;
  /** Cache folder (default: tuneCacheDir(); null: no cache). */
  cacheDir?: string | null;
  /** Rows a timed shape is capped at (default: 1024 on software adapters, 32768 elsewhere). */
  maxRows?: number;
  log?: (line: string) => void;
}

/** How much faster than the default (or the best so far) a candidate must be to be picked. */
const MARGIN = 0.1;

/** One shape's result, as cached. */
export interface TuneEntry {
  /** The chosen candidate's label and tiling. */
  pick: string;
  choice: unknown;
  /** Milliseconds per candidate label; a string says why it was skipped or rejected. */
  ms: Record<string, number | string>;
  /** The budget ran out before every candidate was measured: the pick is among those that were. */
  partial?: boolean;
}

export interface TuneSummary {
  /** Why nothing was tuned (forced choices, tune=off), if so. */
  disabled?: string;
  cacheFile: string | null;
  /** Shapes whose choice came from the cache. */
  fromCache: number;
  /** Shapes measured now. */
  measured: number;
  /** Shapes left at the default (the budget ran out). */
  untuned: number;
  /** Shapes whose pick is not the default. */
  changed: number;
  /** Candidates skipped (did not compile or run) or rejected (wrong output). */
  skipped: number;
  /** Wall time of the pass, and the part of it the plans would have spent anyway: the default
   * candidates' compilation and first run (not charged against the budget). */
  ms: number;
  prepaidMs: number;
  entries: Record<string, TuneEntry>;
  warning?: string;
}

/** Key of the tuning cache: adapter, Deno (its wgpu), kernel sources and generators, f16, subgroups. */
export async function tuneCacheKey(gpu: Gpu): Promise<TuneCacheKey> {
  const sources = Object.keys(SHADERS).sort().map((k) => SHADERS[k]).join("\n") + gemmTileSource +
    attentionSource + attentionPackSource + attentionTilingSource + candidatesSource + tuningSource;
  return {
    adapter: gpu.report.adapter,
    deno: Deno.version.deno,
    sources: await sha256Hex(sources),
    f16: gpu.f16,
    subgroupSize: gpu.report.subgroupSize,
  };
}

/** An op of a model and how many times one generation runs it (a UNet op: once per step). */
export interface TunedOp {
  shape: OpShape;
  calls: number;
}

/**
 * The distinct keys' shapes, heaviest first (FLOPs of one call × how often a generation runs it, summed
 * over the key). A key's shapes differ only in rows (batch); the heaviest one is timed.
 */
export function rankShapes(ops: readonly TunedOp[]): OpShape[] {
  const by = new Map<string, { shape: OpShape; weight: number }>();
  for (const { shape, calls } of ops) {
    const key = opKey(shape);
    const e = by.get(key) ?? { shape, weight: 0 };
    if (opFlops(shape) > opFlops(e.shape)) e.shape = shape;
    e.weight += opFlops(shape) * calls;
    by.set(key, e);
  }
  return [...by.values()].sort((a, b) => b.weight - a.weight).map((e) => e.shape);
}

/** The same op with its rows capped at `maxRows` (timing proxy; the key stays the real shape's). */
function capped(s: OpShape, maxRows: number): OpShape {
  if (s.kind === "linear") return s.m <= maxRows ? s : { ...s, m: maxRows };
  if (s.kind === "attention") {
    // Queries and keys both: the key loop is each invocation's work (4096 keys × 256 queries × 8 heads of
    // D = 40 measured 0.5 s on lavapipe).
    if (s.batch * s.nq <= maxRows && s.nk <= 4 * maxRows) return s;
    return { ...s, batch: 1, nq: Math.min(s.nq, maxRows), nk: Math.min(s.nk, 4 * maxRows) };
  }
  if (s.b * s.h * s.w <= maxRows) return s;
  return { ...s, b: 1, h: Math.min(s.h, Math.max(s.kh, Math.ceil(maxRows / s.w) * s.stride)) };
}

/**
 * Milliseconds of one run of the dispatches, by wall time of submit + onSubmittedWorkDone, after a warm-up
 * run (lavapipe compiles a kernel at its first dispatch: a conv's first run measured 1.3 s, the next
 * 0.6 s); also the warm-up's wall time. With rounds > 1, the best of `rounds` submits of enough copies to
 * last ~5 ms each (at most 100), so the per-submit overhead is amortised. Not timestamp queries: on
 * lavapipe they measured a 0.5-GFLOP conv at 0.085 ms in one run of the tuner (wall time: ~30 ms).
 */
async function timeRun(
  gpu: Gpu,
  dispatches: Dispatch[],
  rounds: number,
): Promise<{ ms: number; warmupMs: number }> {
  const wall = async (ds: Dispatch[]) => {
    const t0 = performance.now();
    gpu.run(ds, "autotune");
    await gpu.sync("autotune");
    return performance.now() - t0;
  };
  const w0 = performance.now();
  await gpu.scoped("autotune warm-up", () => gpu.run(dispatches, "autotune warm-up"));
  await gpu.sync("autotune");
  const warmupMs = performance.now() - w0;
  const once = await wall(dispatches);
  if (rounds <= 1) return { ms: once, warmupMs };
  const reps = Math.min(100, Math.max(1, Math.ceil(5 / Math.max(once, 0.01))));
  const batch = Array.from({ length: reps }, () => dispatches).flat();
  let best = Infinity;
  for (let r = 0; r < rounds; r++) best = Math.min(best, (await wall(batch)) / reps);
  return { ms: best, warmupMs };
}

/** The time a pass may still spend. The default candidates' compilation and first run are not charged:
 * the plans would compile the same pipelines (same shader and defines) at their first build anyway. */
interface Budget {
  deadline: number;
  prepaidMs: number;
}

interface ShapeResult {
  entry: TuneEntry;
  skipped: number;
}

/**
 * Measures the candidates of one shape in order, the default first. Returns null when not even the default
 * and one other were measured before the deadline; a result with `partial` when some were not.
 */
async function tuneShape(
  gpu: Gpu,
  real: OpShape,
  budget: Budget,
  o: { maxRows: number; rounds: number; storage: "texture" | "buffer"; log?: (line: string) => void },
): Promise<ShapeResult | null> {
  const shape = capped(real, o.maxRows);
  const candidates = candidatesFor(gpu, real);
  const inputs = opInputs(gpu, shape, o.storage);
  const ms: Record<string, number | string> = {};
  let reference: Float32Array | null = null;
  let best: Candidate | null = null;
  let bestMs = Infinity;
  const built = new Map<Candidate, Dispatch[]>();
  let skipped = 0;
  let timed = 0;
  let partial = false;
  // Summation order only: f32 outputs agree to ~1e-6, f16 outputs to an f16 rounding step or two.
  const tol = shape.act === "f32" ? 1e-4 : 4e-3;
  try {
    for (const c of candidates) {
      if (performance.now() > budget.deadline) {
        partial = true;
        break;
      }
      const started = performance.now();
      try {
        const dispatches = await gpu.scoped(`autotune ${c.label}`, () => inputs.build(c));
        for (const d of dispatches) {
          if (await gpu.pipelines.failedToCompile(d.pipeline)) throw new Error("did not compile");
        }
        const buildMs = performance.now() - started;
        const { ms: t, warmupMs } = await timeRun(gpu, dispatches, o.rounds);
        const got = await readTensor(gpu, inputs.out);
        if (reference === null) {
          reference = got;
          budget.deadline += buildMs + warmupMs;
          budget.prepaidMs += buildMs + warmupMs;
        } else {
          const diff = relError(got, reference);
          if (!(diff <= tol)) {
            ms[c.label] = `rejected: output differs from the default's by ${diff.toExponential(2)}`;
            skipped++;
            continue;
          }
        }
        ms[c.label] = +t.toFixed(3);
        built.set(c, dispatches);
        timed++;
        o.log?.(
          `autotune ${opKey(real)}: ${c.label} ${t.toFixed(2)} ms (${
            (performance.now() - started).toFixed(0)
          } ms)`,
        );
        // Another candidate replaces the default only when clearly faster: timings of one run on a shared
        // machine vary by several percent.
        if (best === null || t < bestMs * (1 - MARGIN)) [best, bestMs] = [c, t];
      } catch (e) {
        ms[c.label] = `skipped: ${(e instanceof Error ? e.message : String(e)).split("\n")[0].slice(0, 160)}`;
        skipped++;
        if (reference === null) return { entry: { pick: "default", choice: null, ms }, skipped };
      }
    }
    // Confirmation: a non-default winner is timed against the default once more, alternately, and must
    // win again. On a shared 2-core machine one run varies by ±50 % (the same conv: 33 ms, then 54 ms).
    const first = candidates[0];
    if (best && best !== first && built.has(first) && performance.now() < budget.deadline) {
      const again = async (c: Candidate) => (await timeRun(gpu, built.get(c)!, o.rounds)).ms;
      const d = await again(first);
      const b = await again(best);
      ms[`${best.label} (confirm)`] = +b.toFixed(3);
      ms[`${first.label} (confirm)`] = +d.toFixed(3);
      if (!(b < d * (1 - MARGIN))) best = first;
    }
  } finally {
    inputs.destroy();
  }
  if (partial && timed < 2) return null;
  const entry: TuneEntry = best && best !== candidates[0]
    ? { pick: best.label, choice: best.tiling, ms }
    : { pick: candidates[0].label, choice: null, ms };
  if (partial) entry.partial = true;
  return { entry, skipped };
}

/**
 * Tunes the shapes of `ops` (a model's recorded ops) on `gpu` and installs the picks (tuning.ts), from the
 * cache where it has them. GEMM/conv shapes are not tuned when the tiling is forced, attention shapes when
 * the attention tiling is forced; nothing is when `tune=off` is forced. A cached partial entry (the budget
 * ran out inside its shape) applies its pick and is measured again, after every untuned shape.
 */
export async function autotune(gpu: Gpu, ops: readonly TunedOp[], o: TuneOptions = {}): Promise<TuneSummary> {
  const t0 = performance.now();
  const summary: TuneSummary = {
    cacheFile: null,
    fromCache: 0,
    measured: 0,
    untuned: 0,
    changed: 0,
    skipped: 0,
    ms: 0,
    prepaidMs: 0,
    entries: {},
  };
  if (gpu.choices.tune === "off") return { ...summary, disabled: "tune=off" };
  const gemmForced = gemmTiling(gpu).source === "forced";
  const attentionForced = !!gpu.choices.attention;
  const todo = rankShapes(ops).filter((s) => (s.kind === "attention" ? !attentionForced : !gemmForced));
  if (todo.length === 0) {
    return { ...summary, disabled: ops.length ? "every tuned choice is forced" : "no shapes" };
  }
  const software = gpu.report.adapter.fallback;
  const budgetMs = o.budgetMs ?? (software ? 2000 : 30000);
  const maxRows = o.maxRows ?? (software ? 256 : 32768);
  const retune = o.retune || gpu.choices.tune === "retune";
  const key = await tuneCacheKey(gpu);
  const path = await tuneCachePath(key, o.cacheDir === undefined ? tuneCacheDir() : o.cacheDir);
  summary.cacheFile = path;
  const stored = await readTuneCache<TuneEntry>(path, key);
  // Entries of shapes not in this model stay in the file (another size, another model on this adapter).
  const entries: Record<string, TuneEntry> = { ...stored };
  const storage = storageOf(gemmTiling(gpu).tiling.mode);
  const budget: Budget = { deadline: t0 + budgetMs, prepaidMs: 0 };
  const apply = (s: OpShape, k: string, entry: TuneEntry) => {
    summary.entries[k] = entry;
    if (entry.choice !== null && entry.pick !== candidatesFor(gpu, s)[0].label) {
      setTunedChoice(gpu, k, entry.choice);
      summary.changed++;
    }
  };
  let fresh = 0;
  const measure = async (s: OpShape, k: string): Promise<TuneEntry | null> => {
    // Past the deadline no more inputs are even uploaded.
    if (performance.now() > budget.deadline) return null;
    const r = await tuneShape(gpu, s, budget, { maxRows, rounds: software ? 1 : 3, storage, log: o.log });
    if (!r) return null;
    summary.skipped += r.skipped;
    summary.measured++;
    entries[k] = r.entry;
    fresh++;
    o.log?.(
      `autotune ${k}: ${r.entry.pick}${r.entry.partial ? " (partial)" : ""} ${JSON.stringify(r.entry.ms)}`,
    );
    return r.entry;
  };
  const again: [OpShape, string][] = [];
  for (const s of todo) {
    const k = opKey(s);
    const cached = retune ? undefined : stored[k];
    if (cached && !cached.partial) {
      summary.fromCache++;
      apply(s, k, cached);
      continue;
    }
    if (cached) again.push([s, k]);
    const entry = cached ?? await measure(s, k);
    if (entry) apply(s, k, entry);
    else summary.untuned++;
  }
  for (const [s, k] of again) {
    const old = summary.entries[k];
    const entry = await measure(s, k);
    if (!entry) {
      summary.fromCache++;
      continue;
    }
    if (entry.partial && Object.keys(entry.ms).length < Object.keys(old.ms).length) {
      entries[k] = old; // the earlier start got further
      continue;
    }
    if (old.choice !== null && old.pick !== candidatesFor(gpu, s)[0].label) summary.changed--;
    setTunedChoice(gpu, k, undefined);
    apply(s, k, entry);
  }
  if (fresh > 0) {
    const warning = await writeTuneCache(path, key, entries);
    if (warning) summary.warning = warning;
  }
  summary.ms = performance.now() - t0;
  summary.prepaidMs = budget.prepaidMs;
  return summary;
}

/** One line about a tuning pass, for the commands' logs. */
export function tuneLine(s: TuneSummary): string {
  if (s.disabled) return `autotune: off (${s.disabled})`;
  return `autotune: ${s.fromCache} shapes from the cache, ${s.measured} measured, ${s.untuned} left at the ` +
    `default (budget), ${s.changed} not at the default, ${(s.ms / 1000).toFixed(1)} s` +
    (s.cacheFile ? ` (${s.cacheFile})` : "") + (s.warning ? `; ${s.warning}` : "");
}
