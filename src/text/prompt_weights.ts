// Prompt weighting ("attention"/"emphasis") in AUTOMATIC1111's syntax, so prompts written for A1111 mean
// the same here:
//
//   (text)        weight × 1.1; nested: ((text)) × 1.21
//   (text:1.3)    weight × 1.3 (any number Python's float() reads from `[+-]?[.0-9]+`: 0.5, .5, -1, 2.)
//   [text]        weight ÷ 1.1
//   \( \) \[ \]   literal brackets; \\ is one backslash
//   BREAK         (upper case, a whole word) ends the current 75-token chunk
//
// Written from the behaviour of A1111's parse_prompt_attention (modules/prompt_parser.py), not its code.
// Where brackets don't balance, A1111's results are kept, because prompts are shared between the tools:
//   - an unclosed "(" or "[" applies its ×1.1 / ÷1.1 to everything after it (outermost first);
//   - a ")" or "]" with nothing open is literal text, and so is ":1.5)" with no "(" open;
//   - a weight needs ")": "(a:1.5]" is the text "a:1.5]" (no "[" is open), and its "(" stays open;
//   - an empty or non-numeric weight is literal text: "(text:)" reads "text:" at × 1.1;
//   - "1e1" is not a weight (A1111's weight pattern has no exponent): "(a:1e1)" is "a:1e1" at × 1.1;
//     digits are ASCII only (Python's \d would also take other scripts' decimal digits);
//   - a lone backslash (not before ( ) [ ] \) is dropped: "a\b" reads "ab";
//   - adjacent pieces with exactly equal weights are merged before tokenizing: "(a)(b)" tokenizes "ab".
// A1111 also lists empty pieces (around BREAK, for a lone backslash, [["", 1]] for an empty prompt); they
// give no tokens and never stand between two pieces that could merge, so they are left out here.
// Two deliberate differences, where A1111 fails or does something nobody writes on purpose:
//   - a malformed number inside "(", e.g. "(a:1.2.3)", makes A1111 raise (Python's float() rejects it); here
//     it is read as text, like an empty weight: "a:1.2.3" at × 1.1;
//   - BREAK inside brackets is encoded by A1111 as the word "break" with a negative weight (its BREAK marker
//     weight −1 gets multiplied by the brackets); here BREAK always ends the chunk.
// Other text, including extra-network tags such as <lora:name:0.8>, passes through unchanged.

import type { ClipTokenizer } from "./tokenizer.ts";
import { PY_WHITESPACE } from "./text_cleaning.ts";

export const PROMPT_WEIGHTINGS = ["none", "a1111"] as const;
/** "none": the prompt is plain text (diffusers); "a1111": A1111's weighting syntax above. */
export type PromptWeighting = typeof PROMPT_WEIGHTINGS[number];

/** A piece of the prompt with the weight its tokens get. */
export interface WeightedText {
  text: string;
  weight: number;
}

/** BREAK: the pieces after it start a new chunk. */
export interface ChunkBreak {
  break: true;
}

export type PromptPiece = WeightedText | ChunkBreak;

const ROUND = 1.1;
const SQUARE = 1 / 1.1;

// ":" weight ")", with A1111's pattern: Python's \s around a run of [.0-9] with an optional sign.
const WEIGHT_CLOSE = new RegExp(`:[${PY_WHITESPACE}]*([+-]?[.0-9]+)[${PY_WHITESPACE}]*\\)`, "y");
// BREAK as a word (Python's Unicode \b: no letter, digit or "_" beside it). A1111's pattern also takes the
// whitespace around it; that is trimmed from the neighbouring parts instead, since a regex starting with
// \s* retries at every space of a long run (quadratic time).
const BREAK_RE = /(?<![\p{L}\p{N}_])BREAK(?![\p{L}\p{N}_])/u;
const SPACE_RE = new RegExp(`[${PY_WHITESPACE}]`);
const SYNTAX = "\\()[]:";
const ESCAPABLE = "()[]\\";

/** The prompt as weighted pieces (none empty) and breaks. */
export function parsePromptWeights(prompt: string): PromptPiece[] {
  // Brackets scale every piece from where they opened to where they close, so pieces are collected first
  // and the open brackets remember the index of the first piece inside them.
  const pieces: (WeightedText | ChunkBreak)[] = [];
  const round: number[] = [];
  const square: number[] = [];
  const scaleFrom = (start: number, factor: number) => {
    for (let k = start; k < pieces.length; k++) {
      const p = pieces[k];
      if (!("break" in p)) p.weight *= factor;
    }
  };
  const text = (t: string) => pieces.push({ text: t, weight: 1 });

  let i = 0;
  while (i < prompt.length) {
    const c = prompt[i];
    if (c === "\\") {
      const next = prompt[i + 1];
      if (next !== undefined && ESCAPABLE.includes(next)) {
        text(next);
        i += 2;
      } else {
        i += 1;
      }
    } else if (c === "(") {
      round.push(pieces.length);
      i++;
    } else if (c === "[") {
      square.push(pieces.length);
      i++;
    } else if (c === ":") {
      WEIGHT_CLOSE.lastIndex = i;
      const m = WEIGHT_CLOSE.exec(prompt);
      const weight = m ? Number(m[1]) : NaN;
      if (m && round.length === 0) {
        text(m[0]);
        i += m[0].length;
      } else if (m && !Number.isNaN(weight)) {
        scaleFrom(round.pop()!, weight);
        i += m[0].length;
      } else {
        text(":");
        i++;
      }
    } else if (c === ")" && round.length > 0) {
      scaleFrom(round.pop()!, ROUND);
      i++;
    } else if (c === "]" && square.length > 0) {
      scaleFrom(square.pop()!, SQUARE);
      i++;
    } else if (c === ")" || c === "]") {
      text(c);
      i++;
    } else {
      let j = i + 1;
      while (j < prompt.length && !SYNTAX.includes(prompt[j])) j++;
      const parts = prompt.slice(i, j).split(BREAK_RE);
      parts.forEach((part, k) => {
        let [from, to] = [0, part.length];
        if (k > 0) {
          pieces.push({ break: true });
          while (from < to && SPACE_RE.test(part[from])) from++;
        }
        if (k < parts.length - 1) { while (to > from && SPACE_RE.test(part[to - 1])) to--; }
        if (to > from) text(part.slice(from, to));
      });
      i = j;
    }
  }
  for (const start of round) scaleFrom(start, ROUND);
  for (const start of square) scaleFrom(start, SQUARE);

  const merged: PromptPiece[] = [];
  for (const p of pieces) {
    const last = merged.at(-1);
    if (last && !("break" in last) && !("break" in p) && last.weight === p.weight) last.text += p.text;
    else merged.push(p);
  }
  return merged;
}

/** Token rows and one multiplier per token, for the text encoder. */
export interface WeightedChunks {
  /** Rows of `maxLength` ids, laid out as ClipTokenizer.chunks lays them out. */
  ids: number[][];
  /** Per row, one multiplier per id: 1 for BOS, EOS and padding. */
  weights: number[][];
  /** True when "truncate" dropped tokens. */
  truncated: boolean;
}

/**
 * A1111's chunking of a weighted prompt: each piece is tokenized on its own, tokens fill 75-token chunks
 * (a full chunk starts the next one), and BREAK closes the current chunk even when it is empty (so a
 * leading BREAK gives an empty first chunk; a trailing one adds nothing). "truncate" keeps the first chunk.
 * A1111 also moves the words after a late comma into the next chunk (its comma_padding_backtrack option);
 * that is not done here, so that "chunk" splits plain prompts exactly where ClipTokenizer.chunks does.
 */
export function weightedChunks(
  tokenizer: ClipTokenizer,
  pieces: PromptPiece[],
  mode: "chunk" | "truncate" = "chunk",
): WeightedChunks {
  const perRow = tokenizer.maxLength - 2;
  const rows: { tokens: number[]; weights: number[] }[] = [];
  let current = { tokens: [] as number[], weights: [] as number[] };
  const close = () => {
    rows.push(current);
    current = { tokens: [], weights: [] };
  };
  for (const piece of pieces) {
    if ("break" in piece) {
      close();
      continue;
    }
    for (const id of tokenizer.contentIds(piece.text)) {
      if (current.tokens.length === perRow) close();
      current.tokens.push(id);
      current.weights.push(piece.weight);
    }
  }
  if (current.tokens.length > 0 || rows.length === 0) close();
  const kept = mode === "truncate" ? rows.slice(0, 1) : rows;
  return {
    ids: kept.map((r) => tokenizer.row(r.tokens)),
    weights: kept.map((
      r,
    ) => [1, ...r.weights, ...new Array(tokenizer.maxLength - 1 - r.weights.length).fill(1)]),
    truncated: rows.slice(kept.length).some((r) => r.tokens.length > 0),
  };
}
