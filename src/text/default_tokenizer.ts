// The CLIP tokenizer bundled with the program, for single-file checkpoints (they ship no tokenizer/ folder).
// SD 1.x and SD 2.x share the vocabulary and merges; they differ only in the pad token: SD 1.x pads with
// <|endoftext|> (= EOS), SD 2.x's tokenizer pads with "!" (id 0).

import vocab from "../../assets/clip-tokenizer/vocab.json" with { type: "json" };
import merges from "../../assets/clip-tokenizer/merges.txt" with { type: "text" };
import type { ModelFamily } from "../models/family.ts";
import { ClipTokenizer } from "./tokenizer.ts";

export function bundledClipTokenizer(family: ModelFamily): ClipTokenizer {
  return ClipTokenizer.fromVocabMerges(vocab as Record<string, number>, merges, {
    bos_token: "<|startoftext|>",
    eos_token: "<|endoftext|>",
    unk_token: "<|endoftext|>",
    pad_token: family === "sd2" ? "!" : "<|endoftext|>",
    model_max_length: 77,
  });
}
