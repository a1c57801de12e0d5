// What the UNet predicts. A diffusers folder says so in its scheduler config; a single file does not, and
// whether an SD 2.x file predicts v or epsilon cannot be read from the weights at all: it is guessed
// (metadata, file name, else v-prediction as diffusers assumes) and the guess is reported as one.

import { type ModelFamily, PREDICTION_TYPES, type PredictionType } from "../family.ts";

export interface PredictionGuess {
  type: PredictionType;
  /** Where the type came from, in words. */
  source: string;
}

/** A diffusers folder: override, else scheduler_config.json, else diffusers' default (epsilon). */
export function folderPrediction(
  scheduler: Record<string, unknown>,
  schedulerPath: string,
  override: PredictionType | undefined,
): PredictionGuess {
  if (override) return { type: override, source: "override" };
  if (typeof scheduler.prediction_type === "string") {
    return {
      type: checkPredictionType(scheduler.prediction_type, schedulerPath),
      source: "scheduler/scheduler_config.json",
    };
  }
  return {
    type: "epsilon",
    source: "scheduler/scheduler_config.json has no prediction_type (diffusers default: epsilon)",
  };
}

function checkPredictionType(v: string, source: string): PredictionType {
  const known = PREDICTION_TYPES.find((t) => t === v);
  if (known) return known;
  throw new Error(`${source}: prediction_type "${v}" is not supported (${PREDICTION_TYPES.join(", ")})`);
}

/** Prediction type of a single file: override, ModelSpec metadata, file name, else the family's usual one. */
export function singleFilePrediction(
  path: string,
  metadata: Record<string, string>,
  family: ModelFamily | null,
  override: PredictionType | undefined,
): PredictionGuess {
  if (override) return { type: override, source: "override" };
  const spec = metadata["modelspec.prediction_type"];
  if (spec === "v" || spec === "v_prediction") {
    return { type: "v_prediction", source: "file metadata modelspec.prediction_type" };
  }
  if (spec === "epsilon") return { type: "epsilon", source: "file metadata modelspec.prediction_type" };
  const arch = metadata["modelspec.architecture"] ?? "";
  if (/768-v/.test(arch)) return { type: "v_prediction", source: "file metadata modelspec.architecture" };
  const file = path.split("/").pop() ?? path;
  if (/(^|[-_.])(768-?v|v-?pred(iction)?)([-_.]|$)/i.test(file)) {
    return { type: "v_prediction", source: `guessed from the file name "${file}"` };
  }
  if (/(^|[-_.])eps(ilon)?([-_.]|$)/i.test(file)) {
    return { type: "epsilon", source: `guessed from the file name "${file}"` };
  }
  if (family === "sd2") {
    // Stability's own names: v2-1_768-ema-pruned (v-prediction), v2-1_512-ema-pruned / 512-base (epsilon).
    if (/(^|[-_.])768([-_.]|$)/.test(file)) {
      return {
        type: "v_prediction",
        source: `guessed from the file name "${file}" (SD 2.x 768 px models predict v)`,
      };
    }
    if (/(^|[-_.])(512|base)([-_.]|$)/i.test(file)) {
      return {
        type: "epsilon",
        source: `guessed from the file name "${file}" (SD 2.x 512 px base models predict epsilon)`,
      };
    }
    return {
      type: "v_prediction",
      source: "GUESSED: SD 2.x weights do not say whether they predict v or epsilon (2.x-768 models are v, " +
        "2.x-base models epsilon); assumed v_prediction as diffusers does; override if images come out wrong",
    };
  }
  return { type: "epsilon", source: "assumed: SD 1.x models predict epsilon (not stored in the weights)" };
}
