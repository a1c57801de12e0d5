// Prompt cleaning done by transformers' slow (Python) CLIPTokenizer before BPE, which a tokenizer.json lacks.
//
// "ftfy"  — with ftfy installed (what diffusers' SD pipelines produce then): ftfy.fix_text, then
//           whitespace_clean (Python `\s+` → " ", strip) and lower(). Re-implemented here as far as honestly
//           possible ("ftfy-lite"), looping until nothing changes as fix_text does:
//             HTML entities (skipped when the text contains "<", like ftfy's unescape_html="auto"): named
//             entities of HTML 4 (Latin-1, Greek, typographic) and numeric ones with html.unescape's rules;
//             mojibake: runs of characters that are UTF-8 bytes read as Windows-1252/Latin-1 and decode
//             strictly as UTF-8 ("cafÃ©" → "café", "donâ€™t" → "don’t"); C1 controls → Windows-1252;
//             Latin ligatures (ﬁ → fi); full/half-width forms → NFKC (ＦＵＬＬ → FULL, U+3000 → space);
//             curly quotes → straight; CRLF/U+2028/U+2029/U+0085 → "\n"; ANSI terminal escapes removed;
//             ftfy's control characters removed; NFC.
//           Known differences from ftfy 6.3: no badness heuristic (any strictly decodable UTF-8-as-cp1252 run
//           is repaired, and mojibake of other encodings — Latin-1 only, MacRoman, cp437, … — or with lost
//           bytes, e.g. "Ã " for "à", is not); HTML5-only entity names (&hellip; is included, &NotEqualTilde;
//           is not) stay escaped; no restore_byte_a0 / replace_lossy_sequences / decode_inconsistent_utf8.
//           Special-token strings are split off first and each piece is cleaned separately, as transformers
//           does (so a "<" in one piece doesn't stop entity decoding in another).
// "basic" — without ftfy: BERT's BasicTokenizer(strip_accents=False, do_split_on_punc=False): drop NUL,
//           U+FFFD and all category C characters (keeping \t\n\r), Zs/\t\n\r → space, spaces around CJK
//           ideographs, NFC, whitespace split, lower().
// "none"  — nothing: exactly the tokenizer.json (HF fast tokenizer) behaviour.

export type TextCleaning = "none" | "ftfy" | "basic";

const SPECIAL_TOKEN_RE = /(<\|startoftext\|>|<\|endoftext\|>)/;

/** Cleans `text` as the Python CLIPTokenizer would, keeping special-token strings intact. */
export function cleanPrompt(text: string, mode: TextCleaning): string {
  if (mode === "none") return text;
  const pieces = text.split(SPECIAL_TOKEN_RE);
  return pieces.map((p, i) => (i % 2 === 1 ? p : mode === "ftfy" ? ftfyClean(p) : basicClean(p))).join("");
}

// ---------------------------------------------------------------- ftfy-lite

/** Python's str.isspace() set, as a regex class body: what `\s` in Python's re and str.strip() match. */
export const PY_WHITESPACE =
  "\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const PY_WHITESPACE_RUN = new RegExp(`[${PY_WHITESPACE}]+`, "g");
const PY_WHITESPACE_EDGES = new RegExp(`^[${PY_WHITESPACE}]+|[${PY_WHITESPACE}]+$`, "g");

function ftfyClean(text: string): string {
  let fixed = text;
  for (let i = 0; i < 10; i++) {
    const before = fixed;
    fixed = ftfyPass(fixed);
    if (fixed === before) break;
  }
  // CLIPTokenizer: whitespace_clean(fix_text(text)).lower()
  return fixed.replace(PY_WHITESPACE_RUN, " ").replace(PY_WHITESPACE_EDGES, "").toLowerCase();
}

function ftfyPass(text: string): string {
  let t = text;
  if (!t.includes("<")) t = unescapeHtml(t);
  t = fixMojibake(t);
  t = t.replace(/[\x80-\x9f]/g, (c) => CP1252_HIGH[c.charCodeAt(0) - 0x80]);
  t = t.replace(LIGATURE_RE, (c) => LIGATURES[c]);
  t = t.replace(/[\uff01-\uffef]/g, (c) => c.normalize("NFKC")).replace(/\u3000/g, " ");
  t = t.replace(/[\u02bc\u2018-\u201b]/g, "'").replace(/[\u201c-\u201f]/g, '"');
  t = t.replace(/\r\n/g, "\n").replace(/[\r\u2028\u2029\u0085]/g, "\n");
  // deno-lint-ignore no-control-regex
  t = t.replace(/\x1b\[[\d;]*[a-zA-Z]/g, "");
  // deno-lint-ignore no-control-regex
  t = t.replace(/[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]/g, "");
  t = t.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "\ufffd");
  return t.normalize("NFC");
}

/** Windows-1252 for bytes 0x80–0x9F; its 5 undefined bytes map to the C1 control (ftfy's sloppy-windows-1252). */
const CP1252_HIGH = Array.from(
  "\u20ac\x81\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\x8d\u017d\x8f" +
    "\x90\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\x9d\u017e\u0178",
);

const BYTE_OF_CHAR = new Map<string, number>();
for (let b = 0xa0; b <= 0xff; b++) BYTE_OF_CHAR.set(String.fromCharCode(b), b);
CP1252_HIGH.forEach((c, i) => BYTE_OF_CHAR.set(c, 0x80 + i));
for (let b = 0x80; b <= 0x9f; b++) {
  if (!BYTE_OF_CHAR.has(String.fromCharCode(b))) BYTE_OF_CHAR.set(String.fromCharCode(b), b);
}

const CONT = `[\\x80-\\xbf${CP1252_HIGH.join("")}]`;
const MOJIBAKE_RE = new RegExp(
  `(?:[\\xc2-\\xdf]${CONT}|[\\xe0-\\xef]${CONT}{2}|[\\xf0-\\xf4]${CONT}{3})+`,
  "g",
);
const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true });

/** Re-decodes runs of UTF-8 bytes that were shown as Windows-1252 / Latin-1 characters. */
function fixMojibake(text: string): string {
  return text.replace(MOJIBAKE_RE, (run) => {
    const bytes = Uint8Array.from(run, (c) => BYTE_OF_CHAR.get(c)!);
    try {
      return STRICT_UTF8.decode(bytes);
    } catch {
      return run;
    }
  });
}

const LIGATURES: Record<string, string> = {
  "\u0132": "IJ",
  "\u0133": "ij",
  "\u0149": "\u02bcn",
  "\u01f1": "DZ",
  "\u01f2": "Dz",
  "\u01f3": "dz",
  "\u01c4": "D\u017d",
  "\u01c5": "D\u017e",
  "\u01c6": "d\u017e",
  "\u01c7": "LJ",
  "\u01c8": "Lj",
  "\u01c9": "lj",
  "\u01ca": "NJ",
  "\u01cb": "Nj",
  "\u01cc": "nj",
  "\ufb00": "ff",
  "\ufb01": "fi",
  "\ufb02": "fl",
  "\ufb03": "ffi",
  "\ufb04": "ffl",
  "\ufb05": "\u017ft",
  "\ufb06": "st",
};
const LIGATURE_RE = new RegExp(`[${Object.keys(LIGATURES).join("")}]`, "g");

// HTML 4 named entities: Latin-1 (U+00A0–U+00FF in order), Greek, and the typographic/special ones.
const LATIN1_NAMES = (
  "nbsp iexcl cent pound curren yen brvbar sect uml copy ordf laquo not shy reg macr deg plusmn sup2 sup3 " +
  "acute micro para middot cedil sup1 ordm raquo frac14 frac12 frac34 iquest Agrave Aacute Acirc Atilde Auml " +
  "Aring AElig Ccedil Egrave Eacute Ecirc Euml Igrave Iacute Icirc Iuml ETH Ntilde Ograve Oacute Ocirc Otilde " +
  "Ouml times Oslash Ugrave Uacute Ucirc Uuml Yacute THORN szlig agrave aacute acirc atilde auml aring aelig " +
  "ccedil egrave eacute ecirc euml igrave iacute icirc iuml eth ntilde ograve oacute ocirc otilde ouml divide " +
  "oslash ugrave uacute ucirc uuml yacute thorn yuml"
).split(" ");
const GREEK_NAMES = (
  "Alpha Beta Gamma Delta Epsilon Zeta Eta Theta Iota Kappa Lambda Mu Nu Xi Omicron Pi Rho - Sigma Tau " +
  "Upsilon Phi Chi Psi Omega"
).split(" ");
// name:hex-code-point pairs
const OTHER_ENTITIES = (
  "quot:22 amp:26 apos:27 lt:3c gt:3e OElig:152 oelig:153 Scaron:160 scaron:161 Yuml:178 fnof:192 " +
  "circ:2c6 tilde:2dc thetasym:3d1 upsih:3d2 piv:3d6 ensp:2002 emsp:2003 thinsp:2009 zwnj:200c " +
  "zwj:200d lrm:200e rlm:200f ndash:2013 mdash:2014 lsquo:2018 rsquo:2019 sbquo:201a ldquo:201c " +
  "rdquo:201d bdquo:201e dagger:2020 Dagger:2021 bull:2022 hellip:2026 permil:2030 prime:2032 " +
  "Prime:2033 lsaquo:2039 rsaquo:203a oline:203e frasl:2044 euro:20ac image:2111 weierp:2118 " +
  "real:211c trade:2122 alefsym:2135 larr:2190 uarr:2191 rarr:2192 darr:2193 harr:2194 crarr:21b5 " +
  "lArr:21d0 uArr:21d1 rArr:21d2 dArr:21d3 hArr:21d4 forall:2200 part:2202 exist:2203 empty:2205 " +
  "nabla:2207 isin:2208 notin:2209 ni:220b prod:220f sum:2211 minus:2212 lowast:2217 radic:221a " +
  "prop:221d infin:221e ang:2220 and:2227 or:2228 cap:2229 cup:222a int:222b there4:2234 sim:223c " +
  "cong:2245 asymp:2248 ne:2260 equiv:2261 le:2264 ge:2265 sub:2282 sup:2283 nsub:2284 sube:2286 " +
  "supe:2287 oplus:2295 otimes:2297 perp:22a5 sdot:22c5 lceil:2308 rceil:2309 lfloor:230a " +
  "rfloor:230b lang:2329 rang:232a loz:25ca spades:2660 clubs:2663 hearts:2665 diams:2666 " +
  "sigmaf:3c2"
).split(" ").map((pair) => pair.split(":"));
const NAMED_ENTITIES = new Map<string, string>();
LATIN1_NAMES.forEach((name, i) => NAMED_ENTITIES.set(name, String.fromCharCode(0xa0 + i)));
GREEK_NAMES.forEach((name, i) => {
  if (name === "-") return;
  NAMED_ENTITIES.set(name, String.fromCharCode(0x391 + i));
  NAMED_ENTITIES.set(name.toLowerCase(), String.fromCharCode(0x3b1 + i));
});
for (const [name, hex] of OTHER_ENTITIES) NAMED_ENTITIES.set(name, String.fromCodePoint(parseInt(hex, 16)));

/** ftfy's unescape_html: `&name;` (known names, also ALL-CAPS variants of lowercase ones) and `&#…;`. */
function unescapeHtml(text: string): string {
  return text.replace(/&(#?)([0-9A-Za-z]{1,24});/g, (whole, hash: string, body: string) => {
    if (!hash) {
      const named = NAMED_ENTITIES.get(body) ??
        (body === body.toUpperCase() ? NAMED_ENTITIES.get(body.toLowerCase())?.toUpperCase() : undefined);
      return named ?? whole;
    }
    const hex = /^[xX][0-9a-fA-F]+$/.test(body);
    if (!hex && !/^\d+$/.test(body)) return whole;
    const cp = parseInt(hex ? body.slice(1) : body, hex ? 16 : 10);
    return numericCharRef(cp);
  });
}

/** html.unescape's rules for a numeric character reference. */
function numericCharRef(cp: number): string {
  if (cp >= 0x80 && cp <= 0x9f) return CP1252_HIGH[cp - 0x80];
  if (cp === 0 || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) return "\ufffd";
  return String.fromCodePoint(cp);
}

// ---------------------------------------------------------------- BasicTokenizer (no ftfy)

function isCjkIdeograph(cp: number): boolean {
  return (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) || (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x2f800 && cp <= 0x2fa1f);
}

function basicClean(text: string): string {
  let out = "";
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    const isWhitespace = ch === " " || ch === "\t" || ch === "\n" || ch === "\r" || /\p{Zs}/u.test(ch);
    if (cp === 0 || cp === 0xfffd || (!isWhitespace && /\p{C}/u.test(ch))) continue;
    if (isWhitespace) out += " ";
    else if (isCjkIdeograph(cp)) out += ` ${ch} `;
    else out += ch;
  }
  const words = out.normalize("NFC").split(PY_WHITESPACE_RUN).filter((w) => w.length > 0);
  return words.map((w) => w.toLowerCase()).join(" ");
}
