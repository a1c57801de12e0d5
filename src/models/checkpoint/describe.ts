// A human-readable description of a model (the `inspect` command): format, family, prediction type and
// where it came from, each component's tensors, config and validation state.

import type { ClipTextConfig } from "../clip/config.ts";
import type { UNetConfig } from "../unet/config.ts";
import type { VaeConfig } from "../vae/config.ts";
import { parameterCount } from "../expected.ts";
import type { ComponentSource } from "./component.ts";
import { openModel } from "./open.ts";
import type { OpenedModel, OpenModelOptions } from "./opened.ts";
import { validate } from "./validate.ts";

/** A human-readable description: format, model family, prediction type, each component's state. */
export async function describeModel(path: string, opts: OpenModelOptions = {}): Promise<string> {
  const model = await openModel(path, opts);
  try {
    return describeOpenedModel(model);
  } finally {
    model.close();
  }
}

export function describeOpenedModel(model: OpenedModel): string {
  const lines: string[] = [];
  lines.push(
    `model: ${model.path} (${model.format === "diffusers" ? "diffusers folder" : "single-file checkpoint"})`,
  );
  const family = model.family === "sd1"
    ? "SD 1.x architecture (1×1 conv attention projections; CLIP ViT-L-style text encoder)"
    : model.family === "sd2"
    ? "SD 2.x architecture (Linear attention projections; OpenCLIP ViT-H-style text encoder)"
    : "unknown (no UNet or text encoder found)";
  lines.push(`version: ${family}`); // the inspect output's label, kept for whoever parses it
  lines.push(`prediction type: ${model.predictionType} (${model.predictionTypeSource})`);
  if (typeof model.scheduler._class_name === "string") {
    lines.push(`scheduler config: ${model.scheduler._class_name}`);
  }
  const components: [string, ComponentSource | null][] = [
    ["unet", model.unet],
    ["vae", model.vae],
    ["text_encoder", model.textEncoder],
  ];
  for (const [label, c] of components) {
    if (!c) {
      lines.push(`${label}: MISSING`);
      continue;
    }
    const report = validate(c);
    const names = c.names();
    const dtypes = [...new Set(names.map((n) => c.tensor(n).dtype))].join("/");
    const params = parameterCount(c.expectedTensors().values());
    lines.push(
      `${label}: ${names.length} tensors (${dtypes || "none"}), ${
        params.toLocaleString("en-US")
      } parameters expected — ` +
        (report.ok ? "OK" : `${report.issues.length} problem(s)`),
    );
    lines.push(`  ${describeConfig(c)}`);
    if (!report.ok) lines.push(...report.summary.split("\n").slice(1));
    for (const n of c.notes) lines.push(`  note: ${n}`);
  }
  lines.push(
    `tokenizer: ${
      model.tokenizerDir ??
        (model.format === "single-file" ? "not in single files (use the bundled CLIP tokenizer)" : "MISSING")
    }`,
  );
  for (const n of model.notes.filter((n) => !/^(unet|vae|text encoder):/.test(n))) lines.push(`note: ${n}`);
  if (model.ignoredTensors.length > 0) {
    const sample = model.ignoredTensors.slice(0, 4).join(", ");
    lines.push(
      `ignored: ${model.ignoredTensors.length} non-model tensors (${sample}${
        model.ignoredTensors.length > 4 ? ", ..." : ""
      })`,
    );
  }
  return lines.join("\n");
}

function describeConfig(c: ComponentSource): string {
  switch (c.kind) {
    case "unet": {
      const u = c.config as UNetConfig;
      return `widths [${u.block_out_channels}], ${JSON.stringify(u.layers_per_block)} layers/level, context ${
        JSON.stringify(u.cross_attention_dim)
      }, ` +
        `heads ${JSON.stringify(u.num_attention_heads ?? u.attention_head_dim)}, ${
          u.use_linear_projection ? "Linear" : "conv"
        } proj_in`;
    }
    case "vae": {
      const v = c.config as VaeConfig;
      return `widths [${v.block_out_channels}], ${v.latent_channels} latent channels, scaling_factor ${v.scaling_factor}`;
    }
    case "text_encoder": {
      const t = c.config as ClipTextConfig;
      return `width ${t.hidden_size}, ${t.num_hidden_layers} layers, ${t.num_attention_heads} heads, ${t.hidden_act}`;
    }
  }
}
