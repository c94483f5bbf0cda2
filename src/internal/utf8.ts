/**
 * Incremental UTF-8 validation for text messages that arrive in pieces
 * (https://www.rfc-editor.org/rfc/rfc6455#section-8.1). The bulk of each chunk
 * goes through Node's native `isUtf8`; only the code points cut by a chunk
 * boundary go through a small state machine, which also rejects an invalid
 * prefix (an overlong lead, a surrogate, a code point past U+10FFFF) as soon as
 * its first bad byte arrives.
 */

import { isUtf8 } from "node:buffer";

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
