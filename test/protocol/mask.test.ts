import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import t, { type Test } from "tap";
import { WASM_MASK_CHUNK, wasmMask } from "../../src/internal/wasm-mask.js";
import { maskInPlace, maskInto, nextMaskKey, readMaskWord } from "../../src/protocol/payload.js";
import { seededRng } from "../helpers/chunkers.js";
import { ROOT } from "../helpers/root.js";

/** naiveMask is the definition of RFC 6455 §5.3: octet i XOR key octet (i mod 4). */
function naiveMask(data: Uint8Array, key: Uint8Array, phase: number): Uint8Array {
  const out = Uint8Array.from(data);
  for (let i = 0; i < out.length; i++) out[i] ^= key[(phase + i) % 4]!;
  return out;
}

const rng = seededRng(t, "mask");

/**
 * checkInPlace masks views at byte offsets 0–3 of fresh buffers, for every
 * length and phase given, against naiveMask, and checks that the bytes around
 * each view are untouched: the word and SIMD paths must cope with misalignment.
 */
function checkInPlace(t: Test, lengths: Iterable<number>, phases: number[]): void {
  const key = rng.bytes(4);
  let mismatches = 0;
  let checked = 0;
  for (const length of lengths) {
    for (const phase of phases) {
      for (let offset = 0; offset < 4; offset++) {
        const backing = rng.bytes(length + 8);
        const original = Uint8Array.from(backing);
        const view = new Uint8Array(backing.buffer, backing.byteOffset + offset, length);
        const expected = naiveMask(view, key, phase);
        maskInPlace(view, key, phase);
        checked++;
        const guardOk = backing.subarray(0, offset).equals(original.subarray(0, offset)) &&
          backing.subarray(offset + length).equals(original.subarray(offset + length));
        if (!Buffer.from(view).equals(Buffer.from(expected)) || !guardOk) {
          mismatches++;
          if (mismatches < 5) t.fail(`length ${length}, phase ${phase}, offset ${offset}`);
        }
      }
    }
  }
  t.equal(mismatches, 0, `${checked} combinations`);
}

t.test("maskInPlace equals the byte-by-byte XOR for every length, phase and alignment", async (t) => {
  checkInPlace(t, Array.from({ length: 301 }, (_, i) => i), [0, 1, 2, 3, 4, 5, 6, 7]);
});

/** Lengths on both sides of the SIMD threshold, of its 64-byte steps and of its 64 KiB chunks. */
const SIMD_LENGTHS = [1023, 1024, 1025, 1087, 1088, 1089, 4096 + 13, WASM_MASK_CHUNK - 1, WASM_MASK_CHUNK, WASM_MASK_CHUNK + 1, 2 * WASM_MASK_CHUNK + 63];

t.test("WebAssembly SIMD masking is available on this Node", async (t) => {
  // Node 20 on x86-64 and arm64 has it; without it masking falls back to JavaScript (tested below).
  t.ok(wasmMask, "wasmMask instantiated");
});

t.test("maskInPlace equals the byte-by-byte XOR around the SIMD threshold and chunk size", async (t) => {
  checkInPlace(t, SIMD_LENGTHS, [0, 1, 2, 3]);
});

t.test("maskInto writes the masked copy at the offset and leaves the source alone", async (t) => {
  const key = rng.bytes(4);
  let mismatches = 0;
  let checked = 0;
  const lengths = [...Array.from({ length: 70 }, (_, i) => i), 100, 255, 256, 257, ...SIMD_LENGTHS];
  for (const length of lengths) {
    for (const offset of [0, 1, 2, 3, 6, 14]) {
      const source = rng.bytes(length);
      const sourceBefore = Buffer.from(source);
      const target = Buffer.alloc(offset + length + 4, 0xee);
      maskInto(target, offset, source, readMaskWord(key, 0));
      checked++;
      const ok = source.equals(sourceBefore) &&
        Buffer.from(naiveMask(source, key, 0)).equals(target.subarray(offset, offset + length)) &&
        target.subarray(0, offset).every((b) => b === 0xee) &&
        target.subarray(offset + length).every((b) => b === 0xee);
      if (!ok) {
        mismatches++;
        if (mismatches < 5) t.fail(`length ${length}, offset ${offset}`);
      }
    }
  }
  t.equal(mismatches, 0, `${checked} combinations`);
});

t.test("without WebAssembly (node --jitless) masking falls back to JavaScript and stays correct", async (t) => {
  // A child process, since the module is instantiated once at import.
  const script = `
    const { wasmMask } = await import(${JSON.stringify(pathToFileURL(join(ROOT, "dist/internal/wasm-mask.js")).href)});
    const { maskInPlace, maskInto, readMaskWord } = await import(${JSON.stringify(pathToFileURL(join(ROOT, "dist/protocol/payload.js")).href)});
    const key = Buffer.from([0x9a, 0x01, 0xff, 0x42]);
    let wrong = 0;
    for (const length of [5, 40, 1024, 70000]) {
      const data = Buffer.from(Array.from({ length }, (_, i) => (i * 31) & 255));
      const expected = Buffer.from(data.map((b, i) => b ^ key[i & 3]));
      const inPlace = Buffer.from(data);
      maskInPlace(inPlace, key);
      const copy = Buffer.alloc(length + 2);
      maskInto(copy, 2, data, readMaskWord(key, 0));
      if (!inPlace.equals(expected) || !copy.subarray(2).equals(expected)) wrong++;
    }
    console.log(JSON.stringify({ wasm: wasmMask !== undefined, wrong }));
  `;
  const out = execFileSync(process.execPath, ["--jitless", "--no-warnings", "--input-type=module", "-e", script], { encoding: "utf8" });
  t.same(JSON.parse(out.trim()), { wasm: false, wrong: 0 });
});

t.test("Buffer subarrays at offsets 1, 2 and 3 of an aligned buffer", async (t) => {
  const key = Buffer.from([1, 2, 3, 4]);
  for (const offset of [1, 2, 3]) {
    for (const length of [31, 32, 33, 64, 255, 256, 257]) {
      const whole = Buffer.from(new Uint8Array(new ArrayBuffer(length + 4)));
      rng.bytes(length + 4).copy(whole);
      const sub = whole.subarray(offset, offset + length);
      t.equal(sub.byteOffset % 4, offset);
      const expected = naiveMask(sub, key, 0);
      maskInPlace(sub, key);
      t.same(Buffer.from(sub), Buffer.from(expected), `offset ${offset}, length ${length}`);
    }
  }
});

t.test("large buffers", async (t) => {
  for (const length of [65536, 1 << 20, (1 << 20) + 3]) {
    const key = rng.bytes(4);
    const data = rng.bytes(length);
    for (const phase of [0, 1, 2, 3]) {
      const view = Buffer.from(data);
      const expected = naiveMask(view, key, phase);
      maskInPlace(view, key, phase);
      t.ok(Buffer.from(expected).equals(view), `${length} bytes, phase ${phase}`);
      maskInPlace(view, key, phase);
      t.ok(view.equals(data), `${length} bytes, phase ${phase}: masking twice restores the data`);
    }
  }
});

t.test("a payload masked in pieces equals one masked whole", async (t) => {
  const key = rng.bytes(4);
  const data = rng.bytes(5000);
  const whole = Buffer.from(data);
  maskInPlace(whole, key);
  const pieces = Buffer.from(data);
  let at = 0;
  for (const size of [1, 3, 40, 2, 999, 33, 4000]) {
    const end = Math.min(at + size, data.length);
    maskInPlace(pieces.subarray(at, end), key, at);
    at = end;
  }
  t.ok(pieces.equals(whole));
});

t.test("the default phase is 0 and the zero key changes nothing", async (t) => {
  const data = rng.bytes(100);
  const a = Buffer.from(data);
  maskInPlace(a, Buffer.from([9, 8, 7, 6]));
  const b = Buffer.from(data);
  maskInPlace(b, Buffer.from([9, 8, 7, 6]), 0);
  t.same(a, b);
  const c = Buffer.from(data);
  maskInPlace(c, Buffer.alloc(4));
  t.same(c, data);
});

t.test("nextMaskKey writes 4 varying bytes at the offset, across pool refills", async (t) => {
  const keys = new Set<string>();
  const count = 5000; // more than one 8 KiB pool (2048 keys)
  let outside = 0;
  for (let i = 0; i < count; i++) {
    const target = Buffer.alloc(10, 0xaa);
    nextMaskKey(target, 3);
    if (target[0] !== 0xaa || target[1] !== 0xaa || target[2] !== 0xaa || target.subarray(7).some((b) => b !== 0xaa)) outside++;
    keys.add(target.subarray(3, 7).toString("hex"));
  }
  t.equal(outside, 0, "bytes outside the key untouched");
  t.ok(keys.size > count - 10, `${keys.size} distinct keys out of ${count}`);
  // every byte position takes many values: the keys are not a counter or a constant
  const seen = [new Set<number>(), new Set<number>(), new Set<number>(), new Set<number>()];
  for (const k of keys) for (let i = 0; i < 4; i++) seen[i]!.add(Buffer.from(k, "hex")[i]!);
  for (let i = 0; i < 4; i++) t.ok(seen[i]!.size > 200, `byte ${i} took ${seen[i]!.size} values`);
});
