/**
 * The zlib side of permessage-deflate (https://www.rfc-editor.org/rfc/rfc7692#section-7.2):
 * streaming decompression whose output the read side counts against the read
 * limit as it is produced, and per-message compression. zlib state is made on
 * first use and, without context takeover, freed after every message, so
 * idle connections hold none.
 */

import * as zlib from "node:zlib";
import type { FrameVariant } from "./prepared.js";
import { noop } from "./internal/noop.js";

/** The bytes a sync flush ends with, removed from and added back to each message (§7.2.1). */
const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

/** The first byte of an empty stored block that starts on a byte boundary. */
const EMPTY_BLOCK_HEAD = Buffer.from([0x00]);

/** Output chunk size: how far past the read limit inflation can run before it is stopped. */
const INFLATE_CHUNK = 16 * 1024;

/** The default zlib level: a good ratio for text at a fraction of level 9's cost. */
export const DEFAULT_COMPRESSION_LEVEL = 6;

/**
 * MessageInflater decompresses incoming messages as their frames arrive. It
 * hands every output chunk to `onChunk` (the read side, which enforces the
 * read limit) and stops producing while paused, so a compressed bomb cannot
 * fill memory however small it is.
 */
export class MessageInflater {
  private stream: zlib.InflateRaw | undefined;
  private paused = false;
  private stopped = false;
  private ending: (() => void) | undefined;
  private written = false;

  constructor(
    private readonly keepContext: boolean,
    private readonly onChunk: (chunk: Buffer) => void,
    private readonly onError: (err: Error) => void,
  ) {}

  /** write feeds compressed bytes; false asks the caller to wait for onDrain. Ignored after stop. */
  write(chunk: Buffer): boolean {
    if (this.stopped) return true;
    return this.open().write(chunk);
  }

  /** onDrain calls `fn` once when the inflater accepts input again. */
  onDrain(fn: () => void): void {
    this.open().once("drain", fn);
  }

  /** end completes the message and calls `done` once all its output was handed over. */
  end(done: () => void): void {
    if (this.stopped) return queueMicrotask(done);
    const stream = this.open();
    this.ending = done;
    this.written = false;
    stream.write(TAIL, () => {
      this.written = true;
      this.finishIfDone();
    });
  }

  /** pause stops producing output until resume. */
  pause(): void {
    this.paused = true;
    this.stream?.pause();
  }

  resume(): void {
    this.paused = false;
    this.stream?.resume();
  }

  /**
   * stop discards the message being inflated for good (the connection is
   * closing): the zlib state is freed, later input ignored, and a pending
   * `end` completes at once so that frames held behind it are parsed.
   */
  stop(): void {
    this.stopped = true;
    const done = this.ending;
    this.release();
    done?.();
  }

  /** release frees the zlib state. */
  release(): void {
    const stream = this.stream;
    if (stream === undefined) return;
    this.stream = undefined;
    this.ending = undefined;
    detach(stream);
  }

  private open(): zlib.InflateRaw {
    if (this.stream !== undefined) return this.stream;
    const stream = zlib.createInflateRaw({ flush: zlib.constants.Z_SYNC_FLUSH, chunkSize: INFLATE_CHUNK });
    stream.on("data", (chunk: Buffer) => {
      this.onChunk(ownBytes(chunk));
      this.finishIfDone();
    });
    stream.on("error", (err) => {
      this.release();
      this.onError(err);
    });
    if (this.paused) stream.pause();
    this.stream = stream;
    return stream;
  }

  private finishIfDone(): void {
    const done = this.ending;
    if (done === undefined || !this.written || (this.stream !== undefined && this.stream.readableLength > 0)) return;
    this.ending = undefined;
    if (!this.keepContext || this.streamEnded()) this.release();
    done();
  }

  /**
   * streamEnded tells whether the message closed its DEFLATE stream with a
   * BFINAL block, which a peer may do instead of a sync flush
   * (https://www.rfc-editor.org/rfc/rfc7692#section-7.2.3.4). zlib then
   * ignores further input, so the next message needs a new inflater; node's
   * zlib only says so through its readable state (push(null) at
   * Z_STREAM_END, before 'end' is emitted).
   */
  private streamEnded(): boolean {
    const state = (this.stream as unknown as { _readableState?: { ended?: boolean } } | undefined)?._readableState;
    return state?.ended === true;
  }
}

/**
 * ownBytes copies a chunk that uses a small part of zlib's output buffer, so
 * that a short message kept by the application does not pin 16 KiB.
 */
function ownBytes(chunk: Buffer): Buffer {
  if (chunk.length * 4 >= chunk.buffer.byteLength) return chunk;
  const copy = Buffer.allocUnsafeSlow(chunk.length);
  chunk.copy(copy);
  return copy;
}

/** detach closes a zlib stream whose events nobody wants any more. */
function detach(stream: zlib.InflateRaw | zlib.DeflateRaw): void {
  stream.removeAllListeners("data");
  stream.removeAllListeners("error");
  stream.on("error", noop);
  stream.close();
}

/**
 * MessageDeflater compresses outgoing messages, one at a time (the write lock
 * serializes them). Each call ends with a sync flush, so every frame can be
 * decompressed as soon as it arrives.
 */
export class MessageDeflater {
  private stream: zlib.DeflateRaw | undefined;
  private output: Buffer[] = [];
  private outputLength = 0;
  private midMessage = false;
  private restartPending = false;
  /** The level the next compressor is made with. */
  level: number;

  constructor(
    private readonly keepContext: boolean,
    private readonly windowBits: number,
    level: number,
  ) {
    this.level = level;
  }

  /**
   * compress deflates `data` as the next part of the current message; with
   * `fin` the message ends: the trailing 00 00 ff ff is removed and, without
   * context takeover, the zlib state is freed.
   */
  compress(data: Uint8Array, fin: boolean): Promise<Buffer> {
    const stream = this.open();
    return new Promise<Buffer>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      stream.once("error", onError);
      stream.write(data, () => {
        stream.off("error", onError);
        resolve(this.takeOutput(fin));
      });
    });
  }

  /** restartAtNextMessage makes the next message use a new compressor (after a level change). */
  restartAtNextMessage(): void {
    if (this.midMessage) this.restartPending = true;
    else this.release();
  }

  /** release frees the zlib state; the next message starts a fresh window, which any peer can read. */
  release(): void {
    const stream = this.stream;
    if (stream === undefined) return;
    this.stream = undefined;
    detach(stream);
  }

  private takeOutput(fin: boolean): Buffer {
    let out = this.outputLength === this.output[0]?.length ? this.output[0]! : Buffer.concat(this.output, this.outputLength);
    this.output = [];
    this.outputLength = 0;
    this.midMessage = !fin;
    if (fin) {
      // The message must end with an empty stored block minus its last 4 bytes
      // (§7.2.1). A flush with no new input makes zlib emit nothing, leaving
      // the stream byte-aligned: the block's first byte is then all we send.
      out = out.length === 0 ? EMPTY_BLOCK_HEAD : out.subarray(0, out.length - TAIL.length);
      if (!this.keepContext || this.restartPending) this.release();
      this.restartPending = false;
    }
    return out;
  }

  private open(): zlib.DeflateRaw {
    if (this.stream !== undefined) return this.stream;
    const stream = zlib.createDeflateRaw({
      flush: zlib.constants.Z_SYNC_FLUSH,
      windowBits: this.windowBits,
      level: this.level,
    });
    stream.on("data", (chunk: Buffer) => {
      this.output.push(chunk);
      this.outputLength += chunk.length;
    });
    this.stream = stream;
    return stream;
  }
}

/**
 * compressedVariant is how PreparedMessage compresses for connections that
 * negotiated permessage-deflate: a fresh, self-contained deflate stream,
 * which decompresses correctly with or without context takeover.
 */
export function compressedVariant(windowBits: number, level: number, threshold: number): FrameVariant {
  return {
    key: `deflate:${windowBits}:${level}:${threshold}`,
    encode(data) {
      if (data.length < threshold) return { payload: data, rsv1: false };
      const out = zlib.deflateRawSync(data, { windowBits, level, finishFlush: zlib.constants.Z_SYNC_FLUSH });
      return { payload: out.subarray(0, out.length - 4), rsv1: true };
    },
  };
}
