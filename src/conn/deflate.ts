/**
 * The compressing side of permessage-deflate
 * (https://www.rfc-editor.org/rfc/rfc7692#section-7.2.1). No zlib state
 * lives between messages: a message up to FAST_DEFLATE_MAX bytes is
 * compressed with one call on the main thread; a larger one with one call on
 * the thread pool, through the CompressionQueue; a message written in parts
 * (`writer`) with a zlib stream made for it and freed at its end. With
 * context takeover every compression is primed with the SlidingWindow of the
 * messages compressed before it, which gives the peer's long-lived inflater
 * exactly the stream it expects.
 */

import * as zlib from "node:zlib";
import { noop } from "../internal/waiting.js";
import type { CompressionQueue } from "./compression-queue.js";
import { SlidingWindow } from "./sliding-window.js";

/** The bytes a sync flush ends with, removed from each message (§7.2.1). */
export const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

/** The first byte of an empty stored block that starts on a byte boundary: an empty message. */
const EMPTY_BLOCK_HEAD = Buffer.from([0x00]);

/**
 * Messages up to this size are compressed on the main thread with one call:
 * about 25 µs for 1 KiB and 450 µs for 64 KiB of JSON at level 6 on the
 * reference machine. On the thread pool the same work costs ~140 µs more CPU
 * per message (the hand-off and the stream around it): at 64 KiB the echo
 * benchmark spent 599 µs per message this way against 735 µs through the
 * pool (ws: 640). Larger messages still go to the pool, so that one call
 * never holds the event loop for much more than half a millisecond
 * (docs/compression.md).
 */
export const FAST_DEFLATE_MAX = 64 * 1024;

/**
 * With context takeover a message is primed with at least this much of the
 * window (more for a larger message: twice its size), not all of it: zlib
 * hashes every dictionary byte, so a 32 KiB dictionary costs 1 KiB of JSON
 * ~30 µs more than an 8 KiB one, for the same compressed size on the
 * benchmark's traffic (docs/compression.md). The peer's window stays whole;
 * this end just refers less far back.
 */
export const DICTIONARY_MIN = 8 * 1024;

/** The zlib parameters of one direction's compressor. */
export interface DeflateTuning {
  /** LZ77 window, 9–15 (a peer that asked for 8 gets uncompressed messages). */
  windowBits: number;
  /** zlib memLevel, 1–9: memory for the hash chains while a message is compressed. */
  memLevel: number;
  /** zlib level, 0–9. */
  level: number;
  /** Context takeover: later messages may refer to earlier ones. */
  keepContext: boolean;
}

/**
 * MessageDeflater compresses outgoing messages, one at a time (the write
 * lock serializes them). Every message ends with a sync flush whose last
 * four bytes are removed, so the peer can decompress each frame as it
 * arrives.
 */
export class MessageDeflater {
  /** The level of messages compressed from now on. */
  level: number;
  private readonly windowBits: number;
  private readonly memLevel: number;
  /** The window later messages may refer to; undefined without context takeover. */
  private readonly window: SlidingWindow | undefined;
  /** The stream of a message written in parts, while it is being written. */
  private stream: zlib.DeflateRaw | undefined;
  private output: Buffer[] = [];
  private outputLength = 0;
  private closed = false;
  /** The reject of a compression waiting for a queue slot, so that close() need not wait for its turn. */
  private waiting: ((err: Error) => void) | undefined;

  constructor(
    tuning: DeflateTuning,
    private readonly queue: CompressionQueue,
  ) {
    this.windowBits = tuning.windowBits;
    this.memLevel = tuning.memLevel;
    this.level = tuning.level;
    this.window = tuning.keepContext ? new SlidingWindow(2 ** tuning.windowBits) : undefined;
  }

  /** The bytes of context kept between messages (for memory accounting and tests). */
  get windowSize(): number {
    return this.window?.size ?? 0;
  }

  /**
   * compressMessage compresses a whole message: synchronously (a Buffer)
   * up to FAST_DEFLATE_MAX bytes, else on the thread pool (a Promise).
   */
  compressMessage(data: Uint8Array): Buffer | Promise<Buffer> {
    const options = this.options(data.length);
    if (data.length <= FAST_DEFLATE_MAX) {
      const out = zlib.deflateRawSync(data, options);
      this.window?.append(data);
      return withoutTail(out);
    }
    return this.withSlot((resolve, reject) => {
      zlib.deflateRaw(data, options, (err, out) => {
        this.queue.release();
        if (err !== null) return reject(err);
        if (this.closed) return reject(closedError());
        this.window?.append(data);
        resolve(withoutTail(out));
      });
    });
  }

  /**
   * compress deflates `data` as the next part of a message written in parts;
   * with `fin` the message ends and its stream is freed.
   */
  compress(data: Uint8Array, fin: boolean): Promise<Buffer> {
    return this.withSlot((resolve, reject) => {
      const stream = this.open();
      // An error reaches both the 'error' listener and the write callback: settle, and give the slot back, once.
      let settled = false;
      const done = (err?: Error | null): void => {
        if (settled) return;
        settled = true;
        stream.off("error", done);
        this.queue.release();
        if (err) {
          this.releaseStream();
          return reject(err);
        }
        if (this.stream !== stream) return reject(closedError());
        this.window?.append(data);
        resolve(this.takeOutput(fin));
      };
      stream.once("error", done);
      stream.write(data, done);
    });
  }

  /**
   * withSlot runs `work` once the CompressionQueue gives this deflater a
   * slot; `work` must release it. Until then close() may reject the
   * compression at once; a slot granted after close is given back unused.
   */
  private withSlot(work: (resolve: (out: Buffer) => void, reject: (err: Error) => void) => void): Promise<Buffer> {
    if (this.closed) return Promise.reject(closedError());
    return new Promise<Buffer>((resolve, reject) => {
      this.waiting = reject;
      this.queue.run(() => {
        if (this.closed) return this.queue.release();
        this.waiting = undefined;
        work(resolve, reject);
      });
    });
  }

  /**
   * remember adds a message sent compressed by other means (a prepared
   * message, its own deflate stream) to the window: the peer's window holds
   * it now, and later messages may refer to it.
   */
  remember(data: Uint8Array): void {
    this.window?.append(data);
  }

  /**
   * close frees everything: the connection is closed. A compression waiting
   * for the queue rejects at once (its slot is given back unused when its
   * turn comes); later compressions reject too.
   */
  close(): void {
    this.closed = true;
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.(closedError());
    this.releaseStream();
    this.window?.clear();
  }

  private options(size: number): zlib.ZlibOptions {
    return {
      finishFlush: zlib.constants.Z_SYNC_FLUSH,
      windowBits: this.windowBits,
      memLevel: this.memLevel,
      level: this.level,
      dictionary: this.window?.recent(Math.max(DICTIONARY_MIN, 2 * size)),
      // One output chunk that fits the message, instead of 16 KiB for every small one.
      chunkSize: Math.min(16 * 1024, Math.max(64, size + 64)),
    };
  }

  private takeOutput(fin: boolean): Buffer {
    const out = this.outputLength === this.output[0]?.length ? this.output[0]! : Buffer.concat(this.output, this.outputLength);
    this.output = [];
    this.outputLength = 0;
    if (!fin) return out;
    this.releaseStream();
    // A flush with no new input makes zlib emit nothing, leaving the stream
    // byte-aligned: the empty block's first byte is then all the message needs.
    return out.length === 0 ? EMPTY_BLOCK_HEAD : out.subarray(0, out.length - TAIL.length);
  }

  private open(): zlib.DeflateRaw {
    if (this.stream !== undefined) return this.stream;
    const stream = zlib.createDeflateRaw({ ...this.options(16 * 1024), flush: zlib.constants.Z_SYNC_FLUSH });
    stream.on("data", (chunk: Buffer) => {
      this.output.push(chunk);
      this.outputLength += chunk.length;
    });
    this.stream = stream;
    return stream;
  }

  private releaseStream(): void {
    const stream = this.stream;
    if (stream === undefined) return;
    this.stream = undefined;
    this.output = [];
    this.outputLength = 0;
    detach(stream);
  }
}

/** closedError is why a compression of a closed connection fails (the write side reports the CloseError instead). */
function closedError(): Error {
  return new Error("connection closed");
}

/** withoutTail removes the sync flush's 00 00 ff ff from a one-shot compression (§7.2.1). */
function withoutTail(out: Buffer): Buffer {
  return out.length <= TAIL.length ? EMPTY_BLOCK_HEAD : out.subarray(0, out.length - TAIL.length);
}

/** detach closes a zlib stream whose events nobody wants any more. */
export function detach(stream: zlib.InflateRaw | zlib.DeflateRaw): void {
  stream.removeAllListeners("data");
  stream.removeAllListeners("error");
  stream.on("error", noop);
  stream.close();
}

/** How a connection wants its frames: the key of one cached variant. */
export interface FrameVariant {
  /** A cache key naming the variant ("plain", "deflate:15", …). */
  key: string;
  /** Builds the payload and RSV1 bit of this variant. */
  encode(data: Uint8Array): { payload: Uint8Array; rsv1: boolean };
}

/** The variant for connections without compression. */
export const PLAIN_VARIANT: FrameVariant = {
  key: "plain",
  encode: (data) => ({ payload: data, rsv1: false }),
};

/**
 * compressedVariant is how PreparedMessage compresses for connections that
 * negotiated permessage-deflate: a fresh, self-contained deflate stream,
 * which decompresses correctly with or without context takeover.
 */
export function compressedVariant(tuning: DeflateTuning, threshold: number): FrameVariant {
  const { windowBits, level, memLevel } = tuning;
  return {
    key: `deflate:${windowBits}:${level}:${memLevel}:${threshold}`,
    encode(data) {
      if (data.length < threshold) return { payload: data, rsv1: false };
      const out = zlib.deflateRawSync(data, { windowBits, level, memLevel, finishFlush: zlib.constants.Z_SYNC_FLUSH });
      return { payload: withoutTail(out), rsv1: true };
    },
  };
}
