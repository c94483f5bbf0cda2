/**
 * The loops over payload bytes: masking
 * (https://www.rfc-editor.org/rfc/rfc6455#section-5.3) with the pooled source
 * of mask keys, and incremental UTF-8 validation of text that arrives in
 * pieces (https://www.rfc-editor.org/rfc/rfc6455#section-8.1).
 */

import { isUtf8 } from "node:buffer";
import { randomFillSync } from "node:crypto";
import { WASM_MASK_CHUNK, wasmMask } from "../internal/wasm-mask.js";

/** The one empty payload every empty frame and drained buffer shares (never written to). */
export const EMPTY_PAYLOAD: Buffer = Buffer.alloc(0);

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Below this many bytes a byte loop beats setting up a word view. */
const WORD_MASK_THRESHOLD = 32;

/**
 * From this many bytes masking goes through WebAssembly SIMD, when it is
 * available: below it, copying the bytes in and out costs more than the
 * faster XOR saves (see the mask micro-benchmark in bench/).
 */
const WASM_MASK_THRESHOLD = 1024;

/**
 * maskInPlace XORs `data` with the 4-byte `key`, starting at key byte
 * `phase & 3` (a payload split over several chunks continues where the last
 * chunk stopped). Masking and unmasking are the same operation. Large buffers
 * go through WebAssembly SIMD when available, else a 32-bit word at a time.
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
  if (n >= WASM_MASK_THRESHOLD && wasmMask !== undefined) return maskThroughWasm(data, 0, data, key);
  maskRange(data, 0, n, key);
}

/**
 * maskInto writes `source` masked with `word` (as readMaskWord returns it),
 * from key byte `phase`, into `target` at `offset`: a copy and the masking in
 * one step (a client frame's payload, a received message put together),
 * leaving `source` as it was.
 */
export function maskInto(target: Uint8Array, offset: number, source: Uint8Array, word: number, phase = 0): void {
  if (word === 0) return void target.set(source, offset); // no mask, or the all-zero key
  word = rotateKey(word, phase);
  const n = source.length;
  if (n < WORD_MASK_THRESHOLD) {
    for (let i = 0; i < n; i++) target[offset + i] = source[i]! ^ (word >> (24 - ((i & 3) << 3)));
    return;
  }
  if (n >= WASM_MASK_THRESHOLD && wasmMask !== undefined) return maskThroughWasm(target, offset, source, word);
  target.set(source, offset);
  maskRange(target, offset, offset + n, word);
}

/**
 * maskThroughWasm masks `source` into `target` at `offset` (the same buffer
 * for masking in place) through the WebAssembly module's memory, 64 KiB at a
 * time. Every chunk starts at a multiple of 4 bytes, so each begins at key
 * byte 0.
 */
function maskThroughWasm(target: Uint8Array, offset: number, source: Uint8Array, key: number): void {
  const { memory, mask } = wasmMask!;
  const wasmKey = littleEndianWord(key);
  const n = source.length;
  for (let at = 0; at < n; at += WASM_MASK_CHUNK) {
    const length = Math.min(WASM_MASK_CHUNK, n - at);
    memory.set(length === n ? source : source.subarray(at, at + length));
    mask(length, wasmKey);
    const done = length & ~63;
    target.set(memory.subarray(0, done), offset + at);
    for (let i = done; i < length; i++) target[offset + at + i] = source[at + i]! ^ (key >> (24 - ((i & 3) << 3)));
  }
}

/** maskRange XORs data[from, to) with `key`, key byte 0 at data[from], in plain JavaScript. */
function maskRange(data: Uint8Array, from: number, to: number, key: number): void {
  if (to - from < WORD_MASK_THRESHOLD) return maskBytes(data, key, from, from, to);
  // Word-align the middle: the bytes before it go one by one.
  const head = (4 - ((data.byteOffset + from) & 3)) & 3;
  maskBytes(data, key, from, from, from + head);
  const words = (to - from - head) >>> 2;
  xorWords(new Int32Array(data.buffer, data.byteOffset + from + head, words), nativeOrder(rotateKey(key, head)));
  maskBytes(data, key, from, from + head + words * 4, to);
}

/**
 * maskBytes XORs data[start, to) byte by byte, key byte 0 at data[from]. A
 * Uint8Array keeps the low 8 bits of each result.
 */
function maskBytes(data: Uint8Array, key: number, from: number, start: number, to: number): void {
  for (let i = start; i < to; i++) data[i]! ^= key >> (24 - (((i - from) & 3) << 3));
}

/** rotateKey turns the key so that it starts at its byte `phase & 3`. */
function rotateKey(key: number, phase: number): number {
  const shift = (phase & 3) << 3;
  return shift === 0 ? key : (key << shift) | (key >>> (32 - shift));
}

/** littleEndianWord gives the key as a word whose little-endian bytes are the key bytes in order. */
function littleEndianWord(key: number): number {
  return ((key & 0xff) << 24) | ((key & 0xff00) << 8) | ((key >>> 8) & 0xff00) | (key >>> 24);
}

/** nativeOrder gives the key word as an Int32Array element holding the 4 key bytes in memory order. */
function nativeOrder(key: number): number {
  return LITTLE_ENDIAN ? littleEndianWord(key) : key;
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

/**
 * Below this many bytes the state machine is cheaper than the native call
 * (measured with the UTF-8 micro-benchmark in bench/: the crossover is at
 * about 24 bytes of ASCII, lower for multi-byte text).
 */
const NATIVE_THRESHOLD = 24;

/** Utf8Validator checks a byte stream chunk by chunk. */
export class Utf8Validator {
  /** Continuation bytes still expected by the current code point. */
  private need = 0;
  /** The allowed range of the next continuation byte (Unicode Table 3-7). */
  private lower = 0x80;
  private upper = 0xbf;

  /** push validates the next chunk; false means the stream is not UTF-8. */
  push(chunk: Uint8Array): boolean {
    let start = 0;
    if (this.need !== 0) {
      start = this.scan(chunk, 0, chunk.length, true);
      if (start < 0) return false;
    }
    const n = chunk.length;
    if (n - start < NATIVE_THRESHOLD) return this.scan(chunk, start, n, false) >= 0;
    const tail = incompleteTailStart(chunk, start);
    // a whole chunk (the usual case: one frame, one read) needs no subarray
    if (!isUtf8(start === 0 && tail === n ? chunk : chunk.subarray(start, tail))) return false;
    return tail === n || this.scan(chunk, tail, n, false) >= 0;
  }

  /** end tells whether the stream ended on a code point boundary. */
  end(): boolean {
    const complete = this.need === 0;
    this.reset();
    return complete;
  }

  /** reset forgets any partial code point. */
  reset(): void {
    this.need = 0;
    this.lower = 0x80;
    this.upper = 0xbf;
  }

  /**
   * scan runs the state machine over `bytes[from, to)`. It returns -1 on an
   * invalid byte, else the index where it stopped: `to`, or with
   * `untilBoundary` the first code point boundary.
   */
  private scan(bytes: Uint8Array, from: number, to: number, untilBoundary: boolean): number {
    for (let i = from; i < to; i++) {
      const b = bytes[i]!;
      if (this.need === 0) {
        if (untilBoundary) return i;
        if (b < 0x80) continue;
        if (!this.lead(b)) return -1;
      } else {
        if (b < this.lower || b > this.upper) return -1;
        this.lower = 0x80;
        this.upper = 0xbf;
        this.need--;
      }
    }
    return to;
  }

  /** lead starts a multi-byte code point; false for a byte that cannot start one. */
  private lead(b: number): boolean {
    if (b >= 0xc2 && b <= 0xdf) {
      this.need = 1;
    } else if (b >= 0xe0 && b <= 0xef) {
      this.need = 2;
      if (b === 0xe0) this.lower = 0xa0; // overlong
      if (b === 0xed) this.upper = 0x9f; // surrogates
    } else if (b >= 0xf0 && b <= 0xf4) {
      this.need = 3;
      if (b === 0xf0) this.lower = 0x90; // overlong
      if (b === 0xf4) this.upper = 0x8f; // past U+10FFFF
    } else {
      return false;
    }
    return true;
  }
}

/**
 * incompleteTailStart returns where a code point cut by the end of `bytes`
 * begins, or `bytes.length` when the chunk ends on a boundary.
 */
function incompleteTailStart(bytes: Uint8Array, start: number): number {
  const end = bytes.length;
  for (let i = end - 1; i >= start && i >= end - 3; i--) {
    const b = bytes[i]!;
    if (b < 0x80) return end;
    if (b >= 0xc0) {
      const length = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
      return end - i < length ? i : end;
    }
  }
  return end;
}

/** isValidUtf8 validates a whole buffer at once. */
export function isValidUtf8(bytes: Uint8Array): boolean {
  return isUtf8(bytes);
}
