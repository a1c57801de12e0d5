/// <reference lib="dom" />
// The web page in headless Chromium (Debian's `chromium`, driven by playwright-core): submit a prompt, see
// previews arrive, get the final image (decoded and checked for its size) with its parameters; then start
// another run and cancel it, which must cancel the job on the server; then upload an image, paint a mask
// with the brush and inpaint. Saves a screenshot to $BROWSER_SCREENSHOT when set.

import { chromium } from "playwright-core";
import { Buffer } from "node:buffer";
import { decodeImage, encodeImage } from "../src/image/codec.ts";
import { spawnTinyModelServer, waitReady } from "./server_harness.ts";

const CHROMIUM = Deno.env.get("CHROMIUM_PATH") ?? "/usr/bin/chromium";

Deno.test({
  name:
    "web page: previews appear, the final image shows and decodes, cancel stops the job, a painted mask inpaints",
  // playwright keeps its pipe to the browser open past close(); it is not a leak of ours.
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    // The real `serve` on the tiny model (tests/fixtures/tiny_sd), in its own process: every preview and the
    // image are real, and a cold shader cache stalls the server's event loop, never the one driving Chromium.
    // The page asks for 256²: warm that size rather than the default 512².
    const server = await spawnTinyModelServer(["--default-size", "256"]);
    // "ready" means warm: on a fresh machine the warm-up compiles every kernel first (minutes on a loaded
    // lavapipe host), so wait for it here rather than inside the page's own timeouts.
    await waitReady(server.url, 600_000);
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
        timeout: 30_000,
      });
      // The fields start from the model's defaults: the tiny model's 50 steps and 7.5, --default-size 256.
      const prefilled = await Promise.all(
        ["#width", "#height", "#steps", "#guidance_scale"].map((f) => page.inputValue(f)),
      );
      if (prefilled.join() !== "256,256,50,7.5") throw new Error(`pre-filled fields: ${prefilled.join()}`);

      await page.fill("#prompt", "a lighthouse on a cliff at sunset, oil painting");
      await page.fill("#negative_prompt", "blurry");
      await page.selectOption("#size", "256x256");
      await page.fill("#steps", "12");
      await page.fill("#preview_every", "3");
      await page.fill("#seed", "4242");
      await page.selectOption("#sampler", "euler_a");
      await page.click("#generate");

      // Previews arrive while the job runs. Generous timeouts: kernels of sizes other than the warmed one
      // (the previews', the inpainting run's) still compile on first use, slowly on a loaded machine.
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

      // Inpainting from the page: upload an image, paint a stroke across its middle, generate. The request
      // carries the image and a mask of the image's size, white along the stroke and black elsewhere.
      const rgb = new Uint8Array(128 * 96 * 3).map((_, i) => (i * 7) % 251);
      await page.setInputFiles("#init-image", {
        name: "photo.png",
        mimeType: "image/png",
        buffer: Buffer.from(encodeImage(rgb, 128, 96, "png").bytes),
      });
      await page.waitForFunction(() => !document.getElementById("mask-tools")!.hidden, null, {
        timeout: 10_000,
      });
      // The size fields follow the image (multiples of 64).
      if (await page.inputValue("#width") !== "128" || await page.inputValue("#height") !== "64") {
        throw new Error(`size fields ${await page.inputValue("#width")}x${await page.inputValue("#height")}`);
      }
      const box = (await page.locator("#mask-canvas").boundingBox())!;
      await page.mouse.move(box.x + box.width * 0.2, box.y + box.height / 2);
      await page.mouse.down();
      await page.mouse.move(box.x + box.width * 0.8, box.y + box.height / 2, { steps: 8 });
      await page.mouse.up();
      await page.fill("#steps", "3");
      const sent = page.waitForRequest((r) => r.url().endsWith("/v1/generate") && r.method() === "POST");
      await page.click("#generate");
      const body = JSON.parse((await sent).postData() ?? "{}");
      const mask = decodeImage(Uint8Array.fromBase64(String(body.mask).replace(/^data:[^,]*,/, "")));
      if (!body.image || mask.width !== 128 || mask.height !== 96) {
        throw new Error(`image ${!!body.image}, mask ${mask.width}x${mask.height}`);
      }
      const grey = (x: number, y: number) => mask.rgba[(y * 128 + x) * 4];
      if (grey(64, 48) < 128 || grey(30, 48) < 128 || grey(64, 5) >= 128 || grey(5, 48) >= 128) {
        throw new Error(
          `mask: stroke ${grey(64, 48)}, ${grey(30, 48)}; outside ${grey(64, 5)}, ${grey(5, 48)}`,
        );
      }
      await page.waitForFunction(() => document.body.dataset.state === "done", null, { timeout: 240_000 });
      const inpainted = await page.evaluate(() => ({
        src: (document.getElementById("image") as HTMLImageElement).src,
        parameters: document.getElementById("parameters")!.textContent,
      }));
      const out = decodeImage(Uint8Array.fromBase64(inpainted.src.replace(/^data:[^,]*,/, "")));
      if (out.width !== 128 || out.height !== 64) {
        throw new Error(`inpainted image ${out.width}x${out.height}`);
      }
      // Inpainting's default strength (the field left on "auto") is diffusers' 1.
      if (!inpainted.parameters?.includes("Denoising strength: 1")) {
        throw new Error(`parameters: ${inpainted.parameters}`);
      }
      if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join("; ")}`);
    } finally {
      await context.close();
      await server.stop();
      await Deno.remove(userDataDir, { recursive: true }).catch(() => {});
    }
  },
});
