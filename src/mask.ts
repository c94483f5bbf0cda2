/**
 * Payload masking (https://www.rfc-editor.org/rfc/rfc6455#section-5.3) and the
 * pooled source of mask keys.
 */

import { randomFillSync } from "node:crypto";

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Below this many bytes a byte loop beats setting up a word view. */
const WORD_MASK_THRESHOLD = 32;

/**
 * maskInPlace XORs `data` with the 4-byte `key`, starting at key byte
 * `phase & 3` (a payload split over several chunks continues where the last
 * chunk stopped). Masking and unmasking are the same operation. Large buffers
 * are processed a 32-bit word at a time.
 */
export function maskInPlace(data: Uint8Array, key: Uint8Array, phase = 0): void {
  maskWithWord(data, readMaskWord(key, 0), phase);
}

/**
 * readMaskWord reads the 4 key bytes at `at` as one signed 32-bit number, the
 * first byte on the wire the most significant: a connection keeps its current
 * key as a small integer instead of a 4-byte Buffer.
 */
export function readMaskWord(buf: Uint8Array, at: number): number {
  return (buf[at]! << 24) | (buf[at + 1]! << 16) | (buf[at + 2]! << 8) | buf[at + 3]!;
}

/** maskWithWord is maskInPlace with the key as readMaskWord returns it. */
export function maskWithWord(data: Uint8Array, word: number, phase = 0): void {
  // `key` is the mask as seen from data[0]: key byte (i & 3) applies to data[i].
  const key = rotateKey(word, phase);
  const n = data.length;
  if (n < WORD_MASK_THRESHOLD) return maskBytes(data, key, 0, n);
  const head = (4 - (data.byteOffset & 3)) & 3;
  maskBytes(data, key, 0, head);
  const words = (n - head) >>> 2;
  xorWords(new Int32Array(data.buffer, data.byteOffset + head, words), nativeOrder(rotateKey(key, head)));
  maskBytes(data, key, head + words * 4, n);
}

/** maskBytes XORs data[from, to) byte by byte; a Uint8Array keeps the low 8 bits of each result. */
function maskBytes(data: Uint8Array, key: number, from: number, to: number): void {
  for (let i = from; i < to; i++) data[i]! ^= key >> (24 - ((i & 3) << 3));
}

/** rotateKey turns the key so that it starts at its byte `phase & 3`. */
function rotateKey(key: number, phase: number): number {
  const shift = (phase & 3) << 3;
  return shift === 0 ? key : (key << shift) | (key >>> (32 - shift));
}

/** nativeOrder gives the key word as an Int32Array element holding the 4 key bytes in memory order. */
function nativeOrder(key: number): number {
  if (!LITTLE_ENDIAN) return key;
  return ((key & 0xff) << 24) | ((key & 0xff00) << 8) | ((key >>> 8) & 0xff00) | (key >>> 24);
}

/**
 * xorWords XORs every word of `view` with `word`, four per iteration: the
 * unrolled loop runs about twice as fast as the plain one on V8 (see the mask
 * micro-benchmark in bench/), and a signed view keeps every value a small
 * integer instead of a heap number.
 */
function xorWords(view: Int32Array, word: number): void {
  const n = view.length;
  const unrolled = n & ~3;
  let i = 0;
  for (; i < unrolled; i += 4) {
    view[i]! ^= word;
    view[i + 1]! ^= word;
    view[i + 2]! ^= word;
    view[i + 3]! ^= word;
  }
  for (; i < n; i++) view[i]! ^= word;
}

const POOL_SIZE = 8192;
let pool = Buffer.allocUnsafe(0);
let poolOffset = 0;

/**
 * nextMaskKey writes 4 fresh random bytes into `target` at `offset`. The bytes
 * come from node:crypto, drawn 8 KiB at a time so that a frame costs no system
 * call (https://www.rfc-editor.org/rfc/rfc6455#section-10.3: keys MUST be
 * unpredictable).
 */
export function nextMaskKey(target: Buffer, offset: number): void {
  if (poolOffset + 4 > pool.length) {
    pool = randomFillSync(Buffer.allocUnsafe(POOL_SIZE));
    poolOffset = 0;
  }
  target[offset] = pool[poolOffset]!;
  target[offset + 1] = pool[poolOffset + 1]!;
  target[offset + 2] = pool[poolOffset + 2]!;
  target[offset + 3] = pool[poolOffset + 3]!;
  poolOffset += 4;
}
