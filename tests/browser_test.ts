/// <reference lib="dom" />
// The web page in headless Chromium (Debian's `chromium`, driven by playwright-core): submit a prompt, see
// previews arrive, get the final image (decoded and checked for its size) with its parameters; then start
// another run and cancel it, which must cancel the job on the server. Saves a screenshot to
// $BROWSER_SCREENSHOT when set.

import { chromium } from "playwright-core";
import { decodeImage } from "../src/image/codec.ts";
import { spawnTinyModelServer } from "./server_harness.ts";

const CHROMIUM = Deno.env.get("CHROMIUM_PATH") ?? "/usr/bin/chromium";

Deno.test({
  name: "web page: previews appear, the final image shows and decodes, cancel stops the job",
  // playwright keeps its pipe to the browser open past close(); it is not a leak of ours.
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    // The real `serve` on the tiny model (tests/fixtures/tiny_sd), in its own process: every preview and the
    // image are real, and a cold shader cache stalls the server's event loop, never the one driving Chromium.
    // The page asks for 256²: warm that size rather than the default 512².
    const server = await spawnTinyModelServer(["--default-size", "256"]);
    const userDataDir = await Deno.makeTempDir({ prefix: "chromium-profile-" });
    const context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
      viewport: { width: 1200, height: 860 },
    });
    try {
      const page = context.pages()[0] ?? await context.newPage();
      const pageErrors: string[] = [];
      page.on("pageerror", (e) => pageErrors.push(String(e)));
      await page.goto(server.url);
      await page.waitForFunction(() => document.getElementById("health")?.className === "ok", null, {
        timeout: 120_000,
      });

      await page.fill("#prompt", "a lighthouse on a cliff at sunset, oil painting");
      await page.fill("#negative_prompt", "blurry");
      await page.selectOption("#size", "256x256");
      await page.fill("#steps", "12");
      await page.fill("#preview_every", "3");
      await page.fill("#seed", "4242");
      await page.selectOption("#sampler", "euler_a");
      await page.click("#generate");

      // Previews arrive while the job runs. Generous timeouts: on a fresh machine the first run compiles
      // every kernel (no shader cache yet), which takes a minute or more on lavapipe.
      await page.waitForFunction(() => document.querySelectorAll("#previews img").length >= 2, null, {
        timeout: 240_000,
      });
      if (await page.evaluate(() => document.body.dataset.state) !== "running") {
        throw new Error("previews only appeared after the run had ended");
      }
      await page.waitForFunction(() => document.body.dataset.state === "done", null, { timeout: 240_000 });

      const result = await page.evaluate(() => {
        const img = document.getElementById("image") as HTMLImageElement;
        return {
          src: img.src,
          naturalWidth: img.naturalWidth,
          naturalHeight: img.naturalHeight,
          previews: document.querySelectorAll("#previews img").length,
          parameters: document.getElementById("parameters")!.textContent,
          status: document.getElementById("status")!.textContent,
          progress: (document.getElementById("progress") as HTMLProgressElement).value,
        };
      });
      if (result.previews !== 3) throw new Error(`${result.previews} previews, want 3 (steps 3, 6, 9)`);
      const [, mime, b64] = /^data:([^;]+);base64,(.*)$/.exec(result.src) ?? [];
      if (mime !== "image/png") throw new Error(`final image is ${mime}`);
      const decoded = decodeImage(Uint8Array.fromBase64(b64));
      if (decoded.width !== 256 || decoded.height !== 256) {
        throw new Error(`${decoded.width}x${decoded.height}`);
      }
      if (result.naturalWidth !== 256 || result.naturalHeight !== 256) {
        throw new Error("browser did not render it");
      }
      if (!result.parameters?.includes("Seed: 4242") || !result.parameters.includes("Sampler: Euler a")) {
        throw new Error(`parameters: ${result.parameters}`);
      }
      if (result.progress !== 12) throw new Error(`progress bar at ${result.progress}`);
      const shot = Deno.env.get("BROWSER_SCREENSHOT");
      if (shot) await page.screenshot({ path: shot, fullPage: true });

      // Cancel: a long run, stopped from the page, is cancelled on the server.
      await page.fill("#steps", "150");
      await page.click("#generate");
      await page.waitForFunction(
        () => Number((document.getElementById("progress") as HTMLProgressElement).value) >= 2,
        null,
        { timeout: 120_000 },
      );
      await page.click("#cancel");
      await page.waitForFunction(() => document.body.dataset.state === "cancelled", null, {
        timeout: 120_000,
      });
      const deadline = Date.now() + 10_000;
      while (
        !/sd_jobs_total\{outcome="cancelled"\} 1/.test(await (await fetch(`${server.url}/metrics`)).text())
      ) {
        if (Date.now() > deadline) throw new Error("the server did not cancel the job");
        await new Promise((r) => setTimeout(r, 50));
      }
      if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join("; ")}`);
    } finally {
      await context.close();
      await server.stop();
      await Deno.remove(userDataDir, { recursive: true }).catch(() => {});
    }
  },
});
