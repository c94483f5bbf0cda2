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
  const n = data.length;
  if (n < WORD_MASK_THRESHOLD) {
    for (let i = 0; i < n; i++) data[i] ^= key[(phase + i) & 3]!;
    return;
  }
  const head = (4 - (data.byteOffset & 3)) & 3;
  for (let i = 0; i < head; i++) data[i] ^= key[(phase + i) & 3]!;
  const words = (n - head) >>> 2;
  xorWords(new Int32Array(data.buffer, data.byteOffset + head, words), keyWord(key, phase + head));
  for (let i = head + words * 4; i < n; i++) data[i] ^= key[(phase + i) & 3]!;
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

/** keyWord reads the key rotated to start at byte `phase & 3`, as a native-order signed word. */
function keyWord(key: Uint8Array, phase: number): number {
  const b0 = key[phase & 3]!;
  const b1 = key[(phase + 1) & 3]!;
  const b2 = key[(phase + 2) & 3]!;
  const b3 = key[(phase + 3) & 3]!;
  return LITTLE_ENDIAN ? b0 | (b1 << 8) | (b2 << 16) | (b3 << 24) : (b0 << 24) | (b1 << 16) | (b2 << 8) | b3;
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
