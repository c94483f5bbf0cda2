/**
 * The zlib side of permessage-deflate (https://www.rfc-editor.org/rfc/rfc7692#section-7.2):
 * streaming decompression whose output the read side counts against the read
 * limit as it is produced, and per-message compression. zlib state is made on
 * first use and, without context takeover, freed after every message, so
 * idle connections hold none.
 */

import * as zlib from "node:zlib";
import { noop } from "../internal/waiting.js";

/** The bytes a sync flush ends with, removed from and added back to each message (§7.2.1). */
const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

/** The first byte of an empty stored block that starts on a byte boundary. */
const EMPTY_BLOCK_HEAD = Buffer.from([0x00]);

/** Output chunk size: how far past the read limit inflation can run before it is stopped. */
const INFLATE_CHUNK = 16 * 1024;

/** Writes queued in zlib past which the caller is asked to wait: each costs a hundred bytes or so. */
const MAX_WRITES_IN_FLIGHT = 4;


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
  /** Writes zlib has not finished with. */
  private inFlight = 0;
  private drainWaiter: (() => void) | undefined;
  /** The write callback of the current zlib stream. */
  private onWritten: (() => void) | undefined;

  constructor(
    private readonly keepContext: boolean,
    private readonly onChunk: (chunk: Buffer) => void,
    private readonly onError: (err: Error) => void,
  ) {}

  /**
   * write feeds compressed bytes; false asks the caller to wait for onDrain:
   * zlib's queue is full by bytes (16 KiB) or by count. Ignored after stop.
   */
  write(chunk: Buffer): boolean {
    if (this.stopped) return true;
    const stream = this.open();
    this.inFlight++;
    const ok = stream.write(chunk, this.onWritten);
    return ok && this.inFlight < MAX_WRITES_IN_FLIGHT;
  }

  /** onDrain calls `fn` once when the inflater accepts input again. */
  onDrain(fn: () => void): void {
    this.drainWaiter = fn;
  }

  /** end completes the message and calls `done` once all its output was handed over. */
  end(done: () => void): void {
    if (this.stopped) return queueMicrotask(done);
    const stream = this.open();
    this.ending = done;
    this.written = false;
    // Counted like any write: the last write's callback is what wakes a waiting writer.
    this.inFlight++;
    stream.write(TAIL, () => {
      if (this.stream !== stream) return;
      this.countWritten();
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
    this.inFlight = 0;
    detach(stream);
    // A new stream takes input at once: a writer waiting for this one may go on.
    const waiter = this.drainWaiter;
    this.drainWaiter = undefined;
    waiter?.();
  }

  private open(): zlib.InflateRaw {
    if (this.stream !== undefined) return this.stream;
    const stream = zlib.createInflateRaw({ flush: zlib.constants.Z_SYNC_FLUSH, chunkSize: INFLATE_CHUNK });
    // The read side copies small chunks out of zlib's 16 KiB buffers itself.
    stream.on("data", (chunk: Buffer) => {
      this.onChunk(chunk);
      this.finishIfDone();
    });
    stream.on("error", (err) => {
      // Kept for stop(): frames held behind this message must still be let go.
      const ending = this.ending;
      this.stopped = true;
      this.release();
      this.ending = ending;
      this.onError(err);
    });
    if (this.paused) stream.pause();
    this.stream = stream;
    this.onWritten = () => {
      if (this.stream === stream) this.countWritten();
    };
    return stream;
  }

  /** countWritten counts one write zlib has finished with, and wakes a waiting writer. */
  private countWritten(): void {
    this.inFlight--;
    const waiter = this.drainWaiter;
    if (waiter === undefined || this.inFlight >= MAX_WRITES_IN_FLIGHT || this.stream!.writableNeedDrain) return;
    this.drainWaiter = undefined;
    waiter();
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
