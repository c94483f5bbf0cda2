/**
 * The decompressing side of permessage-deflate
 * (https://www.rfc-editor.org/rfc/rfc7692#section-7.2.2). A small message
 * that arrives in one frame is decompressed with one call on the main
 * thread, its output capped (which stops a bomb by itself); any other is
 * streamed through a zlib stream made for it, whose output the read side
 * counts against the read limit as it is produced, and whose writes take
 * their turn in the CompressionQueue. No zlib state lives between messages:
 * with context takeover each message is primed with the SlidingWindow of
 * the ones before it.
 */

import * as zlib from "node:zlib";
import type { CompressionQueue } from "./compression-queue.js";
import { detach, TAIL } from "./deflate.js";
import { SlidingWindow } from "./sliding-window.js";

/**
 * A compressed message of at most this many bytes, in one frame, is
 * decompressed with one call on the main thread (about 8 µs for a 1 KiB
 * message, 85 µs for 64 KiB of output, against a ~100 µs round trip for a
 * stream through the thread pool).
 */
export const FAST_INFLATE_MAX = 16 * 1024;

/**
 * The most output one such call may produce before it gives up and the
 * message is streamed instead (unless the read limit is lower, which then
 * decides): it bounds the time the main thread spends on one message.
 */
export const FAST_INFLATE_OUTPUT = 128 * 1024;

/** Output chunk size of a streamed message: how far past the read limit inflation can run before it is stopped. */
const INFLATE_CHUNK = 16 * 1024;

/** Writes accepted (waiting for a slot or in zlib) past which the caller is asked to wait. */
const MAX_WRITES_IN_FLIGHT = 4;

/** Why inflateWhole gave up: the output passed its cap. */
export const OUTPUT_OVER_CAP = Symbol("output over cap");

/**
 * MessageInflater decompresses incoming messages. It hands every output
 * chunk to `onChunk` (the read side, which enforces the read limit) and
 * stops producing while paused, so a compressed bomb cannot fill memory
 * however small it is.
 */
export class MessageInflater {
  /** The window later messages may refer to; undefined when the peer takes no context over. */
  private readonly window: SlidingWindow | undefined;
  private stream: zlib.InflateRaw | undefined;
  private paused = false;
  private stopped = false;
  private ending: (() => void) | undefined;
  /** The message's last bytes went through zlib. */
  private written = false;
  /** Writes accepted and not finished: waiting in `backlog` or in zlib. */
  private inFlight = 0;
  /** Chunks accepted but not yet handed to zlib, oldest first. */
  private backlog: Buffer[] = [];
  /** A job waits in the queue for a slot. */
  private queued = false;
  /** This inflater holds a queue slot. */
  private holding = false;
  /** A write is in zlib (its callback has not come). */
  private writing = false;
  private drainWaiter: (() => void) | undefined;
  private readonly startWrite: () => void;
  private readonly resumeWithSlot: () => void;

  constructor(
    keepContext: boolean,
    /** The peer compressor's window bits: how far back its messages may refer. */
    peerWindowBits: number,
    private readonly queue: CompressionQueue,
    private readonly onChunk: (chunk: Buffer) => void,
    private readonly onError: (err: Error) => void,
  ) {
    // zlib turns a raw window of 8 bits into 9: a zlib peer that agreed to 8 may still refer 512 bytes back.
    this.window = keepContext ? new SlidingWindow(2 ** Math.max(9, peerWindowBits)) : undefined;
    this.startWrite = () => this.writeNext();
    this.resumeWithSlot = () => this.resumeHolding();
  }

  /** The bytes of context kept between messages (for memory accounting and tests). */
  get windowSize(): number {
    return this.window?.size ?? 0;
  }

  /**
   * inflateWhole decompresses a whole message on the main thread: `data` is
   * its payload followed by the four TAIL bytes. It returns the output, or
   * OUTPUT_OVER_CAP when it would be longer than `cap` bytes; it throws
   * zlib's error for invalid data.
   */
  inflateWhole(data: Buffer, cap: number): Buffer | typeof OUTPUT_OVER_CAP {
    let out: Buffer;
    try {
      out = zlib.inflateRawSync(data, {
        finishFlush: zlib.constants.Z_SYNC_FLUSH,
        maxOutputLength: cap,
        dictionary: this.window?.dictionary,
        // One output buffer that usually holds it all (16 × the input, within the
        // cap): a 16 KiB buffer for each 1 KiB message costs more than the
        // inflate, and a 64 KiB message in 16 KiB pieces is copied together again.
        // (zlib refuses chunks under 64 bytes; a read limit may be lower.)
        chunkSize: Math.max(64, Math.min(cap, FAST_INFLATE_OUTPUT, Math.max(2048, data.length * 16))),
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE") return OUTPUT_OVER_CAP;
      throw err;
    }
    this.window?.append(out);
    return out;
  }

  /**
   * write feeds compressed bytes of a streamed message; false asks the
   * caller to wait for onDrain. Ignored after stop.
   */
  write(chunk: Buffer): boolean {
    if (this.stopped) return true;
    this.inFlight++;
    this.backlog.push(chunk);
    this.pump();
    return this.inFlight < MAX_WRITES_IN_FLIGHT;
  }

  /** onDrain calls `fn` once when the inflater accepts input again. */
  onDrain(fn: () => void): void {
    this.drainWaiter = fn;
  }

  /** end completes the streamed message and calls `done` once all its output was handed over. */
  end(done: () => void): void {
    if (this.stopped) return queueMicrotask(done);
    this.ending = done;
    this.written = false;
    // Counted like any write: the last write's callback is what wakes a waiting writer.
    this.inFlight++;
    this.backlog.push(TAIL);
    this.pump();
  }

  /** pause stops producing output until resume; the queue slot, if held, is given back meanwhile. */
  pause(): void {
    this.paused = true;
    this.stream?.pause();
    if (this.holding) {
      this.holding = false;
      this.queue.release();
    }
  }

  resume(): void {
    this.paused = false;
    // A write paused in zlib goes on only with a slot again.
    if (this.writing && !this.holding) {
      if (!this.queued) {
        this.queued = true;
        this.queue.run(this.resumeWithSlot);
      }
      return;
    }
    this.stream?.resume();
    this.pump();
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

  /** release frees the zlib state and the window. */
  release(): void {
    this.ending = undefined;
    this.window?.clear();
    this.closeStream();
    // A writer waiting for this stream may go on: its input will be ignored or go to a new one.
    const waiter = this.drainWaiter;
    this.drainWaiter = undefined;
    waiter?.();
  }

  /** pump asks the queue for a slot when a chunk waits and nothing else is under way. */
  private pump(): void {
    if (this.writing || this.queued || this.paused || this.stopped || this.backlog.length === 0) return;
    this.queued = true;
    this.queue.run(this.startWrite);
  }

  /** writeNext runs with a slot: it hands zlib the oldest waiting chunk. */
  private writeNext(): void {
    this.queued = false;
    // Paused meanwhile: resume() asks again.
    if (this.stopped || this.paused || this.backlog.length === 0 || this.writing) return this.queue.release();
    this.holding = true;
    const chunk = this.backlog.shift()!;
    const stream = this.open();
    this.writing = true;
    stream.write(chunk, () => this.written1(stream, chunk === TAIL));
    // Paused meanwhile (by onChunk): zlib stops once its output is full, so give the slot back.
    if (this.paused && this.holding) {
      this.holding = false;
      this.queue.release();
    }
  }

  /** resumeHolding runs with a slot, for a write that was paused in zlib. */
  private resumeHolding(): void {
    this.queued = false;
    if (this.stopped || this.paused) return this.queue.release();
    this.stream?.resume();
    if (this.writing && !this.holding) {
      this.holding = true;
      return;
    }
    // The paused write finished while this waited: the slot goes to the next chunk, if one waits.
    this.queue.release();
    this.pump();
  }

  /** written1 is the callback of one zlib write: the slot is given back, and the next chunk asked for. */
  private written1(stream: zlib.InflateRaw, last: boolean): void {
    if (this.stream !== stream) return;
    this.writing = false;
    if (this.holding) {
      this.holding = false;
      this.queue.release();
    }
    this.inFlight--;
    if (last) {
      this.written = true;
      this.finishIfDone();
    }
    const waiter = this.drainWaiter;
    if (waiter !== undefined && this.inFlight < MAX_WRITES_IN_FLIGHT) {
      this.drainWaiter = undefined;
      waiter();
    }
    this.pump();
  }

  private open(): zlib.InflateRaw {
    if (this.stream !== undefined) return this.stream;
    const stream = zlib.createInflateRaw({
      flush: zlib.constants.Z_SYNC_FLUSH,
      chunkSize: INFLATE_CHUNK,
      dictionary: this.window?.dictionary,
    });
    // The read side copies small chunks out of zlib's 16 KiB buffers itself.
    stream.on("data", (chunk: Buffer) => {
      this.window?.append(chunk);
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
    return stream;
  }

  private finishIfDone(): void {
    const done = this.ending;
    if (done === undefined || !this.written || (this.stream !== undefined && this.stream.readableLength > 0)) return;
    this.ending = undefined;
    // Every message gets its own stream: nothing is held between messages.
    this.closeStream();
    done();
  }

  /** closeStream frees the zlib stream and gives back the slot it held. */
  private closeStream(): void {
    const stream = this.stream;
    this.backlog = [];
    this.inFlight = 0;
    this.writing = false;
    if (this.holding) {
      this.holding = false;
      this.queue.release();
    }
    if (stream === undefined) return;
    this.stream = undefined;
    detach(stream);
  }
}
