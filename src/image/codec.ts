// PNG and JPEG encoding/decoding for the server (and for engines that want it): fast-png and jpeg-js,
// both pure JavaScript, so a compiled binary needs no native codec.

import { decode as decodePng, encode as encodePng } from "fast-png";
import { decode as decodeJpeg, encode as encodeJpeg } from "jpeg-js";
import { inflateSync } from "node:zlib";

export type ImageFormat = "png" | "jpeg";

export const MIME_BY_FORMAT: Record<ImageFormat, string> = { png: "image/png", jpeg: "image/jpeg" };

export interface EncodeOptions {
  /** PNG only: A1111-style generation parameters, stored in a tEXt "parameters" chunk. */
  parameters?: string;
  /** JPEG only: 1..100. */
  quality?: number;
}

/** Encodes 8-bit RGB (`[H, W, 3]`) or RGBA (`[H, W, 4]`) pixels. */
export function encodeImage(
  pixels: Uint8Array,
  width: number,
  height: number,
  format: ImageFormat,
  options: EncodeOptions = {},
): { bytes: Uint8Array; mime: string } {
  const channels = pixels.length / (width * height);
  if (channels !== 3 && channels !== 4) {
    throw new Error(`encodeImage: ${pixels.length} bytes is not ${width}x${height} RGB or RGBA`);
  }
  if (format === "png") {
    const params = options.parameters;
    // tEXt holds Latin-1 only (fast-png throws otherwise); other text goes in an iTXt chunk (UTF-8), as
    // PIL/A1111 write it.
    const latin1 = params !== undefined && isLatin1(params);
    const text = latin1 ? { parameters: params } : undefined;
    let bytes = encodePng({ width, height, data: pixels, channels, depth: 8, text });
    if (params !== undefined && !latin1) bytes = insertITxt(bytes, "parameters", params);
    return { bytes, mime: "image/png" };
  }
  const rgba = channels === 4 ? pixels : rgbToRgba(pixels);
  const out = encodeJpeg({ width, height, data: rgba }, options.quality ?? 92);
  return {
    bytes: new Uint8Array(out.data.buffer, out.data.byteOffset, out.data.byteLength),
    mime: "image/jpeg",
  };
}

export interface DecodedImage {
  width: number;
  height: number;
  /** `[H, W, 4]` 8-bit RGBA. */
  rgba: Uint8Array;
  mime: string;
  /** PNG tEXt chunks (empty for JPEG). */
  text: Record<string, string>;
}

/** The image type from its magic bytes, or undefined when it is neither PNG nor JPEG. */
export function sniffImageMime(bytes: Uint8Array): string | undefined {
  if (
    bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47 &&
    bytes[4] === 0x0d && bytes[5] === 0x0a && bytes[6] === 0x1a && bytes[7] === 0x0a
  ) return "image/png";
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return "image/jpeg";
  return undefined;
}

/**
 * Width and height from a PNG's IHDR or a JPEG's first SOF marker, without decoding the pixels (request
 * validation on the HTTP thread). Undefined when the header cannot be read.
 */
export function imageSize(bytes: Uint8Array): { width: number; height: number } | undefined {
  const mime = sniffImageMime(bytes);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (mime === "image/png") {
    // signature (8), IHDR length (4), "IHDR" (4), width (4), height (4)
    if (bytes.length < 24 || String.fromCharCode(...bytes.subarray(12, 16)) !== "IHDR") return undefined;
    return { width: view.getUint32(16), height: view.getUint32(20) };
  }
  if (mime === "image/jpeg") {
    let at = 2;
    while (at + 4 <= bytes.length) {
      if (bytes[at] !== 0xff) return undefined;
      const marker = bytes[at + 1];
      if (marker === 0xff) { // fill byte
        at++;
        continue;
      }
      if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) { // no length
        at += 2;
        continue;
      }
      const length = view.getUint16(at + 2);
      // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): length, precision, height, width.
      if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
        if (at + 9 > bytes.length) return undefined;
        return { width: view.getUint16(at + 7), height: view.getUint16(at + 5) };
      }
      at += 2 + length;
    }
  }
  return undefined;
}

/** Decodes a PNG or JPEG into 8-bit RGBA; throws with a readable message otherwise. */
export function decodeImage(bytes: Uint8Array, maxMegapixels = 64): DecodedImage {
  const mime = sniffImageMime(bytes);
  if (mime === "image/png") {
    checkPngBounds(bytes, maxMegapixels);
    const png = decodePng(bytes, { checkCrc: true });
    if (png.width * png.height > maxMegapixels * 1e6) throw new Error("image too large");
    const text = { ...png.text, ...readITxt(bytes) };
    return { width: png.width, height: png.height, rgba: pngToRgba8(png), mime, text };
  }
  if (mime === "image/jpeg") {
    const jpg = decodeJpeg(bytes, { useTArray: true, formatAsRGBA: true, maxResolutionInMP: maxMegapixels });
    return { width: jpg.width, height: jpg.height, rgba: jpg.data, mime, text: {} };
  }
  throw new Error("not a PNG or JPEG image");
}

/**
 * Refuses a PNG that would take far more memory to decode than its size says (a decompression bomb): fast-png
 * inflates every IDAT and iCCP byte before it looks at the image size, so a few hundred kilobytes of
 * compressed zeros cost gigabytes. Checks the header's size first, then inflates with a cap.
 */
function checkPngBounds(bytes: Uint8Array, maxMegapixels: number): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const idat: Uint8Array[] = [];
  let rowBytes = 0;
  let height = 0;
  for (let at = 8; at + 8 <= bytes.length;) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    const data = bytes.subarray(at + 8, Math.min(bytes.length, at + 8 + length));
    if (type === "IHDR" && data.length >= 13) {
      const width = view.getUint32(at + 8);
      height = view.getUint32(at + 12);
      if (width * height > maxMegapixels * 1e6) throw new Error(`image too large (${width}x${height})`);
      const channels = [1, 0, 3, 1, 2, 0, 4][data[9]] ?? 4;
      rowBytes = Math.ceil((width * channels * data[8]) / 8);
    } else if (type === "IDAT") {
      idat.push(data);
    } else if (type === "iCCP") {
      inflateCapped(data.subarray(data.indexOf(0) + 2), 16 * 2 ** 20, "ICC profile");
    }
    at += 12 + length;
  }
  // Each row is a filter byte and its pixels; Adam7 interlacing adds at most a filter byte per pass row.
  const expected = height * (1 + rowBytes) + 15 * height + 1024;
  inflateCapped(concatBytes(idat), expected, "pixel data");
}

/** Inflates zlib data, throwing once the output passes `cap` bytes; other inflate errors are left to the
 * decoder. */
function inflateCapped(data: Uint8Array, cap: number, what: string): void {
  try {
    inflateSync(data, { maxOutputLength: cap });
  } catch (e) {
    if (e instanceof RangeError) throw new Error(`${what} inflates past its stated size`);
  }
}

function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function rgbToRgba(rgb: Uint8Array): Uint8Array {
  const n = rgb.length / 3;
  const out = new Uint8Array(n * 4);
  for (let i = 0; i < n; i++) {
    out[i * 4] = rgb[i * 3];
    out[i * 4 + 1] = rgb[i * 3 + 1];
    out[i * 4 + 2] = rgb[i * 3 + 2];
    out[i * 4 + 3] = 255;
  }
  return out;
}

function pngToRgba8(png: ReturnType<typeof decodePng>): Uint8Array {
  if (png.palette) throw new Error("indexed-colour PNGs are not supported");
  const n = png.width * png.height;
  const c = png.channels;
  const src = png.data;
  const shift = png.depth === 16 ? 8 : 0;
  if (png.depth !== 8 && png.depth !== 16) throw new Error(`PNG bit depth ${png.depth} is not supported`);
  const out = new Uint8Array(n * 4);
  for (let i = 0; i < n; i++) {
    const g = src[i * c] >> shift;
    const rgb = c >= 3 ? [g, src[i * c + 1] >> shift, src[i * c + 2] >> shift] : [g, g, g];
    const a = c === 4 ? src[i * c + 3] >> shift : c === 2 ? src[i * c + 1] >> shift : 255;
    out.set([rgb[0], rgb[1], rgb[2], a], i * 4);
  }
  return out;
}

function isLatin1(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0xff) return false;
  return true;
}

/** Inserts an uncompressed iTXt chunk (keyword, UTF-8 text) just before IEND. */
export function insertITxt(png: Uint8Array, keyword: string, text: string): Uint8Array {
  const enc = new TextEncoder();
  const key = enc.encode(keyword);
  // keyword \0 compression-flag compression-method language-tag \0 translated-keyword \0 text
  const data = new Uint8Array([...key, 0, 0, 0, 0, 0, ...enc.encode(text.toWellFormed())]);
  const chunk = new Uint8Array(12 + data.length);
  const view = new DataView(chunk.buffer);
  view.setUint32(0, data.length);
  chunk.set(enc.encode("iTXt"), 4);
  chunk.set(data, 8);
  view.setUint32(8 + data.length, crc32(chunk.subarray(4, 8 + data.length)));
  const iend = png.length - 12; // IEND is always the last, empty chunk
  const out = new Uint8Array(png.length + chunk.length);
  out.set(png.subarray(0, iend));
  out.set(chunk, iend);
  out.set(png.subarray(iend), iend + chunk.length);
  return out;
}

/** Uncompressed iTXt chunks of a PNG as keyword → text (fast-png reads tEXt only). */
export function readITxt(png: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const dec = new TextDecoder();
  for (let at = 8; at + 12 <= png.length;) {
    const length = view.getUint32(at);
    const type = dec.decode(png.subarray(at + 4, at + 8));
    const data = png.subarray(at + 8, Math.min(png.length, at + 8 + length));
    if (type === "iTXt") {
      const k = data.indexOf(0);
      const compressed = data[k + 1] !== 0;
      const lang = data.indexOf(0, k + 3);
      const translated = data.indexOf(0, lang + 1);
      if (k > 0 && !compressed && lang > 0 && translated > 0) {
        out[dec.decode(data.subarray(0, k))] = dec.decode(data.subarray(translated + 1));
      }
    }
    at += 12 + length;
  }
  return out;
}

/** A PNG's text chunks (tEXt, Latin-1; uncompressed iTXt, UTF-8) as keyword → text, without decoding its
 * pixels; {} for anything else. */
export function readPngText(png: Uint8Array): Record<string, string> {
  if (sniffImageMime(png) !== "image/png") return {};
  const out: Record<string, string> = {};
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const latin1 = new TextDecoder("latin1");
  for (let at = 8; at + 12 <= png.length;) {
    const length = view.getUint32(at);
    const type = latin1.decode(png.subarray(at + 4, at + 8));
    const data = png.subarray(at + 8, Math.min(png.length, at + 8 + length));
    if (type === "tEXt") {
      const k = data.indexOf(0);
      if (k > 0) out[latin1.decode(data.subarray(0, k))] = latin1.decode(data.subarray(k + 1));
    }
    at += 12 + length;
  }
  return { ...out, ...readITxt(png) };
}

let crcTable: Uint32Array | undefined;

function crc32(bytes: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = crcTable[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
