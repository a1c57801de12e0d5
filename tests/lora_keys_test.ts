// LoRA files without a GPU: key grammar (kohya, diffusers/PEFT and diffusers' older forms), the mapping of keys
// to declared weights (diffusers and LDM module names), every key accounted for (skipped / unmatched / unknown,
// strict and lenient), shape checks, prompt tags and LoRA-folder name resolution.

import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { readJsonFile } from "../src/util/json.ts";
import { SafetensorsFile, type TensorToWrite, writeSafetensors } from "../src/weights/safetensors.ts";
import { parseUNetConfig } from "../src/models/unet/config.ts";
import { parseClipTextConfig } from "../src/models/clip/config.ts";
import { TargetIndex } from "../src/models/lora/targets.ts";
import { matchKeys, parseKey } from "../src/models/lora/keys.ts";
import { LoraError, readLora } from "../src/models/lora/file.ts";
import { splitLoraTags } from "../src/models/lora/tags.ts";
import { LoraLibrary, loraNameProblem } from "../src/models/lora/library.ts";
import { expectThrow } from "./util.ts";

const fixtures = new URL("./fixtures/", import.meta.url).pathname;
const tinyUnet = parseUNetConfig(await readJsonFile(`${fixtures}tiny_sd/unet/config.json`));
const tinyClip = parseClipTextConfig(await readJsonFile(`${fixtures}tiny_sd/text_encoder/config.json`));
const sd2Unet = parseUNetConfig(
  (await readJsonFile(`${fixtures}unet_sd2/manifest.json`) as { config_passed: unknown }).config_passed,
);

async function expectReject(p: Promise<unknown>, pattern: RegExp, what: string): Promise<void> {
  try {
    await p;
  } catch (e) {
    if (!pattern.test(String(e))) throw new Error(`${what}: "${e}" does not match ${pattern}`);
    return;
  }
  throw new Error(`${what}: expected an error`);
}

Deno.test("lora key grammar: kohya, PEFT, diffusers' older forms, unknown forms", () => {
  assertEquals(parseKey("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"), {
    format: "kohya",
    component: "unet",
    module: "lora_unet_down_blocks_0_attentions_0_proj_in",
    part: "down",
  });
  assertEquals(parseKey("lora_te_text_model_encoder_layers_0_mlp_fc1.alpha")?.component, "text_encoder");
  assertEquals(parseKey("lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight")?.component, "te1");
  assertEquals(parseKey("unet.mid_block.attentions.0.proj_out.lora_B.weight"), {
    format: "diffusers",
    component: "unet",
    module: "unet.mid_block.attentions.0.proj_out",
    part: "up",
  });
  assertEquals(
    parseKey("text_encoder.text_model.encoder.layers.1.self_attn.q_proj.lora_linear_layer.down.weight")
      ?.module,
    "text_encoder.text_model.encoder.layers.1.self_attn.q_proj",
  );
  assertEquals(parseKey("unet.up_blocks.1.resnets.0.conv1.lora.up.weight")?.part, "up");
  assertEquals(
    parseKey("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight")
      ?.module,
    "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
  );
  for (
    const k of [
      "lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a",
      "lora_unet_down_blocks_0_resnets_0_conv1.lora_mid.weight",
      "lora_unet_down_blocks_0_resnets_0_conv1.dora_scale",
      "model.diffusion_model.input_blocks.0.0.weight",
    ]
  ) assertEquals(parseKey(k), null);
});

Deno.test("lora keys map to declared weights: diffusers and LDM kohya names, text encoder names", () => {
  const index = TargetIndex.of({ unet: tinyUnet, textEncoder: tinyClip });
  const w = (key: string) => index.kohya.get(key)?.weight;
  assertEquals(
    w("lora_unet_down_blocks_0_attentions_0_proj_in"),
    "down_blocks.0.attentions.0.proj_in.weight",
  );
  assertEquals(w("lora_unet_input_blocks_1_1_proj_in"), "down_blocks.0.attentions.0.proj_in.weight");
  assertEquals(
    w("lora_unet_output_blocks_2_1_conv"),
    "up_blocks.0.upsamplers.0.conv.weight",
  );
  assertEquals(
    w("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0"),
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.weight",
  );
  assertEquals(
    w("lora_te_text_model_encoder_layers_0_self_attn_q_proj"),
    "text_model.encoder.layers.0.self_attn.q_proj.weight",
  );
  assertEquals(index.kohya.get("lora_unet_conv_norm_out"), undefined); // a norm: no GEMM, no LoRA
  const proj = index.diffusers.get("unet.down_blocks.0.attentions.0.proj_in")!;
  assertEquals([proj.kind, proj.shape], ["linear", [32, 32, 1, 1]]); // SD 1.x 1×1 conv read as a Linear
  assertEquals(index.diffusers.get("unet.up_blocks.1.resnets.0.conv_shortcut")?.kind, "conv");
  const sd2 = TargetIndex.of({ unet: sd2Unet }).diffusers.get("unet.down_blocks.0.attentions.0.proj_in")!;
  assertEquals(sd2.shape, [32, 32]);
});

Deno.test("lora golden files: every key of both formats matches one of 261 weights", async () => {
  const index = TargetIndex.of({ unet: tinyUnet, textEncoder: tinyClip });
  for (const [file, perModule] of [["style_kohya", 3], ["style_diffusers", 2]] as const) {
    using f = await SafetensorsFile.open(`${fixtures}lora/${file}.safetensors`);
    const m = matchKeys(f.names(), index);
    assertEquals([m.groups.length, m.skipped, m.unmatched, m.unknown, m.errors], [261, [], [], [], []]);
    assertEquals(f.names().length, 261 * perModule);
  }
});

Deno.test("lora keys: other components skipped, other models unmatched, unknown forms and broken pairs caught", () => {
  const index = TargetIndex.of({ unet: tinyUnet });
  const m = matchKeys([
    "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
    "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
    "text_encoder_2.text_model.encoder.layers.0.mlp.fc1.lora_A.weight",
    "lora_unet_down_blocks_9_resnets_0_conv1.lora_down.weight",
    "lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a",
    "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight",
    "unet.down_blocks.0.resnets.0.conv1.lora_A.weight",
    "lora_unet_conv_in.lora_up.weight",
  ], index);
  assertEquals(m.skipped, ["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"]);
  assertEquals(m.unmatched.length, 3);
  assertEquals(m.unknown, ["lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a"]);
  // conv1's down twice, conv1 without its up, conv_in's up without its down.
  assertEquals(m.errors.length, 3);
  assertEquals(m.groups, []);
});

async function writeTiny(path: string, extra: Record<string, TensorToWrite> = {}): Promise<void> {
  const f16 = (n: number) => new Uint16Array(n).fill(0x3c00);
  await writeSafetensors(path, {
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": {
      dtype: "F16",
      shape: [2, 32, 1, 1],
      data: f16(64),
    },
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": {
      dtype: "F16",
      shape: [32, 2, 1, 1],
      data: f16(64),
    },
    "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": {
      dtype: "F16",
      shape: [],
      data: new Uint16Array([0x3c00]),
    },
    ...extra,
  });
}

Deno.test("lora files: unknown keys fail, or warn with strict false; wrong shapes always fail", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const index = TargetIndex.of({ unet: tinyUnet });
    const path = `${dir}/x.safetensors`;
    await writeTiny(path, {
      "lora_unet_down_blocks_0_resnets_0_conv1.lora_mid.weight": {
        dtype: "F16",
        shape: [1],
        data: new Uint16Array(1),
      },
      "lora_unet_nowhere.lora_down.weight": { dtype: "F16", shape: [1], data: new Uint16Array(1) },
    });
    await expectReject(
      readLora(path, index, { label: "x" }),
      /LoRA x: 1 keys match nothing.*lora_unet_nowhere.*1 keys are no LoRA form.*lora_mid.*--lora-strict=false/,
      "strict",
    );
    const warnings: string[] = [];
    const c = await readLora(path, index, { strict: false, warn: (m) => warnings.push(m) });
    assertEquals([c.modules.length, c.modules[0].rank, c.modules[0].alphaScale, c.ignored.length], [
      1,
      2,
      0.5,
      2,
    ]);
    if (!/skipped .*lora_unet_nowhere/.test(warnings.join())) throw new Error(`warnings: ${warnings}`);

    await writeTiny(path, {
      "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": {
        dtype: "F16",
        shape: [2, 32, 1, 1],
        data: new Uint16Array(64),
      },
      "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": {
        dtype: "F16",
        shape: [32, 2, 1, 1],
        data: new Uint16Array(64),
      },
    });
    await expectReject(
      readLora(path, index, { strict: false }),
      /conv1\.weight \[32,32,3,3\]: down does not fit/,
      "shape",
    );
    // The tiny SD 1.x LoRA on the SD 2.x UNet: its cross-attention projections have other shapes.
    await expectReject(
      readLora(`${fixtures}lora/style_kohya.safetensors`, TargetIndex.of({ unet: sd2Unet })),
      /attn2\.to_k.*down does not fit/,
      "SD 1.x LoRA on SD 2.x",
    );
    const e = await readLora(`${dir}/missing.safetensors`, index).catch((err) => err);
    if (!(e instanceof LoraError)) throw new Error(`a missing file gave ${e}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("lora prompt tags: removed from the text, scale optional, malformed ones refused", () => {
  assertEquals(splitLoraTags("a cat <lora:style:0.8>, <LORA:detail> at dusk"), {
    prompt: "a cat ,  at dusk",
    loras: [{ name: "style", scale: 0.8 }, { name: "detail", scale: 1 }],
  });
  assertEquals(splitLoraTags("no tags (here:1.2)"), { prompt: "no tags (here:1.2)", loras: [] });
  assertEquals(splitLoraTags("<lora: spaced name : -0.5 >").loras, [{ name: "spaced name", scale: -0.5 }]);
  for (const bad of ["<lora:x:abc>", "<lora:x:>", "<lora::1>", "<lora:x:0.5:0.7>"]) {
    expectThrow(
      () => splitLoraTags(`a ${bad}`),
      /<lora:NAME> or <lora:NAME:SCALE>|scale must be a number/,
      bad,
    );
  }
});

Deno.test("lora names resolve only inside the LoRA folder", async () => {
  for (const bad of ["../style_kohya", "a/b", "a\\b", "..", ".hidden", "x..y", ""]) {
    if (!loraNameProblem(bad)) throw new Error(`${JSON.stringify(bad)} was accepted`);
  }
  const lib = new LoraLibrary(`${fixtures}lora`);
  assertEquals(lib.resolve("style_kohya"), `${fixtures}lora/style_kohya.safetensors`);
  assertEquals([lib.has("style_diffusers"), lib.has("nope"), lib.has("../lora/style_kohya")], [
    true,
    false,
    false,
  ]);
  expectThrow(
    () => lib.resolve("nope"),
    /unknown LoRA "nope": no nope.safetensors in the LoRA folder/,
    "missing",
  );
  expectThrow(() => new LoraLibrary().resolve("x"), /no LoRA folder is configured/, "no folder");
  const listed = await lib.list();
  const style = listed.find((l) => l.name === "style_kohya")!;
  assertEquals([style.keys, style.format], [783, "kohya"]);
  assertEquals(listed.find((l) => l.name === "style_diffusers")?.format, "diffusers");
  assertEquals(listed.find((l) => l.name === "unet_case")?.format, "unknown");
  // A file given on its own is named by its stem and shadows the folder.
  const own = new LoraLibrary(`${fixtures}lora`, ["/elsewhere/style_kohya.safetensors"]);
  assertEquals(own.resolve("style_kohya"), "/elsewhere/style_kohya.safetensors");
});
