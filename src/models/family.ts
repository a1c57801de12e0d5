// The vocabulary every layer above uses for what a checkpoint is: its architecture family and what its
// UNet predicts. One name each: the loader, the configs, the tokenizer choice and the samplers share them.

/** SD 1.x (CLIP ViT-L/14, 768-d context) or SD 2.x (OpenCLIP ViT-H/14, 1024-d context). */
export type ModelFamily = "sd1" | "sd2";
export const MODEL_FAMILIES: readonly ModelFamily[] = ["sd1", "sd2"];

/** What the UNet's output means: the noise (epsilon), the velocity (v_prediction) or the clean sample. */
export type PredictionType = "epsilon" | "v_prediction" | "sample";
export const PREDICTION_TYPES: readonly PredictionType[] = ["epsilon", "v_prediction", "sample"];
