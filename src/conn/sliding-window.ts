/**
 * SlidingWindow keeps the last bytes of one direction's compressed messages,
 * uncompressed: the LZ77 window that context takeover carries from message
 * to message (https://www.rfc-editor.org/rfc/rfc7692#section-7.2.1 and
 * §7.2.2). wsconn does not keep a zlib stream alive between messages: each
 * message gets a fresh zlib state primed with this window as its preset
 * dictionary, which is exactly the state a long-lived stream would have, for
 * the window's size (at most 32 KiB) instead of a live stream's 40–300 KiB.
 */

/** The smallest buffer a window starts with; it grows by doubling up to its capacity. */
const INITIAL_SIZE = 1024;

export class SlidingWindow {
  private buffer: Buffer | undefined;
  private length = 0;

  /** `capacity` is the window size in bytes: 2^windowBits. */
  constructor(readonly capacity: number) {}

  /** The window's bytes (oldest first), or undefined while it is empty: the next message's dictionary. */
  get dictionary(): Buffer | undefined {
    return this.length === 0 ? undefined : this.buffer!.subarray(0, this.length);
  }

  /** recent returns the last `n` bytes of the window (all of it when shorter), or undefined while it is empty. */
  recent(n: number): Buffer | undefined {
    if (this.length === 0) return undefined;
    return this.buffer!.subarray(Math.max(0, this.length - n), this.length);
  }

  /** The bytes held, for memory accounting. */
  get size(): number {
    return this.buffer?.length ?? 0;
  }

  /** append adds bytes at the end, dropping the oldest beyond the capacity. */
  append(data: Uint8Array): void {
    const n = data.length;
    if (n === 0) return;
    const capacity = this.capacity;
    if (n >= capacity) {
      this.reserve(capacity).set(data.subarray(n - capacity));
      this.length = capacity;
      return;
    }
    const total = this.length + n;
    if (total <= capacity) {
      this.reserve(total).set(data, this.length);
      this.length = total;
      return;
    }
    const keep = capacity - n;
    const buffer = this.reserve(capacity);
    buffer.copyWithin(0, this.length - keep, this.length);
    buffer.set(data, keep);
    this.length = capacity;
  }

  /** clear forgets the window (a new LZ77 stream begins) and frees its memory. */
  clear(): void {
    this.buffer = undefined;
    this.length = 0;
  }

  /** reserve makes the buffer hold at least `size` bytes, keeping its contents. */
  private reserve(size: number): Buffer {
    const current = this.buffer;
    if (current !== undefined && current.length >= size) return current;
    let next = Math.max(INITIAL_SIZE, current === undefined ? 0 : current.length * 2);
    while (next < size) next *= 2;
    // Unpooled: a small window must not pin a shared 8 KiB slab, nor a big one share it.
    const buffer = Buffer.allocUnsafeSlow(Math.min(next, this.capacity));
    if (current !== undefined) current.copy(buffer, 0, 0, this.length);
    this.buffer = buffer;
    return buffer;
  }
}
