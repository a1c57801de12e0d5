// CLIP tokenizer for Stable Diffusion prompts, on npm @huggingface/tokenizers (a JS port of HF tokenizers).
//
// Loads a `tokenizer.json`, or builds the same fast tokenizer from the slow files (vocab.json + merges.txt
// [+ tokenizer_config.json, special_tokens_map.json]) with the structure of openai/clip-vit-large-patch14's
// tokenizer.json: NFC → `\s+` → " " → lowercase; Split (keep matches of CLIP's word regex, drop whitespace);
// ByteLevel; BPE with `</w>` end-of-word suffix, unk <|endoftext|>; BOS … EOS added by a RobertaProcessing.
//
// Prompt cleaning (see text_cleaning.ts): "none" reproduces tokenizer.json / Rust tokenizers exactly; "ftfy"
// reproduces transformers' slow CLIPTokenizer with ftfy installed (what diffusers' SD pipelines use then, and
// what the e2e fixtures were made with) as far as text_cleaning.ts documents; "basic" the slow tokenizer
// without ftfy. The default is "ftfy".

import { Tokenizer } from "@huggingface/tokenizers";
import { cleanPrompt, type TextCleaning } from "./text_cleaning.ts";

export type { TextCleaning };

/** Options beyond the tokenizer files. */
export interface ClipTokenizerOptions {
  /** Prompt cleaning before BPE (default "ftfy"). */
  cleaning?: TextCleaning;
}

/** A 77-token row set for the text encoder. */
export interface TokenChunks {
  /** Rows of `maxLength` ids: BOS + ≤ maxLength − 2 tokens + EOS, then padding. */
  ids: number[][];
  /** True when "truncate" mode dropped tokens. */
  truncated: boolean;
}

type TokenizerConfigJson = Record<string, unknown>;

const CLIP_SPLIT_REGEX =
  "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";

/** A special-token entry of tokenizer_config.json / special_tokens_map.json: a string or {content: …}. */
function tokenContent(entry: unknown): string | undefined {
  if (typeof entry === "string") return entry;
  if (entry && typeof entry === "object" && typeof (entry as { content?: unknown }).content === "string") {
    return (entry as { content: string }).content;
  }
  return undefined;
}

export class ClipTokenizer {
  readonly bosId: number;
  readonly eosId: number;
  /** SD 1.x: <|endoftext|> (= EOS, 49407); SD 2.x: "!" (0). */
  readonly padId: number;
  /** Row length the text encoder takes (model_max_length, 77). */
  readonly maxLength: number;
  readonly cleaning: TextCleaning;

  private constructor(
    private readonly tokenizer: Tokenizer,
    config: TokenizerConfigJson,
    options: ClipTokenizerOptions,
  ) {
    this.cleaning = options.cleaning ?? "ftfy";
    const idOf = (name: string | undefined, what: string): number => {
      const id = name === undefined ? undefined : tokenizer.token_to_id(name);
      if (id === undefined) {
        throw new Error(`tokenizer: ${what} token ${JSON.stringify(name)} is not in the vocabulary`);
      }
      return id;
    };
    this.bosId = idOf(tokenContent(config.bos_token) ?? "<|startoftext|>", "bos");
    this.eosId = idOf(tokenContent(config.eos_token) ?? "<|endoftext|>", "eos");
    const pad = tokenContent(config.pad_token);
    this.padId = pad === undefined ? this.eosId : idOf(pad, "pad");
    const maxLength = config.model_max_length;
    this.maxLength = typeof maxLength === "number" && maxLength >= 3 && maxLength <= 4096 ? maxLength : 77;
  }

  /** From a parsed tokenizer.json (+ optional tokenizer_config.json / special_tokens_map.json merged). */
  static fromTokenizerJson(
    tokenizerJson: Record<string, unknown>,
    config: TokenizerConfigJson = {},
    options: ClipTokenizerOptions = {},
  ): ClipTokenizer {
    return new ClipTokenizer(new Tokenizer(tokenizerJson, config), config, options);
  }

  /** From vocab.json (parsed) and merges.txt (text), building the CLIP tokenizer.json structure. */
  static fromVocabMerges(
    vocab: Record<string, number>,
    mergesText: string,
    config: TokenizerConfigJson = {},
    options: ClipTokenizerOptions = {},
  ): ClipTokenizer {
    return ClipTokenizer.fromTokenizerJson(
      buildClipTokenizerJson(vocab, mergesText, config),
      config,
      options,
    );
  }

  /**
   * From a tokenizer folder: tokenizer.json if present (unless `source` is "vocab"), else vocab.json +
   * merges.txt; tokenizer_config.json and special_tokens_map.json are read when present.
   */
  static async load(
    dir: string,
    options: ClipTokenizerOptions & { source?: "auto" | "tokenizer.json" | "vocab" } = {},
  ): Promise<ClipTokenizer> {
    const path = (name: string) => `${dir.replace(/\/+$/, "")}/${name}`;
    const readJson = async (name: string): Promise<Record<string, unknown> | undefined> => {
      try {
        return JSON.parse(await Deno.readTextFile(path(name)));
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return undefined;
        throw new Error(`tokenizer: cannot read ${path(name)}: ${(e as Error).message}`);
      }
    };
    // special_tokens_map.json first, tokenizer_config.json overrides (as transformers resolves them)
    const config = {
      ...(await readJson("special_tokens_map.json")),
      ...(await readJson("tokenizer_config.json")),
    };
    const source = options.source ?? "auto";
    if (source !== "vocab") {
      const tokenizerJson = await readJson("tokenizer.json");
      if (tokenizerJson) return ClipTokenizer.fromTokenizerJson(tokenizerJson, config, options);
      if (source === "tokenizer.json") throw new Error(`tokenizer: ${path("tokenizer.json")} not found`);
    }
    const vocab = await readJson("vocab.json");
    let merges: string;
    try {
      merges = await Deno.readTextFile(path("merges.txt"));
    } catch (e) {
      throw new Error(
        `tokenizer: ${dir} has neither tokenizer.json nor vocab.json + merges.txt (${(e as Error).message})`,
      );
    }
    if (!vocab) throw new Error(`tokenizer: ${path("vocab.json")} not found`);
    return ClipTokenizer.fromVocabMerges(vocab as Record<string, number>, merges, config, options);
  }

  /** BOS + every token of the (cleaned) prompt, untruncated + EOS. */
  encodeIds(prompt: string, cleaning: TextCleaning = this.cleaning): number[] {
    const ids = this.tokenizer.encode(cleanPrompt(prompt, cleaning)).ids;
    return Array.from(ids, Number);
  }

  /** The prompt's tokens without BOS/EOS. */
  contentIds(prompt: string, cleaning: TextCleaning = this.cleaning): number[] {
    return this.encodeIds(prompt, cleaning).slice(1, -1);
  }

  /**
   * Rows of `maxLength` (77) ids. "truncate": one row, BOS + first 75 tokens + EOS, padded with the pad id
   * (SD 1.x `tokenizer(..., padding="max_length", truncation=True)`; the EOS stays at index 76 when cut).
   * "chunk": the tokens split into runs of 75, one row each (at least one row, even for an empty prompt).
   */
  chunks(
    prompt: string,
    mode: "chunk" | "truncate" = "truncate",
    cleaning: TextCleaning = this.cleaning,
  ): TokenChunks {
    const content = this.contentIds(prompt, cleaning);
    const perRow = this.maxLength - 2;
    if (mode === "truncate") {
      return { ids: [this.row(content.slice(0, perRow))], truncated: content.length > perRow };
    }
    const rows: number[][] = [];
    for (let i = 0; i < content.length || rows.length === 0; i += perRow) {
      rows.push(this.row(content.slice(i, i + perRow)));
    }
    return { ids: rows, truncated: false };
  }

  /** One row: BOS + ≤ maxLength − 2 content tokens + EOS, padded with the pad id to maxLength. */
  row(tokens: number[]): number[] {
    if (tokens.length > this.maxLength - 2) {
      throw new Error(`tokenizer: ${tokens.length} tokens do not fit a ${this.maxLength}-token row`);
    }
    const ids = [this.bosId, ...tokens, this.eosId];
    while (ids.length < this.maxLength) ids.push(this.padId);
    return ids;
  }

  /** Ids back to text (special tokens dropped). */
  decode(ids: number[]): string {
    return this.tokenizer.decode(ids, { skip_special_tokens: true });
  }
}

/**
 * The tokenizer.json CLIP's fast tokenizer has, built from the slow files. merges.txt: an optional
 * "#version" header line, then one "left right" merge per line in rank order.
 */
export function buildClipTokenizerJson(
  vocab: Record<string, number>,
  mergesText: string,
  config: TokenizerConfigJson = {},
): Record<string, unknown> {
  const bos = tokenContent(config.bos_token) ?? "<|startoftext|>";
  const eos = tokenContent(config.eos_token) ?? "<|endoftext|>";
  const unk = tokenContent(config.unk_token) ?? eos;
  for (const [what, token] of [["bos", bos], ["eos", eos], ["unk", unk]]) {
    if (!(token in vocab)) {
      throw new Error(`tokenizer: ${what} token ${JSON.stringify(token)} not in vocab.json`);
    }
  }
  const lines = mergesText.split(/\r?\n/);
  if (lines[0]?.startsWith("#version")) lines.shift();
  const merges = lines.filter((line) => line.length > 0);
  for (const merge of merges) {
    if (merge.split(" ").length !== 2) {
      throw new Error(`tokenizer: malformed merges.txt line ${JSON.stringify(merge)}`);
    }
  }
  const added = (content: string, normalized: boolean) => ({
    id: vocab[content],
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized,
    special: true,
  });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: bos === eos ? [added(bos, false)] : [added(bos, true), added(eos, false)],
    normalizer: {
      type: "Sequence",
      normalizers: [{ type: "NFC" }, { type: "Replace", pattern: { Regex: "\\s+" }, content: " " }, {
        type: "Lowercase",
      }],
    },
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: CLIP_SPLIT_REGEX }, behavior: "Removed", invert: true },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
      ],
    },
    post_processor: {
      type: "RobertaProcessing",
      sep: [eos, vocab[eos]],
      cls: [bos, vocab[bos]],
      trim_offsets: false,
      add_prefix_space: false,
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: unk,
      continuing_subword_prefix: "",
      end_of_word_suffix: "</w>",
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges,
    },
  };
}
