// Configs, expected tensor lists and single-file name maps against the full-size manifests (SD 1.5, SD 2.1:
// names, shapes, original keys, state-dict order) and the tiny fixtures' weight files.

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { ConfigError } from "../src/models/config_reader.ts";
import { referenceConfigs, SD15_CONFIG_JSON, SD21_CONFIG_JSON } from "../src/models/presets.ts";
import { parseClipTextConfig } from "../src/models/clip/config.ts";
import { parseUNetConfig, unetAttentionLevels } from "../src/models/unet/config.ts";
import { parseVaeConfig } from "../src/models/vae/config.ts";
import { expectedTensors, parameterCount } from "../src/models/expected.ts";
import { clipNameMap, unetNameMap, vaeNameMap } from "../src/models/checkpoint/single_file_names.ts";
import { SafetensorsFile } from "../src/weights/safetensors.ts";

const FIX = new URL("./fixtures/", import.meta.url).pathname;

interface ModelManifest {
  config_passed: Record<string, unknown>;
  config_full: Record<string, unknown>;
  param_count: number;
  tensor_count: number;
  shape_differences: Record<string, { diffusers: number[]; original: number[] }>;
  tensors: Record<string, { shape: number[]; original_key: string; original_shape: number[] }>;
}

interface ClipManifest {
  config: Record<string, unknown>;
  param_count: number;
  tensor_count: number;
  tensors: { key: string; shape: number[]; original_key: string }[];
}

/** The error `fn` throws (fails when it doesn't throw, or throws something other than `type`). */
function thrown<E extends Error>(fn: () => unknown, type: new (...a: never[]) => E, includes = ""): E {
  try {
    fn();
  } catch (e) {
    assert(e instanceof type, `expected ${type.name}, got ${e}`);
    assert(e.message.includes(includes), `"${e.message}" does not mention "${includes}"`);
    return e;
  }
  throw new Error(`expected ${type.name} mentioning "${includes}", nothing thrown`);
}

const manifest = (name: string) => JSON.parse(Deno.readTextFileSync(`${FIX}manifests/${name}.json`));

async function fileShapes(path: string): Promise<Map<string, number[]>> {
  using f = await SafetensorsFile.open(path);
  return new Map(f.names().map((n) => [n, f.info(n).shape]));
}

/** Same keys and shapes (order-insensitive), with a readable first difference. */
function assertSameShapes(actual: Map<string, number[]>, expected: Map<string, number[]>, what: string) {
  const missing = [...expected.keys()].filter((k) => !actual.has(k));
  const extra = [...actual.keys()].filter((k) => !expected.has(k));
  assertEquals(missing, [], `${what}: names missing from the computed list`);
  assertEquals(extra, [], `${what}: names not in the reference`);
  for (const [k, s] of expected) assertEquals(actual.get(k), s, `${what}: shape of ${k}`);
}

// ---- configs ----

Deno.test("configs: manifests' config_passed and config_full parse to the same configs", () => {
  for (const name of ["sd15_unet", "sd21_unet"]) {
    const m: ModelManifest = manifest(name);
    assertEquals(parseUNetConfig(m.config_passed), parseUNetConfig(m.config_full), name);
  }
  for (const name of ["sd15_vae", "sd21_vae"]) {
    const m: ModelManifest = manifest(name);
    assertEquals(parseVaeConfig(m.config_passed), parseVaeConfig(m.config_full), name);
  }
  // The embedded reference configs are the manifests' ones.
  assertEquals(parseUNetConfig(SD15_CONFIG_JSON.unet), parseUNetConfig(manifest("sd15_unet").config_full));
  assertEquals(parseUNetConfig(SD21_CONFIG_JSON.unet), parseUNetConfig(manifest("sd21_unet").config_full));
  assertEquals(parseVaeConfig(SD15_CONFIG_JSON.vae), parseVaeConfig(manifest("sd15_vae").config_full));
  assertEquals(parseVaeConfig(SD21_CONFIG_JSON.vae), parseVaeConfig(manifest("sd21_vae").config_full));
  const clip: ClipManifest = manifest("clip_sd15");
  const fromManifest = parseClipTextConfig(clip.config);
  const embedded = referenceConfigs("sd15").textEncoder;
  for (const k of Object.keys(clip.config) as (keyof typeof fromManifest)[]) {
    assertEquals(embedded[k], fromManifest[k], `sd15 text encoder ${k}`);
  }
});

Deno.test("configs: attention heads per level follow diffusers' semantics", () => {
  const sd15 = unetAttentionLevels(referenceConfigs("sd15").unet);
  // SD 1.x: attention_head_dim = 8 is the head COUNT; head size = width / 8.
  assertEquals(sd15.down.map((l) => [l.heads, l.headDim]), [[8, 40], [8, 80], [8, 160], [8, 160]]);
  assertEquals(sd15.up.map((l) => [l.heads, l.headDim]), [[8, 160], [8, 160], [8, 80], [8, 40]]);
  assertEquals([sd15.mid.heads, sd15.mid.headDim], [8, 160]);
  assertEquals(sd15.down.map((l) => l.hasAttention), [true, true, true, false]);
  assertEquals(sd15.up.map((l) => l.hasAttention), [false, true, true, true]);
  assertEquals(sd15.up.map((l) => l.resnetInChannels), [
    [2560, 2560, 2560],
    [2560, 2560, 1920],
    [1920, 1280, 960],
    [960, 640, 640],
  ]);
  // SD 2.x: [5, 10, 20, 20] heads → 64 channels per head; up levels reversed; mid uses the last entry.
  const sd21 = unetAttentionLevels(referenceConfigs("sd21").unet);
  assertEquals(sd21.down.map((l) => [l.heads, l.headDim]), [[5, 64], [10, 64], [20, 64], [20, 64]]);
  assertEquals(sd21.up.map((l) => [l.heads, l.headDim]), [[20, 64], [20, 64], [10, 64], [5, 64]]);
  assertEquals([sd21.mid.heads, sd21.mid.headDim], [20, 64]);
  // Explicit num_attention_heads wins over attention_head_dim.
  const explicit = parseUNetConfig({ ...SD21_CONFIG_JSON.unet, num_attention_heads: [10, 10, 20, 40] });
  assertEquals(unetAttentionLevels(explicit).down.map((l) => l.headDim), [32, 64, 64, 32]);
  assertEquals(unetAttentionLevels(explicit).mid.heads, 40);
  // Tiny fixtures.
  const tiny = parseUNetConfig(JSON.parse(Deno.readTextFileSync(`${FIX}tiny_sd/unet/config.json`)));
  assertEquals(unetAttentionLevels(tiny).down.map((l) => l.headDim), [8, 16, 16, 16]);
  assertEquals(unetAttentionLevels(parseUNetConfig(TINY_SD2_UNET)).down.map((l) => l.headDim), [
    16,
    16,
    16,
    16,
  ]);
});

Deno.test("configs: unsupported values are refused with the field named", () => {
  const base = SD15_CONFIG_JSON.unet;
  const cases: [Record<string, unknown>, RegExp][] = [
    [{
      down_block_types: ["CrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    }, /down_block_types\[1\].*SimpleCrossAttnDownBlock2D/],
    [{ up_block_types: ["UpBlock2D", "UpBlock2D", "UpBlock2D", "AttnUpBlock2D"] }, /up_block_types\[3\]/],
    [{ mid_block_type: "UNetMidBlock2DSimpleCrossAttn" }, /mid_block_type/],
    [{ class_embed_type: "timestep" }, /class_embed_type/],
    [{ addition_embed_type: "text_time" }, /addition_embed_type/],
    [{ only_cross_attention: true }, /only_cross_attention/],
    [{ dual_cross_attention: true }, /dual_cross_attention/],
    [{ act_fn: "gelu" }, /act_fn/],
    [{ block_out_channels: [320, 640, 1280] }, /block_out_channels.*3 entries/],
    [{ attention_head_dim: [5, 10, 20] }, /attention_head_dim.*3 entries/],
    [{ attention_head_dim: 7 }, /attention_head_dim.*7 heads do not divide/],
    [{ norm_num_groups: 48 }, /norm_num_groups/],
    [{ layers_per_block: "2" }, /layers_per_block/],
    [{ resnet_time_scale_shift: "scale_shift" }, /resnet_time_scale_shift/],
    [{ encoder_hid_dim: 1024 }, /encoder_hid_dim/],
  ];
  for (const [patch, re] of cases) {
    const e = thrown(() => parseUNetConfig({ ...base, ...patch }), ConfigError);
    assert(re.test(e.message), `${JSON.stringify(patch)}: message "${e.message}" does not match ${re}`);
    assert(e.message.startsWith("unet/config.json"), e.message);
  }
  thrown(
    () => parseVaeConfig({ ...SD15_CONFIG_JSON.vae, up_block_types: ["UpDecoderBlock2D"] }),
    ConfigError,
    "up_block_types",
  );
  thrown(
    () => parseVaeConfig({ ...SD15_CONFIG_JSON.vae, latents_mean: [0, 0, 0, 0] }),
    ConfigError,
    "latents_mean",
  );
  thrown(
    () => parseClipTextConfig({ ...SD15_CONFIG_JSON.text_encoder, hidden_act: "gelu_new" }),
    ConfigError,
    "hidden_act",
  );
  thrown(
    () => parseClipTextConfig({ ...SD15_CONFIG_JSON.text_encoder, architectures: ["CLIPVisionModel"] }),
    ConfigError,
    "architectures",
  );
  thrown(
    () => parseClipTextConfig({ ...SD15_CONFIG_JSON.text_encoder, num_attention_heads: 7 }),
    ConfigError,
    "num_attention_heads",
  );
  thrown(() => parseUNetConfig([1, 2]), ConfigError, "not a JSON object");
});

// ---- expected tensors vs the manifests ----

for (const name of ["sd15_unet", "sd21_unet", "sd15_vae", "sd21_vae"]) {
  Deno.test(`expectedTensors: ${name} equals the manifest (names, shapes, order, counts)`, () => {
    const m: ModelManifest = manifest(name);
    const expected = name.endsWith("unet")
      ? expectedTensors("unet", parseUNetConfig(m.config_full))
      : expectedTensors("vae", parseVaeConfig(m.config_full));
    const ref = new Map(Object.entries(m.tensors).map(([k, v]) => [k, v.shape]));
    assertSameShapes(expected, ref, name);
    assertEquals([...expected.keys()], [...ref.keys()], "state-dict order");
    assertEquals(expected.size, m.tensor_count);
    assertEquals(parameterCount(expected.values()), m.param_count);
  });
}

Deno.test("expectedTensors: SD 1.5 text encoder equals clip_sd15.json", () => {
  const m: ClipManifest = manifest("clip_sd15");
  const expected = expectedTensors("text_encoder", parseClipTextConfig(m.config));
  const ref = new Map(m.tensors.map((t) => [t.key, t.shape]));
  assertSameShapes(expected, ref, "clip_sd15");
  assertEquals([...expected.keys()], [...ref.keys()], "state-dict order");
  assertEquals(expected.size, m.tensor_count);
  assertEquals(parameterCount(expected.values()), m.param_count);
});

// ---- expected tensors vs the tiny fixtures' files ----

/** unet_sd2/manifest.json's config_passed (that folder's weights have no config.json). */
const TINY_SD2_UNET = {
  sample_size: 16,
  in_channels: 4,
  out_channels: 4,
  center_input_sample: false,
  flip_sin_to_cos: true,
  freq_shift: 0,
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  mid_block_type: "UNetMidBlock2DCrossAttn",
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  only_cross_attention: false,
  block_out_channels: [32, 64, 64, 64],
  layers_per_block: 2,
  downsample_padding: 1,
  mid_block_scale_factor: 1,
  act_fn: "silu",
  norm_num_groups: 8,
  norm_eps: 1e-05,
  cross_attention_dim: 48,
  attention_head_dim: [2, 4, 4, 4],
  use_linear_projection: true,
  upcast_attention: true,
  dual_cross_attention: false,
};

Deno.test("expectedTensors: tiny fixtures' weight files (UNet SD1/SD2, VAE, CLIP quick_gelu/gelu)", async () => {
  const json = (p: string) => JSON.parse(Deno.readTextFileSync(`${FIX}${p}`));
  const tinyUnet = parseUNetConfig(json("tiny_sd/unet/config.json"));
  assertSameShapes(
    expectedTensors("unet", tinyUnet),
    await fileShapes(`${FIX}tiny_sd/unet/diffusion_pytorch_model.fp16.safetensors`),
    "tiny unet",
  );
  assertSameShapes(
    expectedTensors("unet", parseUNetConfig(TINY_SD2_UNET)),
    await fileShapes(`${FIX}unet_sd2/weights.safetensors`),
    "tiny unet_sd2",
  );
  assertSameShapes(
    expectedTensors("vae", parseVaeConfig(json("tiny_sd/vae/config.json"))),
    await fileShapes(`${FIX}tiny_sd/vae/diffusion_pytorch_model.fp16.safetensors`),
    "tiny vae",
  );
  assertSameShapes(
    expectedTensors("text_encoder", parseClipTextConfig(json("tiny_sd/text_encoder/config.json"))),
    await fileShapes(`${FIX}tiny_sd/text_encoder/model.fp16.safetensors`),
    "tiny clip quick_gelu",
  );
  assertSameShapes(
    expectedTensors("text_encoder", parseClipTextConfig(json("clip/tiny_gelu/config.json"))),
    await fileShapes(`${FIX}clip/tiny_gelu/model.safetensors`),
    "tiny clip gelu",
  );
  // 684 / 244, not 686 / 248: with widths [32, 64, 64, 64] levels 2 and 3 need no conv_shortcut.
  assertEquals(expectedTensors("unet", tinyUnet).size, 684);
});

// ---- name maps ----

for (const name of ["sd15_unet", "sd21_unet", "sd15_vae", "sd21_vae"]) {
  Deno.test(`name map: ${name} maps every tensor to its original key and shape, and back`, () => {
    const m: ModelManifest = manifest(name);
    const map = name.endsWith("unet")
      ? unetNameMap(parseUNetConfig(m.config_full))
      : vaeNameMap(parseVaeConfig(m.config_full));
    assertEquals(map.entries.length, Object.keys(m.tensors).length);
    const differing: string[] = [];
    for (const [key, t] of Object.entries(m.tensors)) {
      const e = map.byName.get(key);
      assert(e, `${key} has no entry`);
      assertEquals(e.original, t.original_key, `original key of ${key}`);
      assertEquals(e.shape, t.shape, `shape of ${key}`);
      assertEquals(e.originalShape, t.original_shape, `original shape of ${key}`);
      assertEquals(
        map.byOriginal.get(t.original_key)?.map((x) => x.name),
        [key],
        `reverse of ${t.original_key}`,
      );
      assert(e.original.startsWith(map.prefix));
      if (JSON.stringify(e.shape) !== JSON.stringify(e.originalShape)) differing.push(key);
    }
    assertEquals(map.byOriginal.size, map.entries.length, "one original key per tensor");
    // Exactly the documented shape differences (the VAE's mid-block attention q/k/v/proj_out).
    assertEquals(differing.sort(), Object.keys(m.shape_differences).sort());
    for (const [k, d] of Object.entries(m.shape_differences)) {
      assertEquals(map.byName.get(k)?.shape, d.diffusers);
      assertEquals(map.byName.get(k)?.originalShape, d.original);
    }
  });
}

Deno.test("name map: SD 1.5 text encoder (transformers layout behind cond_stage_model.transformer.)", () => {
  const m: ClipManifest = manifest("clip_sd15");
  const map = clipNameMap(parseClipTextConfig(m.config), "transformers");
  assertEquals(map.entries.length, m.tensors.length);
  for (const t of m.tensors) {
    const e = map.byName.get(t.key);
    assertEquals(e?.original, t.original_key, t.key);
    assertEquals(e?.originalShape, t.shape);
    assertEquals(map.byOriginal.get(t.original_key)?.map((x) => x.name), [t.key]);
  }
  assert(map.isIgnorable("cond_stage_model.transformer.text_model.embeddings.position_ids"));
  assert(!map.isIgnorable("cond_stage_model.transformer.text_model.final_layer_norm.weight"));
  // Old files without the text_model level.
  const legacy = clipNameMap(parseClipTextConfig(m.config), "transformers", { withoutTextModelLevel: true });
  assertEquals(
    legacy.byName.get("text_model.encoder.layers.3.mlp.fc1.weight")?.original,
    "cond_stage_model.transformer.encoder.layers.3.mlp.fc1.weight",
  );
});

Deno.test("name map: SD 2.x OpenCLIP text encoder (fused in_proj, positional_embedding, ln_final, resblocks)", () => {
  const config = referenceConfigs("sd21").textEncoder;
  const map = clipNameMap(config, "openclip");
  const P = "cond_stage_model.model.";
  const e = (n: string) => map.byName.get(n)!;
  assertEquals(e("text_model.embeddings.token_embedding.weight").original, `${P}token_embedding.weight`);
  assertEquals(e("text_model.embeddings.position_embedding.weight").original, `${P}positional_embedding`);
  assertEquals(e("text_model.embeddings.position_embedding.weight").originalShape, [77, 1024]);
  assertEquals(e("text_model.final_layer_norm.weight").original, `${P}ln_final.weight`);
  assertEquals(e("text_model.final_layer_norm.bias").original, `${P}ln_final.bias`);
  for (const [i, part] of ["q", "k", "v"].entries()) {
    const w = e(`text_model.encoder.layers.22.self_attn.${part}_proj.weight`);
    assertEquals(w.original, `${P}transformer.resblocks.22.attn.in_proj_weight`);
    assertEquals(w.originalShape, [3072, 1024]);
    assertEquals(w.shape, [1024, 1024]);
    assertEquals(w.rows, [i * 1024, (i + 1) * 1024]);
    const b = e(`text_model.encoder.layers.0.self_attn.${part}_proj.bias`);
    assertEquals(b.original, `${P}transformer.resblocks.0.attn.in_proj_bias`);
    assertEquals(b.originalShape, [3072]);
    assertEquals(b.rows, [i * 1024, (i + 1) * 1024]);
  }
  assertEquals(
    map.byOriginal.get(`${P}transformer.resblocks.5.attn.in_proj_weight`)?.map((x) => x.name),
    ["q", "k", "v"].map((p) => `text_model.encoder.layers.5.self_attn.${p}_proj.weight`),
  );
  const pairs: [string, string][] = [
    ["self_attn.out_proj.weight", "attn.out_proj.weight"],
    ["layer_norm1.bias", "ln_1.bias"],
    ["layer_norm2.weight", "ln_2.weight"],
    ["mlp.fc1.weight", "mlp.c_fc.weight"],
    ["mlp.fc2.bias", "mlp.c_proj.bias"],
  ];
  for (const [hf, oc] of pairs) {
    assertEquals(e(`text_model.encoder.layers.7.${hf}`).original, `${P}transformer.resblocks.7.${oc}`);
  }
  assertEquals(e("text_model.encoder.layers.7.mlp.fc1.weight").originalShape, [4096, 1024]);
  // Every tensor maps, and the fused originals are the only many-to-one keys.
  assertEquals(map.entries.length, expectedTensors("text_encoder", config).size);
  assertEquals(map.byOriginal.size, map.entries.length - 2 * 2 * 23);
  // SD 2.x files hold the 24th resblock, logit_scale and text_projection, which CLIPTextModel lacks.
  assert(map.isIgnorable(`${P}transformer.resblocks.23.attn.in_proj_weight`));
  assert(!map.isIgnorable(`${P}transformer.resblocks.22.attn.in_proj_weight`));
  assert(map.isIgnorable(`${P}logit_scale`));
  assert(map.isIgnorable(`${P}text_projection`));
  // CLIPTextModelWithProjection: text_projection.weight [proj, hidden] is the transposed OpenCLIP matrix.
  const withProj = clipNameMap({ ...config, with_projection: true }, "openclip");
  const proj = withProj.byName.get("text_projection.weight")!;
  assertEquals([proj.original, proj.originalShape, proj.shape, proj.transpose], [
    `${P}text_projection`,
    [1024, 512],
    [512, 1024],
    true,
  ]);
  assert(!withProj.isIgnorable(`${P}text_projection`));
});

Deno.test("name map: generated from the config (other depths and layer counts)", () => {
  // 3 levels, 1 layer per level, 2 transformer layers: indices shift accordingly.
  const c = parseUNetConfig({
    block_out_channels: [32, 64, 64],
    down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    layers_per_block: 1,
    transformer_layers_per_block: 2,
    norm_num_groups: 8,
    attention_head_dim: 4,
    cross_attention_dim: 16,
  });
  const map = unetNameMap(c);
  const o = (n: string) => map.byName.get(n)?.original.replace("model.diffusion_model.", "");
  assertEquals(o("down_blocks.0.resnets.0.conv1.weight"), "input_blocks.1.0.in_layers.2.weight");
  assertEquals(
    o("down_blocks.0.attentions.0.transformer_blocks.1.attn2.to_k.weight"),
    "input_blocks.1.1.transformer_blocks.1.attn2.to_k.weight",
  );
  assertEquals(o("down_blocks.0.downsamplers.0.conv.weight"), "input_blocks.2.0.op.weight");
  assertEquals(o("down_blocks.1.resnets.0.conv_shortcut.weight"), "input_blocks.3.0.skip_connection.weight");
  assertEquals(o("down_blocks.2.resnets.0.norm1.weight"), "input_blocks.5.0.in_layers.0.weight");
  assertEquals(o("up_blocks.0.resnets.1.norm1.weight"), "output_blocks.1.0.in_layers.0.weight");
  assertEquals(o("up_blocks.0.upsamplers.0.conv.weight"), "output_blocks.1.1.conv.weight");
  assertEquals(o("up_blocks.1.attentions.0.proj_in.weight"), "output_blocks.2.1.proj_in.weight");
  assertEquals(o("up_blocks.1.upsamplers.0.conv.bias"), "output_blocks.3.2.conv.bias");
  assertEquals(o("up_blocks.2.resnets.1.conv2.weight"), "output_blocks.5.0.out_layers.3.weight");
  assertEquals(
    o("mid_block.attentions.0.transformer_blocks.1.norm3.bias"),
    "middle_block.1.transformer_blocks.1.norm3.bias",
  );
  const vae = vaeNameMap(
    parseVaeConfig({
      block_out_channels: [32, 64, 64],
      layers_per_block: 1,
      norm_num_groups: 8,
      down_block_types: Array(3).fill("DownEncoderBlock2D"),
      up_block_types: Array(3).fill("UpDecoderBlock2D"),
    }),
  );
  assertEquals(
    vae.byName.get("decoder.up_blocks.0.resnets.1.conv1.weight")?.original,
    "first_stage_model.decoder.up.2.block.1.conv1.weight",
  );
  assertEquals(
    vae.byName.get("decoder.up_blocks.2.resnets.0.conv_shortcut.weight")?.original,
    "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight",
  );
  assertEquals(
    vae.byName.get("encoder.down_blocks.1.downsamplers.0.conv.weight")?.original,
    "first_stage_model.encoder.down.1.downsample.conv.weight",
  );
});
