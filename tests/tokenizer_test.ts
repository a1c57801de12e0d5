// CLIP tokenizer against tests/fixtures/tokenizer/reference_ids.json (40 prompts; golden tokenizer/README.md).

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { ClipTokenizer } from "../src/text/tokenizer.ts";

const dir = new URL("./fixtures/tokenizer/", import.meta.url).pathname;
interface PromptRow {
  name: string;
  text: string;
  hf_fast_tokenizer_json: number[];
  hf_slow_ftfy: number[];
  hf_slow_no_ftfy: number[];
  sd_input_ids: number[];
}
const reference = JSON.parse(Deno.readTextFileSync(dir + "reference_ids.json"));
const prompts: PromptRow[] = reference.prompts;

const fromJson = await ClipTokenizer.load(dir, { source: "tokenizer.json" });
const fromVocab = await ClipTokenizer.load(dir, { source: "vocab" });

for (
  const [mode, tokenizer] of [["tokenizer.json", fromJson], ["vocab.json + merges.txt", fromVocab]] as const
) {
  Deno.test(`tokenizer (${mode}): cleaning "none" equals hf_fast_tokenizer_json on all ${prompts.length} prompts`, () => {
    assertEquals([tokenizer.bosId, tokenizer.eosId, tokenizer.padId, tokenizer.maxLength], [
      49406,
      49407,
      49407,
      77,
    ]);
    for (const p of prompts) {
      assertEquals(tokenizer.encodeIds(p.text, "none"), p.hf_fast_tokenizer_json, p.name);
    }
  });

  Deno.test(`tokenizer (${mode}): cleaning "ftfy" / "basic" against the slow Python tokenizer`, () => {
    const ftfyMisses = prompts.filter((p) =>
      JSON.stringify(tokenizer.encodeIds(p.text, "ftfy")) !== JSON.stringify(p.hf_slow_ftfy)
    );
    const basicMisses = prompts.filter((p) =>
      JSON.stringify(tokenizer.encodeIds(p.text, "basic")) !== JSON.stringify(p.hf_slow_no_ftfy)
    );
    const noneVsSlow = prompts.filter((p) =>
      JSON.stringify(p.hf_fast_tokenizer_json) === JSON.stringify(p.hf_slow_ftfy)
    );
    console.log(
      `  none matches hf_slow_ftfy on ${noneVsSlow.length}/${prompts.length}; ` +
        `ftfy matches hf_slow_ftfy on ${prompts.length - ftfyMisses.length}/${prompts.length}` +
        (ftfyMisses.length ? ` (misses: ${ftfyMisses.map((p) => p.name)})` : "") +
        `; basic matches hf_slow_no_ftfy on ${prompts.length - basicMisses.length}/${prompts.length}` +
        (basicMisses.length ? ` (misses: ${basicMisses.map((p) => p.name)})` : ""),
    );
    assertEquals(ftfyMisses.map((p) => p.name), []);
    assertEquals(basicMisses.map((p) => p.name), []);
  });
}

Deno.test("tokenizer: 77-token rows (truncate matches sd_input_ids; chunk splits by 75)", () => {
  for (const p of prompts) {
    const { ids, truncated } = fromJson.chunks(p.text, "truncate", "ftfy");
    assertEquals(ids, [p.sd_input_ids], p.name);
    assertEquals(truncated, p.hf_slow_ftfy.length > 77, p.name);
  }
  const long = prompts.find((p) => p.name === "long_over_77")!;
  const content = long.hf_slow_ftfy.slice(1, -1); // 99 tokens
  const chunked = fromJson.chunks(long.text, "chunk", "ftfy");
  assert(!chunked.truncated);
  assertEquals(chunked.ids.length, 2);
  assertEquals(chunked.ids[0], [49406, ...content.slice(0, 75), 49407]);
  assertEquals(chunked.ids[1], [49406, ...content.slice(75), 49407, ...new Array(77 - 26).fill(49407)]);
  assertEquals(fromJson.chunks("", "chunk").ids, [[49406, ...new Array(76).fill(49407)]]);
});

Deno.test("tokenizer: default cleaning is ftfy; decode round-trips plain text", () => {
  assertEquals(fromJson.cleaning, "ftfy");
  const mojibake = prompts.find((p) => p.name === "mojibake")!;
  assertEquals(fromJson.encodeIds(mojibake.text), mojibake.hf_slow_ftfy);
  assertEquals(fromJson.decode(fromJson.encodeIds("a photo of a cat")).trim(), "a photo of a cat");
});
