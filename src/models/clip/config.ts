// transformers' CLIPTextConfig (text_encoder/config.json), parsed into a typed object (snake_case field names
// as in the file; defaults of the Python class).

import { ConfigError, Reader } from "../config_reader.ts";

// ---------------------------------------------------------------------------------------------------------
// Text encoder (transformers.CLIPTextConfig)

export type ClipActivation = "quick_gelu" | "gelu";

export interface ClipTextConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_attention_heads: number;
  num_hidden_layers: number;
  max_position_embeddings: number;
  /** quick_gelu (SD 1.x, OpenAI CLIP) or exact erf gelu (SD 2.x, OpenCLIP). */
  hidden_act: ClipActivation;
  layer_norm_eps: number;
  projection_dim: number;
  bos_token_id: number;
  eos_token_id: number;
  pad_token_id: number;
  /** architectures[0] == "CLIPTextModelWithProjection": has text_projection.weight [projection_dim, hidden]. */
  with_projection: boolean;
}

export function parseClipTextConfig(json: unknown, source = "text_encoder/config.json"): ClipTextConfig {
  const r = new Reader(json, source);
  const arch = r.has("architectures") ? r.raw("architectures") : ["CLIPTextModel"];
  if (!Array.isArray(arch) || arch.length !== 1 || typeof arch[0] !== "string") {
    throw new ConfigError(source, "architectures", `expected one class name, got ${JSON.stringify(arch)}`);
  }
  if (arch[0] !== "CLIPTextModel" && arch[0] !== "CLIPTextModelWithProjection") {
    throw new ConfigError(
      source,
      "architectures",
      `"${arch[0]}" is not supported (CLIPTextModel, CLIPTextModelWithProjection)`,
    );
  }
  if (r.has("model_type") && r.raw("model_type") !== "clip_text_model") {
    throw new ConfigError(
      source,
      "model_type",
      `${JSON.stringify(r.raw("model_type"))} is not "clip_text_model"`,
    );
  }
  const c: ClipTextConfig = {
    vocab_size: r.positiveInt("vocab_size", 49408),
    hidden_size: r.positiveInt("hidden_size", 512),
    intermediate_size: r.positiveInt("intermediate_size", 2048),
    num_attention_heads: r.positiveInt("num_attention_heads", 8),
    num_hidden_layers: r.positiveInt("num_hidden_layers", 12),
    max_position_embeddings: r.positiveInt("max_position_embeddings", 77),
    hidden_act: r.literal("hidden_act", ["quick_gelu", "gelu"], "quick_gelu"),
    layer_norm_eps: r.positiveNumber("layer_norm_eps", 1e-5),
    projection_dim: r.positiveInt("projection_dim", 512),
    bos_token_id: r.int("bos_token_id", 49406),
    eos_token_id: r.int("eos_token_id", 49407),
    pad_token_id: r.int("pad_token_id", 1),
    with_projection: arch[0] === "CLIPTextModelWithProjection",
  };
  if (c.hidden_size % c.num_attention_heads !== 0) {
    throw new ConfigError(
      source,
      "num_attention_heads",
      `${c.num_attention_heads} does not divide hidden_size ${c.hidden_size}`,
    );
  }
  return c;
}

export function clipHeadDim(c: ClipTextConfig): number {
  return c.hidden_size / c.num_attention_heads;
}
