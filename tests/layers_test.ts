// The layering rule of docs/ARCHITECTURE.md, checked on every relative import under src/: a file imports
// only from its own layer or lower ones, and no two folders import each other.

import { deepStrictEqual as assertEquals } from "node:assert/strict";

const SRC = new URL("../src/", import.meta.url).pathname;

/** Folder → layer (lowest first). */
const LAYERS: Record<string, number> = {
  util: 1,
  gpu: 2,
  image: 2,
  weights: 3,
  ops: 3,
  models: 4,
  text: 4,
  schedulers: 4,
  pipeline: 5,
  server: 6,
  web: 6,
  commands: 6,
};

async function* tsFiles(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) yield* tsFiles(path);
    else if (e.name.endsWith(".ts")) yield path;
  }
}

/** The top folder under src/ of an absolute path, or null outside src/ (shaders, assets). */
function folderOf(path: string): string | null {
  if (!path.startsWith(SRC)) return null;
  return path.slice(SRC.length).split("/")[0];
}

const SPECIFIER = /(?:from|import)\s*\(?\s*["'](\.{1,2}\/[^"']+)["']/g;

async function importEdges(): Promise<{ from: string; to: string; file: string }[]> {
  const edges = [];
  for await (const file of tsFiles(SRC.replace(/\/$/, ""))) {
    const text = await Deno.readTextFile(file);
    for (const m of text.matchAll(SPECIFIER)) {
      const target = new URL(m[1], `file://${file}`).pathname;
      const from = folderOf(file);
      const to = folderOf(target);
      if (from && to && from !== to) edges.push({ from, to, file: file.slice(SRC.length) });
    }
  }
  return edges;
}

Deno.test("every folder under src/ has a layer", async () => {
  const folders = [];
  for await (const e of Deno.readDir(SRC)) if (e.isDirectory) folders.push(e.name);
  assertEquals(folders.filter((f) => !(f in LAYERS)), []);
});

Deno.test("imports point down: no file imports from a layer above its own", async () => {
  const up = (await importEdges())
    .filter((e) => LAYERS[e.to] > LAYERS[e.from])
    .map((e) => `${e.file} → ${e.to}/ (layer ${LAYERS[e.from]} → ${LAYERS[e.to]})`);
  assertEquals([...new Set(up)], []);
});

Deno.test("no two folders import each other", async () => {
  const edges = new Set((await importEdges()).map((e) => `${e.from}→${e.to}`));
  const cycles = [...edges].filter((e) => {
    const [a, b] = e.split("→");
    return edges.has(`${b}→${a}`);
  });
  assertEquals(cycles, []);
});
