/**
 * Micro-benchmarks of wsconn's hot paths, in their own process, each against
 * Node's own Buffer operations and the native helpers ws can use:
 *   mask    maskInPlace vs bufferutil.unmask (native) vs a naive byte loop; memcpy as reference
 *   utf8    Utf8Validator vs buffer.isUtf8 (the reference) vs utf-8-validate (native)
 *   parse   FrameParser vs ws's Receiver over a stream of masked frames fed in 64 KiB chunks;
 *           memcpy of the same bytes as reference
 * Command: run { quick } → rows of { group, input, size, variant, opsPerSec, bytesPerSec }.
 */

import { isUtf8 } from "node:buffer";
import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";
import { distUrl, serveCommands } from "./lib/ipc.mjs";
import { median } from "./lib/stats.mjs";

const require = createRequire(import.meta.url);
// The build's internal modules, at their paths since the layout of issue 14
// (protocol/…), or before it, so BENCH_DIST can point at an older build.
const { maskInPlace } = await importFirst("protocol/payload.js", "mask.js");
const { Utf8Validator } = await importFirst("protocol/payload.js", "internal/utf8.js");
const { FrameParser } = await importFirst("protocol/frame.js", "frame-parser.js");
const bufferutil = require("bufferutil");
const utf8Validate = require("utf-8-validate");
const { Receiver } = require("ws");

serveCommands({ run: (p) => runAll(p.quick) });

/** importFirst imports the first of `modules` the build under test has. */
async function importFirst(...modules) {
  for (const module of modules) {
    try {
      return await import(distUrl(module));
    } catch (err) {
      if (err?.code !== "ERR_MODULE_NOT_FOUND" || module === modules.at(-1)) throw err;
    }
  }
}

function runAll(quick) {
  const timing = quick ? { ms: 15, samples: 3 } : { ms: 80, samples: 5 };
  return [...maskCases(quick), ...utf8Cases(quick), ...parseCases(quick)].map((c) => {
    const opsPerSec = measure(c.fn, timing) * (c.opsPerCall ?? 1);
    return { group: c.group, input: c.input, size: c.size, variant: c.variant, opsPerSec, bytesPerSec: opsPerSec * (c.wireSize ?? c.size) };
  });
}

/** measure returns the median operations per second over several timed samples. */
function measure(fn, { ms, samples }) {
  let batch = 1;
  for (;;) {
    const t0 = performance.now();
    for (let i = 0; i < batch; i++) fn();
    if (performance.now() - t0 > 1 || batch > 1e7) break;
    batch *= 2;
  }
  const rates = [];
  for (let s = 0; s < samples; s++) {
    const t0 = performance.now();
    let ops = 0;
    let elapsed = 0;
    do {
      for (let i = 0; i < batch; i++) fn();
      ops += batch;
      elapsed = performance.now() - t0;
    } while (elapsed < ms);
    rates.push(ops / (elapsed / 1000));
  }
  return median(rates);
}

function naiveUnmask(buf, key) {
  for (let i = 0; i < buf.length; i++) buf[i] ^= key[i & 3];
}

function maskCases(quick) {
  const key = randomBytes(4);
  const sizes = quick ? [16, 1024, 1 << 20] : [16, 125, 1024, 16 * 1024, 1 << 20];
  return sizes.flatMap((size) => {
    const buf = randomBytes(size);
    const dst = Buffer.allocUnsafe(size);
    const base = { group: "mask", input: "random", size };
    return [
      { ...base, variant: "wsconn maskInPlace", fn: () => maskInPlace(buf, key, 0) },
      { ...base, variant: "bufferutil.unmask (native)", fn: () => bufferutil.unmask(buf, key) },
      { ...base, variant: "naive byte loop", fn: () => naiveUnmask(buf, key) },
      { ...base, variant: "buf.copy (reference)", fn: () => buf.copy(dst) },
    ];
  });
}

function utf8Text(kind, size) {
  const unit = kind === "ascii" ? "The quick brown fox jumps over the lazy dog. " : "Grüße, 世界! Ça va? 🙂 ";
  const full = Buffer.from(unit.repeat(Math.ceil(size / Buffer.byteLength(unit)) + 1));
  // cut back to a code point boundary at or below `size`
  let end = Math.min(size, full.length);
  while (end > 0 && (full[end] & 0xc0) === 0x80) end--;
  return full.subarray(0, end);
}

function utf8Cases(quick) {
  const sizes = quick ? [32, 64 * 1024] : [32, 1024, 64 * 1024];
  const validator = new Utf8Validator();
  return ["ascii", "mixed"].flatMap((kind) =>
    sizes.flatMap((size) => {
      const buf = utf8Text(kind, size);
      const base = { group: "utf8", input: kind, size: buf.length };
      return [
        { ...base, variant: "wsconn Utf8Validator", fn: () => validator.push(buf) && validator.end() },
        { ...base, variant: "buffer.isUtf8 (reference)", fn: () => isUtf8(buf) },
        { ...base, variant: "utf-8-validate (native)", fn: () => utf8Validate(buf) },
      ];
    }),
  );
}

/** maskedStream returns about 1 MiB of masked binary frames of `size` bytes, cut into 64 KiB chunks. */
function maskedStream(size) {
  const count = Math.max(1, Math.floor((1 << 20) / size));
  const frames = [];
  for (let i = 0; i < count; i++) {
    const extra = size < 126 ? 0 : size < 65536 ? 2 : 8;
    const frame = Buffer.allocUnsafe(2 + extra + 4 + size);
    frame[0] = 0x82;
    frame[1] = 0x80 | (size < 126 ? size : size < 65536 ? 126 : 127);
    if (extra === 2) frame.writeUInt16BE(size, 2);
    if (extra === 8) frame.writeBigUInt64BE(BigInt(size), 2);
    randomBytes(4 + size).copy(frame, 2 + extra);
    frames.push(frame);
  }
  const stream = Buffer.concat(frames);
  const chunks = [];
  for (let pos = 0; pos < stream.length; pos += 64 * 1024) chunks.push(stream.subarray(pos, pos + 64 * 1024));
  return { count, chunks, bytes: stream.length };
}

function parseCases(quick) {
  const sizes = quick ? [32, 64 * 1024] : [32, 1024, 64 * 1024];
  return sizes.flatMap((size) => {
    // Unmasking in place flips payloads between masked and plain on every pass;
    // headers are untouched, so the stream stays valid for the next pass.
    const { count, chunks, bytes } = maskedStream(size);
    const copy = Buffer.allocUnsafe(64 * 1024);
    const sink = {
      onDataFrame() {},
      onDataPayload() {},
      onDataFrameEnd() {},
      onControlFrame() {},
      fail(errorCode, message) {
        throw new Error(`framing error ${errorCode}: ${message}`);
      },
      // The sink's failure method before issue 14, for BENCH_DIST builds of older commits.
      onFramingError(code, errorCode, message) {
        throw new Error(`framing error ${code} ${errorCode}: ${message}`);
      },
    };
    const parser = new FrameParser(sink, { expectMasked: true, allowRsv1: false });
    const receiver = new Receiver({ isServer: true, maxPayload: 0 });
    receiver.on("message", () => {});
    receiver.on("error", (err) => {
      throw err;
    });
    // one call parses ~1 MiB; rates are reported per frame, bytes as on the wire
    const base = { group: "parse", input: "masked binary frames", size, opsPerCall: count, wireSize: bytes / count };
    const overStream = (fn) => () => {
      for (const chunk of chunks) fn(chunk);
    };
    return [
      { ...base, variant: "wsconn FrameParser", fn: overStream((c) => parser.push(c)) },
      { ...base, variant: "ws Receiver (bufferutil)", fn: overStream((c) => receiver.write(c)) },
      { ...base, variant: "buf.copy (reference)", fn: overStream((c) => c.copy(copy)) },
    ];
  });
}
