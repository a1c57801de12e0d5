// A1111's sampler and scheduler names and this engine's samplers (src/schedulers/names.ts).
//
// A1111 (≥ 1.9) names a sampler and, separately, a schedule ("scheduler": Automatic, Karras, …); older
// versions folded the schedule into the name ("DPM++ 2M Karras"). Both spellings are accepted, as are A1111's
// aliases (k_euler_a, …) and this engine's own names (euler_a, dpmpp_2m_karras, …), case-insensitively.
// "Automatic" is the sampler's default schedule, which for DPM++ 2M is Karras since A1111 1.9; "Uniform" and
// "Normal" are the model's own timestep spacing; Karras sigmas exist here for DPM++ 2M only.

import { SAMPLER_NAMES, type SamplerName } from "../../../schedulers/names.ts";

export interface A1111Sampler {
  /** A1111's name. */
  name: string;
  aliases: string[];
  /** Ours with the default ("Automatic") schedule, and with Karras sigmas where there are some. */
  sampler: SamplerName;
  karras?: SamplerName;
  /** Ours with the "Uniform" / "Normal" schedule, where it differs from `sampler`. */
  plain?: SamplerName;
  /** The default schedule, A1111's `options.scheduler`. */
  defaultScheduler?: "karras";
}

/** In A1111's order of its list. */
export const A1111_SAMPLERS: readonly A1111Sampler[] = [
  {
    name: "DPM++ 2M",
    aliases: ["k_dpmpp_2m"],
    sampler: "dpmpp_2m_karras",
    karras: "dpmpp_2m_karras",
    plain: "dpmpp_2m",
    defaultScheduler: "karras",
  },
  { name: "Euler a", aliases: ["k_euler_a", "k_euler_ancestral"], sampler: "euler_a" },
  { name: "Euler", aliases: ["k_euler"], sampler: "euler" },
  { name: "Heun", aliases: ["k_heun"], sampler: "heun" },
  { name: "LCM", aliases: ["k_lcm"], sampler: "lcm" },
  { name: "DDIM", aliases: [], sampler: "ddim" },
  { name: "DDPM", aliases: [], sampler: "ddpm" },
  { name: "PLMS", aliases: [], sampler: "pndm" },
  { name: "UniPC", aliases: [], sampler: "unipc" },
];

/** The schedules this server can follow. */
export const A1111_SCHEDULERS = [
  { name: "automatic", label: "Automatic", aliases: null, default_rho: -1, need_inner_model: false },
  { name: "uniform", label: "Uniform", aliases: null, default_rho: -1, need_inner_model: true },
  { name: "karras", label: "Karras", aliases: null, default_rho: 7, need_inner_model: false },
  { name: "normal", label: "Normal", aliases: null, default_rho: -1, need_inner_model: true },
] as const;

type Schedule = "automatic" | "karras" | "plain";

/** Our sampler → its A1111 name and schedule (what infotexts and `info` say). */
export function a1111SamplerName(sampler: string): { name: string; scheduler: string } {
  if (sampler === "dpmpp_2m_karras") return { name: "DPM++ 2M", scheduler: "Karras" };
  if (sampler === "dpmpp_2m") return { name: "DPM++ 2M", scheduler: "Uniform" };
  const found = A1111_SAMPLERS.find((s) => s.sampler === sampler);
  return { name: found?.name ?? sampler, scheduler: "Automatic" };
}

/** `SAMPLER_NAMES` by lower-case name, A1111's names and aliases included. */
const BY_NAME = new Map<string, { entry?: A1111Sampler; ours?: SamplerName }>();
for (const s of A1111_SAMPLERS) {
  for (const n of [s.name, ...s.aliases]) BY_NAME.set(n.toLowerCase(), { entry: s });
}
for (const ours of SAMPLER_NAMES) if (!BY_NAME.has(ours)) BY_NAME.set(ours, { ours });

export type SamplerChoice =
  | { ok: true; sampler: SamplerName }
  | { ok: false; field: "sampler_name" | "scheduler"; message: string };

/**
 * A1111's `sampler_name` (or `sampler_index`) and `scheduler` → our sampler. A name ending in " Karras"
 * (A1111 < 1.9) carries its schedule.
 */
export function resolveSampler(name: string, scheduler: string | undefined): SamplerChoice {
  let key = name.trim().toLowerCase();
  let schedule = parseSchedule(scheduler);
  if (schedule === undefined) {
    return {
      ok: false,
      field: "scheduler",
      message: `unsupported scheduler ${JSON.stringify(scheduler)}; one of ${
        A1111_SCHEDULERS.map((s) => s.label).join(", ")
      }`,
    };
  }
  if (!BY_NAME.has(key) && key.endsWith(" karras") && BY_NAME.has(key.slice(0, -7))) {
    key = key.slice(0, -7);
    if (schedule === "automatic") schedule = "karras";
  }
  const found = BY_NAME.get(key);
  if (!found) {
    return {
      ok: false,
      field: "sampler_name",
      message: `sampler not found: ${JSON.stringify(name)}; one of ${
        A1111_SAMPLERS.map((s) => s.name).join(", ")
      }`,
    };
  }
  if (found.ours) {
    // Our own names say their schedule themselves; only Karras can be added, to DPM++ 2M.
    if (schedule === "karras" && found.ours === "dpmpp_2m") return { ok: true, sampler: "dpmpp_2m_karras" };
    if (schedule === "karras" && found.ours !== "dpmpp_2m_karras") return karrasOnly();
    return { ok: true, sampler: found.ours };
  }
  const entry = found.entry!;
  if (schedule === "karras") return entry.karras ? { ok: true, sampler: entry.karras } : karrasOnly();
  return { ok: true, sampler: schedule === "plain" ? entry.plain ?? entry.sampler : entry.sampler };
}

function karrasOnly(): SamplerChoice {
  return {
    ok: false,
    field: "scheduler",
    message: "the Karras schedule is available with DPM++ 2M only on this server",
  };
}

function parseSchedule(scheduler: string | undefined): Schedule | undefined {
  const s = (scheduler ?? "automatic").trim().toLowerCase();
  if (s === "" || s === "automatic") return "automatic";
  if (s === "karras") return "karras";
  if (s === "uniform" || s === "normal") return "plain";
  return undefined;
}

/** GET /sdapi/v1/samplers: A1111's SamplerItem list, our name among the aliases. */
export function samplerList(): { name: string; aliases: string[]; options: Record<string, string> }[] {
  return A1111_SAMPLERS.map((s) => ({
    name: s.name,
    aliases: [...s.aliases, ...new Set([s.sampler, s.karras, s.plain].filter((x) => x !== undefined))],
    options: (s.defaultScheduler ? { scheduler: s.defaultScheduler } : {}) as Record<string, string>,
  }));
}
