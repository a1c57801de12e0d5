// A1111 prompt weighting: the parser on a table of prompts (expected pieces as A1111's parse_prompt_attention
// gives them, except where src/text/prompt_weights.ts documents a difference), and the chunking of weighted
// tokens. The embeddings are tested on the tiny model in prompt_weighting_pipeline_test.ts.

import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { parsePromptWeights, type PromptPiece, weightedChunks } from "../src/text/prompt_weights.ts";
import { ClipTokenizer } from "../src/text/tokenizer.ts";

/** Expected pieces: [text, weight], or "BREAK". */
type Expected = ([string, number] | "BREAK")[];

const R = 1.1; // one round bracket
const S = 1 / 1.1; // one square bracket

// [prompt, expected, what it shows]. Weights are written as the products A1111 forms, in its order (inner
// brackets first; unclosed ones at the end, "(" before "["), so equal weights compare exactly.
const CASES: [string, Expected, string][] = [
  ["normal text", [["normal text", 1]], "plain text is one piece"],
  ["an (important) word", [["an ", 1], ["important", R], [" word", 1]], "( ) × 1.1"],
  ["((a))", [["a", R * R]], "nesting multiplies"],
  ["(((a)))", [["a", R * R * R]], "three levels"],
  ["[a]", [["a", S]], "[ ] ÷ 1.1"],
  ["[[a]] b", [["a", S * S], [" b", 1]], "nested squares"],
  ["[(a)]", [["a", R * S]], "round inside square"],
  ["(a:1.3)", [["a", 1.3]], "explicit weight"],
  ["(a:0.5) b", [["a", 0.5], [" b", 1]], "weight below 1"],
  ["(a:.5)", [["a", 0.5]], "leading dot"],
  ["(a:2.)", [["a", 2]], "trailing dot"],
  ["(a:-1)", [["a", -1]], "negative weight"],
  ["(a:+2)", [["a", 2]], "explicit plus sign"],
  ["(a:0)", [["a", 0]], "zero weight"],
  ["(a: 1.5 )", [["a", 1.5]], "whitespace around the number"],
  ["( a : 1.5 )", [[" a ", 1.5]], "whitespace inside the text stays"],
  ["(a:\u00a01.5\u3000)", [["a", 1.5]], "Python's Unicode whitespace around the number"],
  ["(a:1e1)", [["a:1e1", R]], "no exponents: literal, the bracket gives × 1.1"],
  ["(a:)", [["a:", R]], "empty weight is literal text"],
  ["(a:high)", [["a:high", R]], "non-numeric weight is literal text"],
  ["(a:1,5)", [["a:1,5", R]], "comma is not a decimal point"],
  ["(a:1.2.3)", [["a:1.2.3", R]], "malformed number: text (A1111 raises)"],
  ["(a:.)", [["a:.", R]], "a lone dot is not a number"],
  ["((a:2):0.5) b", [["a b", 1]], "weights multiply; equal neighbours merge"],
  ["(a:1.5)(b:1.5)", [["ab", 1.5]], "adjacent equal weights merge"],
  ["(a:1.5) (b:1.5)", [["a", 1.5], [" ", 1], ["b", 1.5]], "a space between keeps them apart"],
  ["(unnecessary)(parens)", [["unnecessaryparens", R]], "A1111's docstring example"],
  [
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
    [
      ["a ", 1],
      ["house", 1.3 * R * R],
      [" ", R],
      ["on", 1],
      [" a ", R],
      ["hill", 0.5 * R],
      [", sun, ", R],
      ["sky", R * R * R * R],
      [".", R],
    ],
    "A1111's docstring example (unclosed outer bracket)",
  ],
  ["(unbalanced", [["unbalanced", R]], "unclosed ( applies to the rest"],
  ["a [b", [["a ", 1], ["b", S]], "unclosed [ applies to the rest"],
  ["(a [b", [["a ", R], ["b", R * S]], "unclosed: round first, then square"],
  ["a) b] c", [["a) b] c", 1]], "stray closers are literal"],
  ["a:1.5) b", [["a:1.5) b", 1]], "a weight closer with no ( open is literal"],
  ["(a:1.5]", [["a:1.5]", R]], "a weight needs ), and the ( stays open"],
  ["[a:1.5]", [["a:1.5", S]], "no weights in square brackets"],
  ["(a [b:1.5) c]", [["a ", 1.5], ["b", 1.5 * S], [" c", S]], "crossed brackets: ranges as opened"],
  ["\\(literal\\]", [["(literal]", 1]], "escaped brackets"],
  ["\\(a:1.5\\)", [["(a:1.5)", 1]], "escaped weight syntax is plain text"],
  ["(\\(a\\))", [["(a)", R]], "escaped brackets inside a bracket get its weight"],
  ["\\\\(a)", [["\\", 1], ["a", R]], "escaped backslash, then a real bracket"],
  ["a\\b", [["ab", 1]], "a lone backslash is dropped"],
  ["C:\\dir", [["C:dir", 1]], "a lone backslash before a letter is dropped, colon stays"],
  ["a BREAK b", [["a", 1], "BREAK", ["b", 1]], "BREAK eats the whitespace around it"],
  ["a\nBREAK\tb", [["a", 1], "BREAK", ["b", 1]], "any whitespace"],
  ["BREAK a", ["BREAK", ["a", 1]], "leading BREAK"],
  ["a BREAK", [["a", 1], "BREAK"], "trailing BREAK"],
  ["a BREAK BREAK b", [["a", 1], "BREAK", "BREAK", ["b", 1]], "two BREAKs"],
  ["(a)BREAK(b)", [["a", R], "BREAK", ["b", R]], "BREAK between brackets"],
  ["(a BREAK b)", [["a", R], "BREAK", ["b", R]], "BREAK inside brackets still breaks (A1111 differs)"],
  [
    "aBREAK BREAKfast break _BREAK éBREAK 1BREAK",
    [["aBREAK BREAKfast break _BREAK éBREAK 1BREAK", 1]],
    "not a word",
  ],
  ["a,BREAK.b", [["a,", 1], "BREAK", [".b", 1]], "punctuation is a word boundary"],
  ["<lora:name:0.8> a (cat)", [["<lora:name:0.8> a ", 1], ["cat", R]], "tags pass through"],
  ["", [], "empty prompt: no pieces"],
  ["()", [], "empty brackets: no pieces"],
  ["  ", [["  ", 1]], "whitespace is kept (the tokenizer drops it)"],
];

function simplify(pieces: PromptPiece[]): Expected {
  return pieces.map((p) => "break" in p ? "BREAK" : [p.text, p.weight]);
}

Deno.test(`prompt weights: the parser on ${CASES.length} prompts`, () => {
  const failures: string[] = [];
  for (const [prompt, expected, what] of CASES) {
    const got = simplify(parsePromptWeights(prompt));
    if (JSON.stringify(got) !== JSON.stringify(expected)) {
      failures.push(
        `${JSON.stringify(prompt)} (${what}): got ${JSON.stringify(got)}, want ${JSON.stringify(expected)}`,
      );
    }
  }
  assertEquals(failures, []);
});

const tokenizer = await ClipTokenizer.load(new URL("./fixtures/tokenizer/", import.meta.url).pathname);
const ones = (n: number) => new Array(n).fill(1);

Deno.test("prompt weights: plain prompts chunk exactly as ClipTokenizer.chunks, all weights 1", () => {
  const long = Array.from({ length: 40 }, (_, i) => `word${i}`).join(" "); // > 75 tokens
  for (const prompt of ["", "a photo of a cat", long, `${long}, ${long}`, "a: b, c"]) {
    for (const mode of ["chunk", "truncate"] as const) {
      const w = weightedChunks(tokenizer, parsePromptWeights(prompt), mode);
      const plain = tokenizer.chunks(prompt, mode);
      assertEquals(w.ids, plain.ids, `${mode}: ${prompt}`);
      assertEquals(w.weights, plain.ids.map(() => ones(77)), `${mode}: ${prompt}`);
      assertEquals(w.truncated, plain.truncated, `${mode}: ${prompt}`);
    }
  }
});

Deno.test("prompt weights: each piece tokenized alone, weights per token, BREAK pads the chunk", () => {
  const [bos, eos] = [tokenizer.bosId, tokenizer.eosId];
  const ids = (text: string) => tokenizer.contentIds(text);
  const pad = (row: number[]) => [...row, ...new Array(77 - row.length).fill(tokenizer.padId)];

  const w = weightedChunks(tokenizer, parsePromptWeights("a (red:1.5) [cat] BREAK (dog)"));
  const first = [...ids("a"), ...ids("red"), ...ids("cat")];
  assertEquals(w.ids, [pad([bos, ...first, eos]), pad([bos, ...ids("dog"), eos])]);
  assertEquals(w.weights[0], [1, 1, 1.5, S, ...ones(77 - 4)]);
  assertEquals(w.weights[1], [1, R, ...ones(77 - 2)]);

  // A leading BREAK closes an empty chunk; a trailing one adds none.
  const lead = weightedChunks(tokenizer, parsePromptWeights("BREAK a BREAK"));
  assertEquals(lead.ids, [pad([bos, eos]), pad([bos, ...ids("a"), eos])]);

  // 75 weighted tokens fill a chunk; the 76th starts the next one with its own weight.
  const many = Array.from({ length: 76 }, () => "cat").join(" ");
  const full = weightedChunks(tokenizer, parsePromptWeights(`(${many})`));
  assertEquals(full.ids.length, 2);
  assertEquals(full.weights[0], [1, ...new Array(75).fill(R), 1]);
  assertEquals(full.weights[1], [1, R, ...ones(75)]);
  // …and a BREAK right after a full chunk adds no empty chunk.
  assertEquals(weightedChunks(tokenizer, parsePromptWeights(`${many.slice(4)} BREAK cat`)).ids.length, 2);

  // "truncate" keeps the first chunk and says whether anything was dropped.
  const t = weightedChunks(tokenizer, parsePromptWeights("a BREAK (b)"), "truncate");
  assertEquals([t.ids, t.weights, t.truncated], [[pad([bos, ...ids("a"), eos])], [ones(77)], true]);
  assertEquals(weightedChunks(tokenizer, parsePromptWeights("a BREAK"), "truncate").truncated, false);

  // Merged pieces are tokenized together: "(a)(b)" is the word "ab", not "a" + "b".
  assertEquals(
    weightedChunks(tokenizer, parsePromptWeights("(red)(dish)")).ids[0].slice(1, -1).filter((id) =>
      id !== tokenizer.padId
    ),
    ids("reddish"),
  );
});
