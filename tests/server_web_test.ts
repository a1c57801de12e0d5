// The embedded web page: src/web/bundle.generated.ts must be what src/web/build.ts makes from the current
// sources (run `deno task build:web` after editing src/web/), and the page must carry every control.

import { buildPageModule, GENERATED_PATH } from "../src/web/build.ts";
import { INDEX_HTML } from "../src/web/bundle.generated.ts";

Deno.test("the committed page bundle is up to date with src/web/", async () => {
  const fresh = await buildPageModule();
  const committed = await Deno.readTextFile(GENERATED_PATH);
  if (fresh !== committed) {
    throw new Error("src/web/bundle.generated.ts is stale: run `deno task build:web` and commit the result");
  }
});

Deno.test("the page has every control and one inline script", () => {
  for (
    const id of [
      "prompt",
      "negative_prompt",
      "width",
      "height",
      "steps",
      "guidance_scale",
      "sampler",
      "seed",
      "generate",
      "cancel",
      "progress",
      "previews",
      "image",
      "parameters",
    ]
  ) {
    if (!INDEX_HTML.includes(`id="${id}"`)) throw new Error(`no #${id}`);
  }
  const scripts = INDEX_HTML.match(/<script\b/g) ?? [];
  const ends = INDEX_HTML.match(/<\/script/g) ?? [];
  if (scripts.length !== 1 || ends.length !== 1) {
    throw new Error(`${scripts.length} scripts, ${ends.length} ends`);
  }
  if (INDEX_HTML.includes("/*SCRIPT*/") || INDEX_HTML.includes("/*STYLE*/")) {
    throw new Error("placeholders left");
  }
});
