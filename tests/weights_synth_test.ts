// Checkpoint access (diffusers folders and single files, by diffusers names), validation errors, model
// detection, and synthetic weights.
//
// Single-file checkpoints are built here from the tiny fixtures by renaming their tensors through the name
// maps (fusing OpenCLIP's q/k/v, reshaping the VAE attention to 1×1 convs). Full-size detection runs on
// sparse files: a real header with every SD 1.5 / 2.1 tensor, and a data section that is never written.

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { f16ToF32Array } from "../src/gpu/device.ts";
import { readTensor } from "../src/gpu/tensor.ts";
import type { ClipTextConfig } from "../src/models/clip/config.ts";
import { referenceConfigs, SD15_CONFIG_JSON } from "../src/models/presets.ts";
import type { UNetConfig } from "../src/models/unet/config.ts";
import type { VaeConfig } from "../src/models/vae/config.ts";
import {
  type ComponentSource,
  describeModel,
  describeOpenedModel,
  openModel,
  validate,
} from "../src/models/checkpoint/index.ts";
import { clipTensorSpecs, expectedTensors, unetTensorSpecs } from "../src/models/expected.ts";
import {
  clipNameMap,
  type NameMap,
  unetNameMap,
  vaeNameMap,
} from "../src/models/checkpoint/single_file_names.ts";
import { SafetensorsFile, writeSafetensors } from "../src/weights/safetensors.ts";
import { initFor, synthModelFolder, synthTensorBits } from "../src/models/synth.ts";
import { synthWeightsMain } from "../src/commands/synth_weights.ts";
import { testGpu } from "./util.ts";
import {
  FIX,
  json,
  loadAll,
  numel,
  TINY,
  TINY_FILES,
  tinyClip,
  tinyClipGelu,
  tinySd2Unet,
  tinyUnet,
  tinyVae,
  writeTinySd1SingleFile,
  writeTinySd2SingleFile,
} from "./single_file_fixture.ts";

function issueTexts(c: ComponentSource): string[] {
  return validate(c).issues.map((i) => i.message);
}

/** A safetensors file whose header lists the tensors and whose data section is a hole (sparse file). */
async function writeSparseSafetensors(path: string, tensors: Map<string, number[]>) {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const name of [...tensors.keys()].sort()) {
    const shape = tensors.get(name)!;
    const bytes = numel(shape) * 2;
    header[name] = { dtype: "F16", shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let text = JSON.stringify(header);
  text += " ".repeat((8 - ((text.length + 8) % 8)) % 8);
  const headerBytes = new TextEncoder().encode(text);
  using f = await Deno.open(path, { write: true, create: true, truncate: true });
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  await f.write(len);
  let done = 0;
  while (done < headerBytes.length) done += await f.write(headerBytes.subarray(done));
  await f.truncate(8 + headerBytes.length + offset);
}

/** Original keys and shapes of a full single file built from the maps (fused keys once). */
function originalShapes(maps: NameMap[], extras: [string, number[]][] = []): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const m of maps) for (const e of m.entries) out.set(e.original, e.originalShape);
  for (const [k, s] of extras) out.set(k, s);
  return out;
}

async function withTempDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "weights_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function assertSameBits(component: ComponentSource, file: string, names?: string[]) {
  using f = await SafetensorsFile.open(file);
  for (const name of names ?? f.names()) {
    const got = await component.readF16Bits(name);
    const want = await f.readF16Bits(name);
    assertEquals(got.length, want.length, name);
    assert(got.every((v, i) => v === want[i]), `${name}: bits differ`);
  }
}

// ---- diffusers folders ----

Deno.test("openModel: tiny diffusers folder", async () => {
  const model = await openModel(TINY);
  try {
    assertEquals(model.format, "diffusers");
    assertEquals(model.family, "sd1");
    assertEquals(model.predictionType, "epsilon");
    assert(/diffusers default/.test(model.predictionTypeSource));
    assertEquals(model.tokenizerDir, `${TINY}/tokenizer`);
    assertEquals(model.unet!.config, tinyUnet());
    assertEquals(model.vae!.config, tinyVae());
    assertEquals(model.textEncoder!.config, tinyClip());
    for (const c of [model.unet!, model.vae!, model.textEncoder!]) {
      const r = validate(c);
      assert(r.ok, r.summary);
      assertEquals(r.looksLike, null);
    }
    assertEquals(model.unet!.names().length, 684);
    assertEquals(model.unet!.tensor("conv_in.weight"), { dtype: "F16", shape: [32, 4, 3, 3] });
    assertEquals(model.vae!.tensor("decoder.mid_block.attentions.0.to_q.weight").shape, [64, 64]);
    await assertSameBits(model.unet!, TINY_FILES.unet, [
      "conv_in.weight",
      "mid_block.attentions.0.proj_in.weight",
    ]);
    const f32 = await model.textEncoder!.readF32("text_model.final_layer_norm.weight");
    const bits = await model.textEncoder!.readF16Bits("text_model.final_layer_norm.weight");
    assertEquals(Array.from(f32), Array.from(f16ToF32Array(bits)));
    assert(/no tensor "nope"/.test(await model.unet!.readF16Bits("nope").then(() => "", (e) => e.message)));
  } finally {
    model.close();
  }
  const text = await describeModel(TINY);
  assert(/version: SD 1\.x/.test(text), text);
  assertEquals(text.match(/— OK/g)?.length, 3, text);
});

Deno.test("validate: missing, extra and misshapen tensors are named", async () => {
  await withTempDir(async (dir) => {
    await Deno.mkdir(`${dir}/unet`, { recursive: true });
    await Deno.copyFile(`${TINY}/unet/config.json`, `${dir}/unet/config.json`);
    await Deno.copyFile(`${TINY}/model_index.json`, `${dir}/model_index.json`);
    const tensors = await loadAll(TINY_FILES.unet);
    delete tensors["down_blocks.0.resnets.0.conv1.bias"];
    tensors["down_blocks.0.resnets.0.extra.weight"] = { dtype: "F16", shape: [4], data: new Uint16Array(4) };
    tensors["mid_block.attentions.0.proj_in.weight"] = {
      dtype: "F16",
      shape: [64, 64],
      data: new Uint16Array(64 * 64),
    };
    tensors["conv_out.bias"] = { dtype: "I32", shape: [4], data: new Int32Array(4) };
    await writeSafetensors(`${dir}/unet/diffusion_pytorch_model.safetensors`, tensors);
    const model = await openModel(dir);
    try {
      assertEquals(model.vae, null);
      assert(model.notes.some((n) => /vae\/ is missing/.test(n)));
      const r = validate(model.unet!);
      assert(!r.ok);
      assertEquals(r.issues.map((i) => [i.kind, i.tensor]).sort(), [
        ["dtype", "conv_out.bias"],
        ["extra", "down_blocks.0.resnets.0.extra.weight"],
        ["missing", "down_blocks.0.resnets.0.conv1.bias"],
        ["shape", "mid_block.attentions.0.proj_in.weight"],
      ]);
      const text = issueTexts(model.unet!).join("\n");
      assert(text.includes('missing tensor "down_blocks.0.resnets.0.conv1.bias" [32]'), text);
      assert(
        text.includes(
          'tensor "mid_block.attentions.0.proj_in.weight" has shape [64,64], expected [64,64,1,1]',
        ),
        text,
      );
      assert(text.includes('unexpected tensor "down_blocks.0.resnets.0.extra.weight"'), text);
      assert(r.summary.startsWith("unet ("), r.summary);
      const described = describeOpenedModel(model);
      assert(/unet: .*4 problem\(s\)/.test(described) && /vae: MISSING/.test(described), described);
    } finally {
      model.close();
    }
  });
});

Deno.test("validate: SD 2.x UNet weights under an SD 1.x config say what the file looks like", async () => {
  await withTempDir(async (dir) => {
    await Deno.mkdir(`${dir}/unet`, { recursive: true });
    await Deno.copyFile(`${TINY}/unet/config.json`, `${dir}/unet/config.json`);
    await Deno.copyFile(TINY_FILES.unetSd2, `${dir}/unet/diffusion_pytorch_model.safetensors`);
    const model = await openModel(dir);
    try {
      const r = validate(model.unet!);
      assert(!r.ok);
      assert(
        r.issues.some((i) => i.kind === "shape" && i.tensor === "down_blocks.0.attentions.0.proj_in.weight"),
      );
      assert(
        r.looksLike?.includes(
          "looks like SD 2.x-style UNet (Linear proj_in/proj_out, cross-attention context width 48",
        ) &&
          r.looksLike.includes(
            "config describes SD 1.x-style UNet (1×1 conv proj_in/proj_out, cross-attention context width 32",
          ),
        r.looksLike ?? "no looksLike",
      );
    } finally {
      model.close();
    }
    // Full-size: an SD 2.1 UNet (sparse file) under SD 1.5's config is recognised exactly.
    const sd15 = referenceConfigs("sd15");
    await Deno.writeTextFile(`${dir}/unet/config.json`, JSON.stringify(SD15_CONFIG_JSON.unet));
    await writeSparseSafetensors(
      `${dir}/unet/diffusion_pytorch_model.safetensors`,
      expectedTensors("unet", referenceConfigs("sd21").unet),
    );
    const big = await openModel(dir);
    try {
      assertEquals(big.unet!.config, sd15.unet);
      const r = validate(big.unet!);
      assert(
        r.looksLike?.startsWith("the file's tensors match Stable Diffusion 2.1's unet exactly"),
        r.looksLike ?? "none",
      );
    } finally {
      big.close();
    }
  });
});

// ---- single files ----

Deno.test("single file SD 1.x: tiny weights through the name maps open, validate and read back", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/tiny-v1.safetensors`;
    await writeTinySd1SingleFile(path);
    // Without overrides: structure from the shapes, SD 1.x defaults for what shapes don't hold.
    const plain = await openModel(path);
    try {
      assertEquals(plain.format, "single-file");
      assertEquals(plain.family, "sd1");
      assertEquals(plain.predictionType, "epsilon");
      assert(/assumed/.test(plain.predictionTypeSource));
      const u = plain.unet!.config;
      assertEquals(
        [
          u.block_out_channels,
          u.layers_per_block,
          u.cross_attention_dim,
          u.use_linear_projection,
          u.down_block_types,
          u.up_block_types,
        ],
        [[32, 64, 64, 64], 2, 32, false, tinyUnet().down_block_types, tinyUnet().up_block_types],
      );
      assertEquals([u.norm_num_groups, u.attention_head_dim], [32, 8]);
      assert(plain.unet!.notes.some((n) => /norm_num_groups assumed 32/.test(n)));
      assert(plain.textEncoder!.notes.some((n) => /not a multiple of 64/.test(n)));
      for (const c of [plain.unet!, plain.vae!, plain.textEncoder!]) {
        assert(validate(c).ok, validate(c).summary);
      }
      assertEquals(plain.ignoredTensors.sort(), [
        "alphas_cumprod",
        "model_ema.decay",
        "model_ema.num_updates",
      ]);
      assertEquals(plain.textEncoder!.ignoredKeys(), [
        "cond_stage_model.transformer.text_model.embeddings.position_ids",
      ]);
      const text = describeOpenedModel(plain);
      assert(/single-file checkpoint/.test(text) && /ignored: 3 non-model tensors/.test(text), text);
    } finally {
      plain.close();
    }
    // With the non-structural fields given, the configs are exactly the tiny ones.
    const model = await openModel(path, {
      unet: { norm_num_groups: 8, attention_head_dim: 4, sample_size: 16 },
      vae: { norm_num_groups: 8, sample_size: 64 },
      textEncoder: { num_attention_heads: 4, projection_dim: 32 },
    });
    try {
      assertEquals(model.unet!.config, tinyUnet());
      assertEquals(model.vae!.config, tinyVae());
      assertEquals(model.textEncoder!.config, tinyClip());
      // Every tensor reads back bit-identical under its diffusers name (VAE attention reshaped to Linear).
      await assertSameBits(model.unet!, TINY_FILES.unet);
      await assertSameBits(model.vae!, TINY_FILES.vae);
      await assertSameBits(model.textEncoder!, TINY_FILES.clip);
      assertEquals(model.vae!.tensor("encoder.mid_block.attentions.0.to_k.weight").shape, [64, 64]);
      assertEquals(
        model.vae!.fileKey("encoder.mid_block.attentions.0.to_k.weight"),
        "first_stage_model.encoder.mid.attn_1.k.weight",
      );
    } finally {
      model.close();
    }
  });
});

Deno.test("single file SD 2.x: OpenCLIP layout, fused q/k/v, prediction type guessed or overridden", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/tiny-sd2.safetensors`;
    await writeTinySd2SingleFile(path);
    const model = await openModel(path, {
      unet: { norm_num_groups: 8, attention_head_dim: [2, 4, 4, 4], sample_size: 16 },
      vae: { norm_num_groups: 8, sample_size: 64 },
      textEncoder: { num_attention_heads: 4, projection_dim: 32 },
    });
    try {
      assertEquals(model.family, "sd2");
      assertEquals(model.unet!.config, tinySd2Unet());
      assertEquals(model.textEncoder!.config, tinyClipGelu());
      assertEquals(
        model.textEncoder!.config.num_hidden_layers,
        3,
        "4 resblocks in the file, SD 2.x uses 3 (penultimate)",
      );
      assertEquals(model.predictionType, "v_prediction");
      assert(/GUESSED/.test(model.predictionTypeSource), model.predictionTypeSource);
      assertEquals(model.scheduler.prediction_type, "v_prediction");
      for (const c of [model.unet!, model.vae!, model.textEncoder!]) {
        assert(validate(c).ok, validate(c).summary);
      }
      assertEquals(
        model.textEncoder!.ignoredKeys().filter((k) => !k.includes("resblocks.3.")).sort(),
        ["cond_stage_model.model.logit_scale", "cond_stage_model.model.text_projection"],
      );
      await assertSameBits(model.unet!, TINY_FILES.unetSd2);
      await assertSameBits(model.textEncoder!, TINY_FILES.clipGelu);
      assertEquals(model.textEncoder!.tensor("text_model.encoder.layers.1.self_attn.v_proj.weight").shape, [
        32,
        32,
      ]);

      // Uploads: a plain streamed tensor, a reshaped one (VAE 1×1 conv → Linear), a slice of a fused one.
      const gpu = await testGpu();
      for (
        const [c, name] of [
          [model.unet!, "conv_in.weight"],
          [model.vae!, "decoder.mid_block.attentions.0.to_out.0.weight"],
          [model.textEncoder!, "text_model.encoder.layers.2.self_attn.k_proj.weight"],
        ] as [ComponentSource, string][]
      ) {
        const t = await c.uploadF16(gpu, name);
        assertEquals([...t.shape], c.tensor(name).shape, name);
        const got = await readTensor(gpu, t);
        assertEquals(Array.from(got), Array.from(f16ToF32Array(await c.readF16Bits(name))), name);
        t.destroy();
      }
    } finally {
      model.close();
    }
    const overridden = await openModel(path, { predictionType: "epsilon" });
    assertEquals([overridden.predictionType, overridden.predictionTypeSource], ["epsilon", "override"]);
    overridden.close();
    await Deno.rename(path, `${dir}/tiny-sd2-512-base.safetensors`);
    const base = await openModel(`${dir}/tiny-sd2-512-base.safetensors`);
    assertEquals(base.predictionType, "epsilon");
    assert(/file name/.test(base.predictionTypeSource));
    base.close();
  });
});

Deno.test("single file: missing, extra and misshapen tensors name both the diffusers and the file key", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/broken.safetensors`;
    await writeTinySd2SingleFile(path, (t) => {
      delete t["first_stage_model.decoder.mid.attn_1.k.weight"];
      t["model.diffusion_model.input_blocks.1.1.unexpected.weight"] = {
        dtype: "F16",
        shape: [2],
        data: new Uint16Array(2),
      };
      t["cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight"] = {
        dtype: "F16",
        shape: [32, 32],
        data: new Uint16Array(32 * 32),
      };
    });
    const model = await openModel(path, { unet: { norm_num_groups: 8 }, vae: { norm_num_groups: 8 } });
    try {
      const vae = issueTexts(model.vae!);
      assertEquals(vae, [
        'missing tensor "decoder.mid_block.attentions.0.to_k.weight" (file key "first_stage_model.decoder.mid.attn_1.k.weight") [64,64]',
      ]);
      const unet = issueTexts(model.unet!);
      assertEquals(unet, [
        'unexpected tensor "model.diffusion_model.input_blocks.1.1.unexpected.weight" (not part of this unet config)',
      ]);
      const clip = issueTexts(model.textEncoder!);
      assertEquals(clip.length, 3);
      for (const p of ["q", "k", "v"]) {
        const want = `tensor "text_model.encoder.layers.1.self_attn.${p}_proj.weight" (file key ` +
          `"cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight"): the fused tensor has shape [32,32], ` +
          `expected [96,32]`;
        assert(clip.includes(want), `${clip.join("\n")}\ndoes not include\n${want}`);
      }
      const err = await model.textEncoder!.readF16Bits("text_model.encoder.layers.1.self_attn.q_proj.weight")
        .then(
          () => "",
          (e) => e.message,
        );
      assert(/in_proj_weight" has shape \[32,32\], expected \[96,32\]/.test(err), err);
    } finally {
      model.close();
    }
  });
});

Deno.test("single file detection: full-size SD 1.5 and SD 2.1 layouts give the reference configs", async () => {
  await withTempDir(async (dir) => {
    const sd15 = referenceConfigs("sd15");
    const sd15Path = `${dir}/v1-5-pruned-emaonly.safetensors`;
    await writeSparseSafetensors(
      sd15Path,
      originalShapes(
        [unetNameMap(sd15.unet), vaeNameMap(sd15.vae), clipNameMap(sd15.textEncoder, "transformers")],
        [["alphas_cumprod", [1000]], ["cond_stage_model.transformer.text_model.embeddings.position_ids", [
          1,
          77,
        ]]],
      ),
    );
    const m1 = await openModel(sd15Path);
    try {
      assertEquals(m1.family, "sd1");
      assertEquals(m1.unet!.config, sd15.unet);
      assertEquals(m1.vae!.config, sd15.vae);
      assertEquals(m1.textEncoder!.config, sd15.textEncoder);
      for (const c of [m1.unet!, m1.vae!, m1.textEncoder!]) assert(validate(c).ok, validate(c).summary);
      assertEquals(m1.textEncoder!.notes, []);
    } finally {
      m1.close();
    }
    const sd21 = referenceConfigs("sd21");
    const sd21Path = `${dir}/v2-1_768-ema-pruned.safetensors`;
    await writeSparseSafetensors(
      sd21Path,
      originalShapes(
        [
          unetNameMap(sd21.unet),
          vaeNameMap(sd21.vae),
          clipNameMap({ ...sd21.textEncoder, num_hidden_layers: 24 }, "openclip"),
        ],
        [["cond_stage_model.model.logit_scale", []], ["cond_stage_model.model.text_projection", [
          1024,
          1024,
        ]]],
      ),
    );
    const m2 = await openModel(sd21Path);
    try {
      assertEquals(m2.family, "sd2");
      assertEquals(m2.predictionType, "v_prediction");
      assert(/file name/.test(m2.predictionTypeSource), m2.predictionTypeSource);
      assertEquals(m2.unet!.config, sd21.unet);
      assertEquals(m2.vae!.config, sd21.vae);
      assertEquals(m2.textEncoder!.config, sd21.textEncoder);
      for (const c of [m2.unet!, m2.vae!, m2.textEncoder!]) assert(validate(c).ok, validate(c).summary);
      const text = describeOpenedModel(m2);
      assert(/version: SD 2\.x/.test(text) && /865,910,724 parameters/.test(text), text);
    } finally {
      m2.close();
    }
  });
});

// ---- synthetic weights ----

function shrunkenConfigs(): {
  unet: UNetConfig;
  vae: VaeConfig;
  textEncoder: ClipTextConfig;
  scheduler: Record<string, unknown>;
} {
  const full = referenceConfigs("sd21");
  return {
    unet: {
      ...full.unet,
      block_out_channels: [32, 64],
      layers_per_block: 1,
      attention_head_dim: [2, 4],
      norm_num_groups: 8,
      cross_attention_dim: 32,
      down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"],
      up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"],
    },
    vae: {
      ...full.vae,
      block_out_channels: [32, 64],
      layers_per_block: 1,
      norm_num_groups: 8,
      down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D"],
      up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    },
    textEncoder: {
      ...full.textEncoder,
      hidden_size: 32,
      intermediate_size: 64,
      num_attention_heads: 2,
      num_hidden_layers: 2,
      vocab_size: 1000,
    },
    scheduler: full.scheduler,
  };
}

Deno.test("synth: a shrunken folder opens with openModel, validates, round-trips its configs", async () => {
  await withTempDir(async (dir) => {
    const configs = shrunkenConfigs();
    const lines: string[] = [];
    const report = await synthModelFolder(dir, configs, {
      seed: 7,
      tokenizerDir: `${FIX}tokenizer`,
      tokenizerPadToken: "!",
      log: (l) => lines.push(l),
    });
    assertEquals(report.files.length, 3);
    assertEquals(lines.length, 3);
    const model = await openModel(dir);
    try {
      assertEquals(model.unet!.config, configs.unet);
      assertEquals(model.vae!.config, configs.vae);
      assertEquals(model.textEncoder!.config, configs.textEncoder);
      assertEquals(model.predictionType, "v_prediction");
      assertEquals(model.family, "sd2");
      for (const c of [model.unet!, model.vae!, model.textEncoder!]) {
        assert(validate(c).ok, validate(c).summary);
      }
      assertEquals(report.bytes, report.files.reduce((n, f) => n + Deno.statSync(f.path).size, 0));
      // Values: finite, with the intended distribution per role; deterministic per (seed, name).
      const specs = [...unetTensorSpecs(configs.unet), ...clipTensorSpecs(configs.textEncoder)];
      for (const spec of specs) {
        const c = spec.name.startsWith("text_model") ? model.textEncoder! : model.unet!;
        const v = await c.readF32(spec.name);
        assert(v.every(Number.isFinite), `${spec.name} has non-finite values`);
        if (v.length < 4096) continue;
        const { mean, std } = initFor(spec);
        let s = 0;
        let s2 = 0;
        for (const x of v) {
          s += x;
          s2 += x * x;
        }
        const m = s / v.length;
        const sd = Math.sqrt(s2 / v.length - m * m);
        assert(
          Math.abs(m - mean) < 5 * std / Math.sqrt(v.length) + 1e-3 * std,
          `${spec.name}: mean ${m}, want ${mean}`,
        );
        assert(Math.abs(sd / std - 1) < 0.05, `${spec.name}: std ${sd}, want ${std}`);
      }
      const spec = specs.find((s) => s.name === "down_blocks.0.resnets.0.conv1.weight")!;
      assertEquals(
        Array.from(await model.unet!.readF16Bits(spec.name)),
        Array.from(synthTensorBits(spec, 7)),
      );
      assert(
        !synthTensorBits(spec, 8).every((b, i) => b === synthTensorBits(spec, 7)[i]),
        "seed changes values",
      );
      const norm = await model.unet!.readF32("conv_norm_out.weight");
      assert(norm.every((x) => x > 0.5 && x < 1.5));
    } finally {
      model.close();
    }
    // Tokenizer copied, with SD 2.x's pad token; configs as files.
    assertEquals(json(`${dir}/tokenizer/special_tokens_map.json`).pad_token, "!");
    assertEquals(json(`${dir}/tokenizer/tokenizer_config.json`).pad_token, "!");
    assertEquals(
      Deno.readTextFileSync(`${dir}/tokenizer/vocab.json`),
      Deno.readTextFileSync(`${FIX}tokenizer/vocab.json`),
    );
    assertEquals(json(`${dir}/model_index.json`).scheduler, ["diffusers", "DDIMScheduler"]);
    assertEquals(json(`${dir}/unet/config.json`)._class_name, "UNet2DConditionModel");
    const text = await describeModel(dir);
    assertEquals(text.match(/— OK/g)?.length, 3, text);
  });
});

Deno.test("synth: CLI arguments are checked before anything is written", async () => {
  await withTempDir(async (dir) => {
    const quiet = console.error;
    console.error = () => {};
    try {
      assertEquals(await synthWeightsMain(["--model", "sd3", "--out", dir]), 2);
      assertEquals(await synthWeightsMain(["--model", "sd15"]), 2);
      assertEquals(await synthWeightsMain(["--model", "sd15", "--out", dir, "--seed", "x"]), 2);
      await Deno.writeTextFile(`${dir}/keep.txt`, "x");
      assertEquals(await synthWeightsMain(["--model", "sd15", "--out", dir]), 2);
    } finally {
      console.error = quiet;
    }
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["keep.txt"]);
  });
});
